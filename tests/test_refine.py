"""Layout refinement: explicit edits, target always reached, nothing else touched."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.refine import layout_count, layout_counts, refine_layouts

CFG = NuminaConfig()


def _blobs(shape, boxes):
    lab = np.zeros(shape, dtype=np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes, 1):
        lab[y0:y1, x0:x1] = k
    return lab


def test_removes_smallest_first_and_records_it():
    lab = _blobs((20, 30), [(1, 6, 1, 6), (10, 12, 10, 12), (2, 8, 20, 28)])
    (fr,) = refine_layouts([lab], 2, CFG)
    assert fr.count_after == 2 and len(fr.removed) == 1 and not fr.added
    assert fr.removed[0].sum() == 4 and fr.removed[0][10, 10]


def test_adds_copy_of_smallest_without_touching_existing_instances():
    lab = _blobs((20, 30), [(2, 7, 2, 7), (12, 15, 20, 23)])
    (fr,) = refine_layouts([lab], 4, CFG)
    assert fr.count_after == 4 and len(fr.added) == 2
    for e in fr.added:
        assert e.kind == "add_copy" and e.mask.sum() == 9
        assert e.reference is not None and e.reference.sum() == 9  # the smallest one
        assert not (e.mask & (lab > 0)).any()


def test_a_target_that_is_not_a_whole_number_is_refused():
    lab = _blobs((20, 30), [(2, 7, 2, 7)])
    for bad in (2.5, "3", True, None):
        with pytest.raises(ValueError, match="must be a whole number of instances"):
            refine_layouts([lab], bad, CFG)
    assert refine_layouts([lab], 3.0, CFG)[0].count_after == 3  # a whole float is a count
    assert refine_layouts([lab], np.int64(2), CFG)[0].count_after == 2


def test_refinements_print_as_one_line_each():
    lab = _blobs((20, 30), [(2, 7, 2, 7), (12, 15, 20, 23)])
    (fr,) = refine_layouts([lab], 3, CFG)
    text = repr(fr)
    assert "\n" not in text and text.startswith("RefinedFrame(count 2 -> 3, removed=0, added=[Edit(kind='add_copy', ")
    assert "patches=9)" in text


def test_circle_when_empty_is_centred_and_stays_put_across_frames():
    empty = np.zeros((21, 31), dtype=np.int32)
    frames = refine_layouts([empty] * 5, 1, CFG)
    centres = [f.added[0].centre for f in frames]
    assert frames[0].added[0].kind == "add_circle"
    assert centres[0] == (10.0, 15.0) and len(set(centres)) == 1


def test_added_instance_stays_put_while_existing_one_drifts():
    frames = []
    for f in range(6):
        frames.append(_blobs((20, 40), [(8, 12, 5 + f, 9 + f)]))
    out = refine_layouts(frames, 2, CFG)
    centres = [fr.added[0].centre for fr in out]
    assert len(set(centres)) == 1
    assert all(fr.count_after == 2 for fr in out)


def test_moves_only_when_forced():
    a = _blobs((20, 40), [(8, 12, 2, 6)])
    out = refine_layouts([a], 2, CFG)
    c = out[0].added[0].centre
    # next frame: the existing instance moves onto the added one's place
    y, x = int(c[0]), int(c[1])
    b = np.zeros_like(a)
    b[y - 2:y + 2, x - 2:x + 2] = 1
    out2 = refine_layouts([a, b], 2, CFG)
    assert out2[1].added[0].centre != c
    assert not (out2[1].added[0].mask & (b > 0)).any()


def test_target_beyond_patches_is_an_error():
    with pytest.raises(ValueError, match="target=5"):
        refine_layouts([np.zeros((2, 2), np.int32)], 5, CFG)


def test_layout_counts():
    assert layout_counts([np.zeros((3, 3), int), _blobs((9, 9), [(0, 2, 0, 2), (5, 7, 5, 7)])]) == [0, 2]


label_maps = st.integers(1, 12).flatmap(lambda h: st.integers(1, 12).flatmap(
    lambda w: arrays(np.int32, (h, w), elements=st.integers(0, 4))))


@settings(max_examples=150, deadline=None)
@given(labels=label_maps, target=st.integers(0, 6), frames=st.integers(1, 3))
def test_property_reaches_target_and_touches_only_edits(labels, target, frames):
    target = min(target, labels.size)
    out = refine_layouts([labels] * frames, target, CFG)
    for fr in out:
        assert layout_count(fr.labels_after) == target
        edited = np.zeros(labels.shape, bool)
        for m in fr.removed:
            edited |= m
        for e in fr.added:
            edited |= e.mask
            assert e.mask.any()
        before, after = fr.labels_before, fr.labels_after
        same = ~edited
        assert ((before > 0) == (after > 0))[same].all()
        # the partition into instances is unchanged outside the edits
        pairs = set(zip(before[same & (before > 0)].tolist(), after[same & (before > 0)].tolist()))
        assert len({b for b, _ in pairs}) == len(pairs) == len({a for _, a in pairs})
        for m in fr.removed:
            assert (after[m] == 0).all() or any((e.mask & m).any() for e in fr.added)


@pytest.mark.parametrize("labels", [np.zeros((1, 1), np.int32), np.ones((1, 1), np.int32),
                                    np.ones((5, 7), np.int32), np.zeros((5, 7), np.int32)])
@pytest.mark.parametrize("target", [0, 1])
def test_degenerate_maps(labels, target):
    (fr,) = refine_layouts([labels], target, CFG)
    assert fr.count_after == target


def test_a_frame_misread_alone_is_refined_from_its_neighbours_layout():
    """Three frames read two objects, one frame reads one (an object missed there): with
    borrowed layouts that frame starts from the nearest agreeing frame and gets no addition of
    its own; without them it gets an addition placed on its own."""
    two = _blobs((20, 30), [(2, 7, 2, 7), (10, 15, 18, 23)])
    one = _blobs((20, 30), [(2, 7, 2, 7)])
    frames = [two, one, two, two]
    borrowed = refine_layouts(frames, 2, CFG)
    assert [fr.borrowed_from for fr in borrowed] == [None, 0, None, None]
    assert not any(fr.added or fr.removed for fr in borrowed)
    assert np.array_equal(borrowed[1].labels_after, borrowed[0].labels_after)
    own = refine_layouts(frames, 2, NuminaConfig(borrow_layouts=False))
    assert [fr.borrowed_from for fr in own] == [None] * 4
    assert len(own[1].added) == 1 and not own[0].added
    # the same frames asked for three: every frame gets one addition, the misread one as well
    three = refine_layouts(frames, 3, CFG)
    assert [fr.count_after for fr in three] == [3, 3, 3, 3]
    assert [len(fr.added) for fr in three] == [1, 1, 1, 1]


def test_borrowed_sources_follow_the_temporal_vote():
    from numina_hooks.numina.refine import borrowed_sources

    assert borrowed_sources([2, 3, 3, 3], 1) == [1, 1, 2, 3]  # frame 0 is outvoted by 1 and 2
    assert borrowed_sources([3, 1, 3, 3], 1) == [0, 0, 2, 3]  # nearest agreeing frame, earlier on a tie
    assert borrowed_sources([2, 2, 3, 3], 1) == [0, 1, 2, 3]  # every frame agrees with its vote
    assert borrowed_sources([2, 3, 3, 3], 0) == [0, 1, 2, 3]  # no vote, nothing borrowed
    assert borrowed_sources([], 1) == []


def test_borrow_layouts_must_be_a_bool_and_the_paper_preset_does_not_borrow():
    with pytest.raises(ValueError, match="borrow_layouts"):
        NuminaConfig(borrow_layouts="yes")
    assert NuminaConfig.paper().borrow_layouts is False


def test_placement_attention_puts_an_addition_where_the_noun_is_attended():
    """With a weight, a circle goes to the map's hot spot (away from the frame centre,
    where the paper's cost puts it); with the paper's cost (0) the map changes nothing."""
    empty = np.zeros((12, 20), dtype=np.int32)
    att = np.zeros((12, 20), dtype=np.float32)
    att[6:10, 14:18] = 1.0  # the noun is attended here
    paper = refine_layouts([empty], 1, NuminaConfig(), [att])[0].added[0]
    assert abs(paper.centre[0] - 5.5) <= 1 and abs(paper.centre[1] - 9.5) <= 1
    placed = refine_layouts([empty], 1, NuminaConfig(placement_attention=1.0), [att])[0].added[0]
    assert 6 <= placed.centre[0] <= 9 and 14 <= placed.centre[1] <= 17
    # an existing instance is still never covered or touched
    one = empty.copy()
    one[6:10, 14:18] = 1
    added = refine_layouts([one], 2, NuminaConfig(placement_attention=1.0), [att])[0]
    grown = np.zeros_like(one, dtype=bool)
    grown[5:11, 13:19] = True
    assert not (added.added[0].mask & grown).any()


def test_placement_attention_input_is_checked():
    with pytest.raises(ValueError, match="placement_attention=-1"):
        NuminaConfig(placement_attention=-1)
    with pytest.raises(ValueError, match="attention has shape"):
        refine_layouts([np.zeros((4, 4), np.int32)], 1, NuminaConfig(placement_attention=1.0), [np.zeros((3, 4))])
    assert NuminaConfig.paper().placement_attention == 0
