"""Several nouns of one frame read together (``layouts_from_attention``: phase 1's rule on
ready maps): one head for the frame, each noun its own instances, one object one noun."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from numina_hooks.numina import NuminaConfig, layout_from_attention, layouts_from_attention
from test_identify_v2 import GRID, _heads

KINDS = ["positional", "diffuse", "instance", "positional"]


def _objects():
    """Three separate 2x2 objects: two cats (left), one dog (right)."""
    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:3, 1:3] = 1
    labels[5:7, 2:4] = 2
    labels[3:5, 8:10] = 3
    return labels


def _noun_map(labels, ids, leak_ids=(), leak=0.0):
    """A blurred bump on the objects ``ids`` (and ``leak`` of it on ``leak_ids``), every head."""
    m = np.isin(labels, ids).astype(np.float64) + leak * np.isin(labels, leak_ids)
    m = gaussian_filter(m, 0.7) + 0.01
    return torch.from_numpy(np.stack([m.reshape(-1)] * len(KINDS))).float()


def test_each_noun_counts_its_own_objects_and_none_twice():
    labels = _objects()
    sa = _heads(labels, 2, KINDS)
    # the cats' map leaks onto the dog at 0.6 of its strength; the dogs' map is clean
    cross = {"cats": _noun_map(labels, [1, 2], [3], 0.6), "dogs": _noun_map(labels, [3])}
    alone = layout_from_attention(sa, cross["cats"], GRID)
    assert alone.count == 3  # read alone, the cats' map takes the dog in
    got = layouts_from_attention(sa, cross, GRID)
    assert (got["cats"].count, got["dogs"].count) == (2, 1)
    assert not ((got["cats"].labels > 0) & (got["dogs"].labels > 0)).any()
    assert got["cats"].self_head == got["dogs"].self_head == 2  # the one instance head, both nouns'
    kept = NuminaConfig(exclusive_regions=False)  # the paper's rule: each noun keeps it
    assert layouts_from_attention(sa, cross, GRID, kept)["cats"].count == 3


def test_one_noun_reads_as_layout_from_attention():
    labels = _objects()
    sa = _heads(labels, 2, KINDS)
    cross = _noun_map(labels, [1, 2, 3])
    one = layouts_from_attention(sa, {"cats": cross}, GRID)["cats"]
    alone = layout_from_attention(sa, cross, GRID)
    assert one.count == alone.count == 3
    np.testing.assert_array_equal(one.labels, alone.labels)


def test_one_noun_reads_as_layout_from_attention_on_a_noisy_scene():
    """A frame where the chosen head's own lift threshold moves once the evidence test has
    measured its other background pieces: the two functions read it through one rule, so
    they agree (before they did not: 6 instances alone against 5 in phase 1's rule)."""
    from synthetic_scenes import SELF_HEAD_TYPES, make_scene

    grid = (30, 52)
    scene = make_scene(5, grid, n_frames=2, noise=1.0, seed=705, head_types=SELF_HEAD_TYPES)
    for frame in scene.frames:
        alone = layout_from_attention(frame.self_attn, frame.cross_attn, grid)
        one = layouts_from_attention(frame.self_attn, {"noun": frame.cross_attn}, grid)["noun"]
        assert (one.count, one.self_head, one.from_cross) == (alone.count, alone.self_head, alone.from_cross)
        np.testing.assert_array_equal(one.labels, alone.labels)
        assert alone.count == frame.count


def test_the_multi_familys_other_nouns_are_read_beside_the_noun():
    from synthetic_multi_scenes import OTHER_NOUNS, make_multi_scene

    frame = make_multi_scene(3, (15, 26), noise=0.25, seed=5).frames[0]
    assert set(frame.other_cross) == set(OTHER_NOUNS)
    got = layouts_from_attention(frame.self_attn, {"noun": frame.cross_attn, **frame.other_cross}, (15, 26))
    assert set(got) == {"noun", *OTHER_NOUNS}
    for a in got:
        for b in got:
            if a < b:
                assert not ((got[a].labels > 0) & (got[b].labels > 0)).any()


def test_bad_input_is_refused_by_name():
    labels = _objects()
    sa = _heads(labels, 2, KINDS)
    good = _noun_map(labels, [1, 2])
    with pytest.raises(ValueError, match="at least one noun"):
        layouts_from_attention(sa, {}, GRID)
    with pytest.raises(ValueError, match="at least one noun"):
        layouts_from_attention(sa, good, GRID)
    with pytest.raises(ValueError, match=r"cross_attn\['dogs'\].*constant"):
        layouts_from_attention(sa, {"cats": good, "dogs": torch.ones_like(good)}, GRID)
    with pytest.raises(ValueError, match=r"cross_attn\['dogs'\] must be"):
        layouts_from_attention(sa, {"cats": good, "dogs": good[:, :5]}, GRID)
    with pytest.raises(ValueError, match="paper preset"):
        layouts_from_attention(sa, {"cats": good}, GRID, NuminaConfig.paper())


@pytest.mark.parametrize("measure,counts", [("share", (3, 1)), ("relative", (2, 2))])
def test_the_noun_given_more_attention_keeps_a_claimed_object(measure, counts):
    # three cats, one dog; the dogs' map also lands on the first cat at 0.6 of its strength.
    # The cats give it more attention (share): the cats keep it; relative to each map's mean
    # over the frame, the dogs' (few objects, small mean) wins it: a cat lost, a dog too
    # many. (At this 8x12 grid the cats' blur covers more than half the frame, so their
    # median is not a background level: the median measure is tested below, on a frame
    # whose objects leave most of it background, as they do at Wan's grids.)
    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:3, 1:3], labels[5:7, 1:3], labels[1:3, 5:7], labels[5:7, 9:11] = 1, 2, 3, 4
    sa = _heads(labels, 2, KINDS)
    cross = {"cats": _noun_map(labels, [1, 2, 3]), "dogs": _noun_map(labels, [4], [1], 0.6)}
    got = layouts_from_attention(sa, cross, GRID, NuminaConfig(claim_measure=measure))
    assert (got["cats"].count, got["dogs"].count) == counts
    assert not ((got["cats"].labels > 0) & (got["dogs"].labels > 0)).any()


def _claimed_cat(dogs_floor, dogs_on_cat):
    """A 20x30 frame: three cats and a dog (2x2 each); the dogs' layout also holds the first
    cat. The cats' map: 0.3 on the cats over a floor of 0.01; the dogs': 0.5 on the dog and
    ``dogs_on_cat`` on the first cat, over ``dogs_floor``."""
    grid = (20, 30)
    cats = np.zeros(grid, dtype=np.int32)
    cats[2:4, 2:4], cats[10:12, 5:7], cats[15:17, 20:22] = 1, 2, 3
    dogs = np.zeros(grid, dtype=np.int32)
    dogs[2:4, 2:4], dogs[6:8, 25:27] = 1, 2
    cat_map = np.where(cats > 0, 0.3, 0.01)
    dog_map = np.full(grid, dogs_floor)
    dog_map[6:8, 25:27], dog_map[2:4, 2:4] = 0.5, dogs_on_cat
    return {"cats": cats, "dogs": dogs}, {"cats": cat_map, "dogs": dog_map}


@pytest.mark.parametrize("measure,right", [("median", (True, True)), ("share", (False, True)),
                                           ("relative", (True, False))])
def test_a_claim_over_the_background_level_holds_for_loud_maps_and_few_objects(measure, right):
    from numina_hooks.numina.identify import exclusive_instances

    # a loud dogs' map (floor 0.05) that leaks onto the cat more than the cats attend to it:
    # compared as they are (share) the dogs take the cat; over each map's floor they do not
    labels, maps = _claimed_cat(0.05, 0.4)
    exclusive_instances(labels, maps, measure)
    assert ((labels["cats"].max(), labels["dogs"].max()) == (3, 1)) == right[0]
    # a quiet dogs' map with one object (a small mean over the frame) leaking at 0.29:
    # relative to the frame's mean the dogs take the cat
    labels, maps = _claimed_cat(0.01, 0.29)
    exclusive_instances(labels, maps, measure)
    assert ((labels["cats"].max(), labels["dogs"].max()) == (3, 1)) == right[1]


def test_an_unknown_claim_measure_is_refused_by_name():
    from numina_hooks.numina.identify import exclusive_instances

    with pytest.raises(ValueError, match=r"claim_measure='mean'.*'median', 'share', 'relative'"):
        NuminaConfig(claim_measure="mean")
    labels, maps = _claimed_cat(0.01, 0.29)
    with pytest.raises(ValueError, match=r"measure='mean'.*claim_measure"):
        exclusive_instances(labels, maps, "mean")
    assert (labels["cats"].max(), labels["dogs"].max()) == (3, 2)  # nothing was changed
