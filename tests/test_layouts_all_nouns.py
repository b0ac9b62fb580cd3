"""Several nouns of one frame read together (``layouts_from_attention``: phase 1's rule on
ready maps): one head on the union of the nouns' focus, each noun its own instances, one
object one noun."""
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
    assert got["cats"].self_head == got["dogs"].self_head == 2  # one head for the frame
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
