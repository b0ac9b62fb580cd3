"""The layout falls back to the cross-attention's components when the chosen self-attention
head's instances do not stand out of its background (``NuminaConfig.self_evidence_factor``,
``partition.instance_evidence``, ``layout.cross_components``), on hand-built maps with known
answers: heads without any instance structure, and the same objects with an instance head."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hand_built_maps import MapView, instance_head, noisy_heads, positional_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import (cross_components, head_missed_objects, layout_from_attention,
                                        noun_focus, strong_components)

GRID = (20, 30)
N = GRID[0] * GRID[1]


def _positional_of(sigma: float) -> torch.Tensor:
    return positional_head(GRID, sigma)


def _objects() -> np.ndarray:
    """Three 4x4 objects apart from each other."""
    labels = np.zeros(GRID, dtype=np.int64)
    labels[3:7, 4:8] = 1
    labels[12:16, 6:10] = 2
    labels[8:12, 20:24] = 3
    return labels


def _self_attention(fourth: torch.Tensor, seed: int, noise: float = 0.3) -> torch.Tensor:
    """``[4, N, N]``: local positional kernels of two widths, a diffuse head and ``fourth``
    (``[N, N]``), each with per-entry log-normal noise, rows renormalised."""
    heads = [_positional_of(0.8), _positional_of(1.5), torch.full((N, N), 1.0 / N, dtype=torch.float64), fourth]
    return noisy_heads(heads, noise, seed)


def _cross_of(weights: np.ndarray, heads: int = 4) -> torch.Tensor:
    """A noun's cross map ``[heads, N]``: ``weights`` (float [H, W]) blurred by one patch on a
    1% floor, the same in every head."""
    cross = gaussian_filter(np.asarray(weights, dtype=np.float64), 1.0) + 0.01
    return torch.from_numpy(np.stack([cross.reshape(-1)] * heads)).float()


def _frame(labels: np.ndarray, with_instance_head: bool, seed: int = 0, noise: float = 0.3):
    """Four heads (``_self_attention``) whose fourth is an instance head or a third positional
    head. The cross map: the objects blurred by one patch on a 1% floor."""
    fourth = instance_head(labels, 0.5) if with_instance_head else _positional_of(1.1)
    return _self_attention(fourth, seed, noise), _cross_of(labels > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_without_instance_structure_the_objects_come_from_the_cross_map(seed):
    labels = _objects()
    sa, cross = _frame(labels, with_instance_head=False, seed=seed)
    layout = layout_from_attention(sa, cross, GRID)
    assert layout.from_cross and layout.count == 3
    for k in (1, 2, 3):  # one instance on each object, none elsewhere
        found = np.unique(layout.labels[labels == k])
        assert len(found[found > 0]) == 1
    assert set(np.unique(layout.labels[labels == 0])) <= set(np.unique(layout.labels[labels > 0])) | {0}
    assert "from_cross=True" in repr(layout)
    # without the fallbacks the positional pieces under the focus are what gets counted
    paper_like = layout_from_attention(sa, cross, GRID, NuminaConfig(self_evidence_factor=None,
                                                                     cross_fallback_excess=None,
                                                                     instance_map_contrast=None))
    assert not paper_like.from_cross and paper_like.count != 3
    # step 8c alone drops them where they do not show in the map as bumps: in seed 1 all of
    # them, and the frame is read from the map (3); in seed 0 the per-instance null has left
    # the noun no instance before it, and with step 8 off nothing reads the map (0)
    pieces_tested = layout_from_attention(sa, cross, GRID, NuminaConfig(self_evidence_factor=None,
                                                                        cross_fallback_excess=None))
    assert (pieces_tested.from_cross, pieces_tested.count) == {0: (False, 0), 1: (True, 3)}[seed]


def test_with_no_head_on_the_focus_nothing_is_compared_and_the_layout_stays_empty():
    # seed 2 of the same maps: no head has a region that passes as an instance, so there
    # is no evidence either way (as for a noun absent from the frame, whose map still has
    # a focus): no fallback
    sa, cross = _frame(_objects(), with_instance_head=False, seed=2)
    layout = layout_from_attention(sa, cross, GRID)
    assert layout.self_head == -1 and layout.count == 0 and not layout.from_cross


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_instance_head_keeps_the_self_attention_layout(seed):
    labels = _objects()
    sa, cross = _frame(labels, with_instance_head=True, seed=seed)
    layout = layout_from_attention(sa, cross, GRID)
    assert not layout.from_cross and layout.self_head == 3
    # its instances are the head's regions: each 16-patch object has one of its own
    # (a region of the head may also take in background next to an object)
    own = [np.unique(layout.labels[labels == k]) for k in (1, 2, 3)]
    assert sum(len(o[o > 0]) == 1 and (layout.labels[labels == k] > 0).all() for k, o in zip((1, 2, 3), own)) >= 2


def _four_objects() -> np.ndarray:
    labels = np.zeros(GRID, dtype=np.int64)
    for k, (y, x) in enumerate(((3, 3), (3, 11), (13, 5), (12, 20)), start=1):
        labels[y:y + 4, x:x + 4] = k
    return labels


def _merged_head_frame(seed: int):
    """Four objects; the one instance-like head holds objects 1+2 and 3+4 in one region each
    (a class-level head, or objects merged under noise), the other heads positional and
    diffuse; the cross map shows the four apart."""
    labels = _four_objects()
    merged = np.where(labels == 2, 1, np.where(labels == 4, 3, labels))
    return labels, _self_attention(instance_head(merged, 0.5), seed), _cross_of(labels > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_objects_the_head_merges_are_read_from_the_cross_map(seed):
    labels, sa, cross = _merged_head_frame(seed)
    # the head's pieces of one identity lie 5 patches apart, beyond the default reach: they
    # stay two objects each (read from the head, or from the cross map where the head's
    # instances do not stand out of its background)
    own = layout_from_attention(sa, cross, GRID, NuminaConfig(instance_map_contrast=None))
    assert own.self_head == 3 and own.count == 4
    # a known loss of step 8c (``instance_map_contrast``): in seed 0 the head's region on
    # object 1 is cut five times wider than the object (61 patches), its mean in the map falls
    # under the background around it, and the object is dropped with it (3); in seed 1 the
    # frame is read from the map (4)
    assert layout_from_attention(sa, cross, GRID).count == {0: 3, 1: 4}[seed]
    # joined at any distance (``link_reach=None``), the head holds the four objects in two
    # regions, as a class-level head or noise merging touching objects would (step 8c off:
    # this is the excess rule's test, and the merged regions are cut wider than the objects)
    # (the map's veto off: its four bumps would keep the pairs apart, below)
    merged = NuminaConfig(link_reach=None, instance_map_contrast=None, link_map_veto=None)
    # the default veto (``link_map_veto``): the map falls towards its background between the
    # objects of a pair, so the head's pairs do not join even at any distance: four objects
    vetoed = dataclasses.replace(merged, link_map_veto=0.5, cross_fallback_excess=None)
    assert layout_from_attention(sa, cross, GRID, vetoed).count == 4
    # without the excess rule the head's instances stand: step 8 keeps them (in seed 0 a
    # 33-patch background piece keeps 0.136 against the instances' 0.09, but it is one of
    # only two pieces no larger than twice an instance: too few for the null comparison)
    alone = layout_from_attention(sa, cross, GRID, dataclasses.replace(merged, cross_fallback_excess=None))
    assert alone.self_head == 3 and alone.count == 2 and not alone.from_cross
    layout = layout_from_attention(sa, cross, GRID, merged)
    assert layout.from_cross and layout.count == 4 and layout.self_head == 3
    for k in (1, 2, 3, 4):  # one instance on each object
        found = np.unique(layout.labels[labels == k])
        assert len(found[found > 0]) == 1
    assert strong_components(noun_focus(cross[0].numpy(), GRID)).max() == 4
    # an excess of 3 is not reached by 4 strong bumps against 2 instances
    assert layout_from_attention(sa, cross, GRID, dataclasses.replace(merged, cross_fallback_excess=3)).count == 2


def test_one_extra_bump_in_the_cross_map_does_not_replace_the_heads_instances():
    # the instance head separates the three objects; the cross map has a fourth bump as
    # strong as they are, on background (clutter, or one object shown as two bumps)
    labels = _objects()
    sa, cross = _frame(labels, with_instance_head=True, seed=0)
    bump = np.zeros(GRID)
    bump[15:18, 22:25] = 1.0
    ca = _cross_of((labels > 0) + bump, sa.shape[0])
    extra = ca[0].numpy().reshape(GRID)
    assert strong_components(noun_focus(extra, GRID)).max() == 4
    layout = layout_from_attention(sa, ca, GRID)
    assert not layout.from_cross and layout.self_head == 3 and layout.count == 3
    assert not head_missed_objects(layout.labels, noun_focus(extra, GRID))
    # with an excess of 1 the one extra bump would replace them, were every strong bump an
    # object; the instance head keeps nothing inside that bump (background there), so with
    # the evidence test (the default) it is clutter and the head's instances stand
    assert layout_from_attention(sa, ca, GRID, NuminaConfig(cross_fallback_excess=1,
                                                            cross_fallback_evidence=None)).from_cross
    one = layout_from_attention(sa, ca, GRID, NuminaConfig(cross_fallback_excess=1))
    assert not one.from_cross and one.count == 3


def _instances_on(labels: np.ndarray, objects) -> np.ndarray:
    """Instance labels 1..k on the listed objects of ``labels`` (in that order)."""
    out = np.zeros(labels.shape, dtype=np.int32)
    for k, obj in enumerate(objects, start=1):
        out[labels == obj] = k
    return out


def test_head_missed_objects_needs_an_instance_and_can_be_turned_off():
    objects = _four_objects()
    focus = noun_focus(gaussian_filter((objects > 0).astype(np.float64), 1.0) + 0.01, GRID)
    assert strong_components(focus).max() == 4
    two, three = _instances_on(objects, (1, 2)), _instances_on(objects, (1, 2, 3))
    assert head_missed_objects(two, focus) and not head_missed_objects(three, focus)
    nothing = np.zeros(GRID, dtype=np.int32)
    assert not head_missed_objects(nothing, focus)  # a head with no instance keeps the noun at 0
    assert not head_missed_objects(_instances_on(objects, (1,)), focus, NuminaConfig(cross_fallback_excess=None))
    assert head_missed_objects(three, focus, NuminaConfig(cross_fallback_excess=1))
    # only the bumps that reach cross_fallback_peak of the map's range are strong
    uneven = np.zeros(GRID)
    uneven[2:6, 2:6], uneven[12:16, 20:24] = 1.0, 0.5
    low = noun_focus(gaussian_filter(uneven, 1.0) + 0.01, GRID)
    assert strong_components(low).max() == 1
    assert strong_components(low, NuminaConfig(cross_fallback_peak=0.4)).max() == 2
    assert strong_components(noun_focus(np.full(GRID, 0.2), GRID)).max() == 0  # a flat map
    # the strong components given (several nouns: those the noun keeps) are used as they are
    given = strong_components(focus)
    assert not head_missed_objects(two, focus, strong=np.where(given > 2, 0, given))
    assert head_missed_objects(_instances_on(objects, (1,)), focus, strong=np.where(given > 3, 0, given))


def test_instances_that_touch_too_few_strong_objects_are_replaced_by_the_cross_map():
    # as many instances as strong components, but placed elsewhere: two on object 1 (its
    # halves, as a head that splits objects into parts gives them), two on background where
    # the map has no bump; objects 2-4 touch no instance
    objects = _four_objects()
    focus = noun_focus(gaussian_filter((objects > 0).astype(np.float64), 1.0) + 0.01, GRID)
    parts = np.zeros(GRID, dtype=np.int32)
    parts[3:7, 3:5], parts[3:7, 5:7] = 1, 2  # object 1 in two halves
    parts[17:19, 0:3], parts[0:2, 26:29] = 3, 4  # off every object
    assert int(parts.max()) == strong_components(focus).max() == 4  # the counts agree
    assert head_missed_objects(parts, focus)
    # one strong component left untouched is not enough (clutter, or one object in two bumps)
    on_three = _instances_on(objects, (1, 2, 3))
    on_three[17:19, 0:3] = 4  # and one on background
    assert not head_missed_objects(on_three, focus)
    assert head_missed_objects(on_three, focus, NuminaConfig(cross_fallback_excess=1))


SMALL = (8, 12)


def _tiles_head(grid: tuple[int, int], side: int, keep: np.ndarray) -> torch.Tensor:
    """``[HW, HW]`` float64 rows of a head that tiles the frame by position: each query
    spreads ``keep[tile]`` evenly over its ``side`` x ``side`` tile and the rest over the
    frame; ``keep``: float [tiles], in raster order of the tiles."""
    H, W = grid
    tile = ((np.arange(H)[:, None] // side) * (W // side) + np.arange(W)[None, :] // side).reshape(-1)
    same = (tile[:, None] == tile[None, :]).astype(np.float64)
    share = keep[tile][:, None]
    return torch.from_numpy(share * same / same.sum(1, keepdims=True) + (1 - share) / (H * W))


def _small_frame(fourth: torch.Tensor, labels: np.ndarray, seed: int):
    """An 8x12 frame: two positional heads, a diffuse one and ``fourth``, with per-entry
    log-normal noise; the cross map of ``labels`` blurred by one patch on a 1% floor."""
    n = SMALL[0] * SMALL[1]
    heads = [positional_head(SMALL, 0.8), torch.full((n, n), 1.0 / n, dtype=torch.float64),
             positional_head(SMALL, 1.5), fourth]
    sa = noisy_heads(heads, 0.3, seed)
    cross = gaussian_filter((labels > 0).astype(np.float64), 1.0) + 0.01
    return sa, torch.from_numpy(np.stack([cross.reshape(-1)] * 4)).float()


def _two_small_objects() -> np.ndarray:
    """Two 2x2 objects on the 8x12 grid: one across the border of two 4x4 tiles, one inside
    a tile."""
    labels = np.zeros(SMALL, dtype=np.int64)
    labels[1:3, 3:5], labels[5:7, 9:11] = 1, 2
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_head_that_tiles_a_small_frame_by_position_is_not_counted(seed):
    # six 4x4 tiles: three under the focus (object 1 spans two of them), three off it. The
    # tiles keep their attention as well off the focus as on it (better: 0.9 against 0.8),
    # so the head tells nothing about objects; with three pieces off the focus, fewer than
    # the five of an instance's size the size-matched comparison needs, only the null
    # comparison sees it, and the layout is read from the cross map
    labels = _two_small_objects()
    keep = np.array([0.8, 0.8, 0.9, 0.9, 0.9, 0.8])
    sa, cross = _small_frame(_tiles_head(SMALL, 4, keep), labels, seed)
    # with neither null (the frame's, step 8, nor each instance's, ``instance_null_factor``)
    size_matched = layout_from_attention(sa, cross, SMALL, NuminaConfig(self_evidence_null_factor=None,
                                                                         instance_null_factor=None))
    assert size_matched.self_head == 3 and size_matched.count == 3 and not size_matched.from_cross
    layout = layout_from_attention(sa, cross, SMALL)
    assert layout.from_cross and layout.count == 2
    for k in (1, 2):  # one instance on each object
        found = np.unique(layout.labels[labels == k])
        assert len(found[found > 0]) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_instance_head_on_a_small_frame_keeps_its_layout(seed):
    # the same small frame with an instance head in place of the tiles: its objects keep
    # far more than its few background pieces, and the null comparison leaves it alone
    labels = _two_small_objects()
    sa, cross = _small_frame(instance_head(labels, 0.5), labels, seed)
    layout = layout_from_attention(sa, cross, SMALL)
    assert not layout.from_cross and layout.self_head == 3 and layout.count == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_a_bad_cross_fallback_excess_is_refused_by_name(value):
    with pytest.raises(ValueError, match="cross_fallback_excess"):
        NuminaConfig(cross_fallback_excess=value)
    with pytest.raises(ValueError, match="cross_fallback_peak"):
        NuminaConfig(cross_fallback_peak=0.0)


def test_cross_components_split_the_map_at_the_ratio_of_its_range():
    labels = _objects()
    cross = gaussian_filter((labels > 0).astype(np.float64), 1.0) + 0.01
    focus = noun_focus(cross, GRID)
    comps = cross_components(focus)
    assert comps.max() == 3 and comps.dtype == np.int32
    # a higher ratio keeps smaller cores of the same three objects
    tight = cross_components(focus, NuminaConfig(cross_fallback_ratio=0.9))
    assert tight.max() == 3 and (tight > 0).sum() < (comps > 0).sum()
    # components under the size floor are not counted
    assert cross_components(focus, NuminaConfig(cross_fallback_min_size=100)).max() == 0
    assert cross_components(noun_focus(np.full(GRID, 0.2), GRID)).max() == 0  # a flat map


def test_the_phase_one_reader_falls_back_per_frame():
    # the reader's own path (the head chosen on the noun's focus, per frame): a frame without
    # instance structure is read from the cross map, a frame with an instance head is not,
    # and both count the three objects
    from numina_hooks.numina.identify import LayoutReader

    labels = _objects()
    frames = [_frame(labels, with_instance_head=False, seed=0), _frame(labels, with_instance_head=True, seed=1)]
    self_maps, cross_maps = [sa for sa, _ in frames], [cross for _, cross in frames]
    reader = LayoutReader({"objects": [0]}, step=0, layer=0, config=NuminaConfig())
    reader.self_source = "maps"
    for kind in ("self", "cross"):
        reader.on_attention(MapView(kind, self_maps, cross_maps, GRID))
    assert reader.nouns["objects"].from_cross == [True, False]
    assert reader.nouns["objects"].frame_counts == [3, 3]


def test_the_phase_one_reader_and_layouts_from_attention_read_missed_objects_from_the_cross_map():
    # the same rule in phase 1's reader and in the several-noun reading: a frame whose head
    # merges the four objects in pairs (joined at any distance: ``link_reach=None``, the map's
    # veto off) is read from the cross map (4); with the rule off, 2; with the default reach
    # the head's own 4 (step 8c off: with it, 3, the head's region cut five times wider than
    # its object dropped); with the veto (default) the pairs stay apart at any distance (3)
    from numina_hooks.numina.identify import LayoutReader, layouts_from_attention

    _, sa, cross = _merged_head_frame(0)
    merged = NuminaConfig(link_reach=None, link_map_veto=None)
    for cfg, want in ((merged, (True, 4)), (dataclasses.replace(merged, cross_fallback_excess=None), (False, 2)),
                      (NuminaConfig(instance_map_contrast=None), (False, 4)), (NuminaConfig(), (False, 3)),
                      (NuminaConfig(link_reach=None), (False, 3))):
        reader = LayoutReader({"objects": [0]}, step=0, layer=0, config=cfg)
        reader.self_source = "maps"
        for kind in ("self", "cross"):
            reader.on_attention(MapView(kind, [sa], [cross], GRID))
        assert (reader.nouns["objects"].from_cross[0], reader.nouns["objects"].frame_counts[0]) == want
        got = layouts_from_attention(sa, {"objects": cross}, GRID, cfg)["objects"]
        assert (got.from_cross, got.count) == want


@pytest.mark.parametrize("field,value", [("self_evidence_factor", 0.0), ("self_evidence_factor", -1.0),
                                         ("self_evidence_null_factor", 0.0), ("self_evidence_null_factor", -1.0),
                                         ("cross_fallback_ratio", 1.0), ("cross_fallback_ratio", 0.0),
                                         ("cross_fallback_min_size", 0)])
def test_bad_values_are_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(NuminaConfig(), **{field: value})


def test_the_paper_preset_never_falls_back():
    paper = NuminaConfig.paper()
    assert paper.self_evidence_factor is None and paper.cross_fallback_excess is None


def test_another_nouns_objects_are_not_taken_for_background_pieces():
    # two touching cats and a third, nine dogs of their size, one head separating every
    # object: read alone, the cats' instances are compared with background pieces that are
    # mostly dogs, keep no more than they do, and the layout falls back to the cross map,
    # which merges the touching cats; read beside the dogs (phase 1's rule), the dogs'
    # regions are left out of the comparison and the head's instances stand
    from numina_hooks.numina.identify import layouts_from_attention

    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:5, 1:5], labels[1:5, 5:9], labels[1:5, 15:19] = 1, 2, 3  # cats
    k = 4
    for r, c in [(1, 22), (8, 1), (8, 8), (8, 15), (8, 22), (15, 1), (15, 8), (15, 15), (15, 22)]:
        labels[r:r + 4, c:c + 4] = k  # dogs
        k += 1
    sa, _ = _frame(labels, with_instance_head=True, seed=0)

    def noun_map(ids):
        return _cross_of(np.isin(labels, ids))

    cats, dogs = noun_map([1, 2, 3]), noun_map(list(range(4, 13)))
    alone = layout_from_attention(sa, cats, GRID)
    assert alone.from_cross and alone.count == 2
    got = layouts_from_attention(sa, {"cats": cats, "dogs": dogs}, GRID)
    assert not got["cats"].from_cross and got["cats"].self_head == 3
    assert (got["cats"].count, got["dogs"].count) == (3, 9)


def test_a_nouns_leak_onto_another_nouns_objects_is_not_taken_for_missed_objects():
    # one cat and three dogs; the instance-like head holds the three dogs in one region; the
    # cat's map leaks onto every dog at 0.8 of its height on the cat (a similar category). Read
    # alone, the cat's map shows four strong bumps against the head's two instances on its
    # focus and the cat is read from its cross map (4). Read beside the dogs, the bumps on
    # the dogs' instances are the dogs' objects: the cat keeps the head's reading, and the
    # dogs, whose map shows three bumps against one instance, are read from theirs
    from numina_hooks.numina.identify import layouts_from_attention

    labels = _four_objects()
    sa = _self_attention(instance_head(np.where(labels >= 2, 2, labels), 0.5), 0)

    def noun_map(weights):
        return _cross_of(sum(w * (labels == k) for k, w in weights.items()))

    cat, dogs = noun_map({1: 1.0, 2: 0.8, 3: 0.8, 4: 0.8}), noun_map({2: 1.0, 3: 1.0, 4: 1.0})
    alone = layout_from_attention(sa, cat, GRID)
    assert alone.from_cross and alone.count == 4
    # the excess rule alone (the null comparisons off): the leak is not taken for missed objects
    excess_only = NuminaConfig(self_evidence_null_factor=None, instance_null_factor=None)
    got = layouts_from_attention(sa, {"cat": cat, "dogs": dogs}, GRID, excess_only)
    assert got["dogs"].from_cross and got["dogs"].count == 3
    assert not got["cat"].from_cross
    # by default: the head chosen on the union is a positional one (head 0), whose one piece
    # under the cat's focus keeps less than its small pieces off it (null comparison, 0.94):
    # the cat is read from its map, where the bumps on the dogs are the dogs', and counts its
    # one object (the positional head's piece counted 0)
    got = layouts_from_attention(sa, {"cat": cat, "dogs": dogs}, GRID)
    assert got["cat"].self_head == 0 and got["cat"].from_cross and got["cat"].count == 1
    assert got["dogs"].from_cross and got["dogs"].count == 3
    assert layouts_from_attention(sa, {"cat": cat, "dogs": dogs}, GRID, excess_only)["cat"].count == 0


def _one_head(sizes_and_lifts: list, grid=(12, 40)):
    """A one-head ``HeadPartitions`` whose regions are horizontal runs of the given sizes
    (patches, each on its own row) with the given lifts: ``[(size, lift), ...]``, regions
    1..m in that order."""
    from numina_hooks.numina.partition import HeadPartitions

    regions = np.zeros(grid, dtype=np.int32)
    for k, (size, _) in enumerate(sizes_and_lifts, start=1):
        regions[k - 1, :size] = k
    lift = np.array([np.nan] + [v for _, v in sizes_and_lifts])
    m = len(sizes_and_lifts)
    return HeadPartitions(regions=regions[None], lift=[lift], contrast=[np.ones(m + 1)],
                          sink=[np.zeros(m + 1, dtype=bool)], thresholds=np.zeros(1, np.float32),
                          sink_keys=np.zeros((1, grid[0] * grid[1]), dtype=bool))


def test_the_null_comparison_reads_pieces_up_to_twice_the_instance_and_tiles_when_few():
    from numina_hooks.numina.partition import null_evidence

    # regions 1-2 under the focus (instances of 10 patches, lifts 0.2 and 0.3); off it: two
    # 10-patch pieces keeping 0.1 and 0.15, one of 20 keeping 0.25, one of 30 keeping 0.9
    parts = _one_head([(10, 0.2), (10, 0.3), (10, 0.1), (10, 0.15), (20, 0.25), (30, 0.9)])
    focus = np.zeros((12, 40), dtype=bool)
    focus[0:2, :10] = True
    # the 30-patch piece (more than twice an instance) is left out; the 90th percentile of
    # 0.1, 0.15, 0.25 is 0.23: the median of 0.2 / 0.23 and 0.3 / 0.23
    expected = np.median([0.2 / np.percentile([0.1, 0.15, 0.25], 90), 0.3 / np.percentile([0.1, 0.15, 0.25], 90)])
    got = null_evidence(parts, 0, focus, 0.5, 0.05, None)
    assert got == pytest.approx(expected) and 1.0 < got < 1.2
    # another noun's object among the pieces (not_background) leaves too few: silent
    other = np.zeros(7, dtype=bool)
    other[5] = True
    assert np.isnan(null_evidence(parts, 0, focus, 0.5, 0.05, None, not_background=other))
    # ... unless the head's background tiles fill the null
    parts.null_lift = [np.array([0.4, 0.5])]
    with_tiles = null_evidence(parts, 0, focus, 0.5, 0.05, None, not_background=other)
    assert with_tiles == pytest.approx(np.median([v / np.percentile([0.1, 0.15, 0.4, 0.5], 90) for v in (0.2, 0.3)]))
    assert with_tiles < 1.0  # the instances keep less than the tiles: no objects


def test_each_instance_must_keep_more_than_the_heads_background_pieces_of_its_size():
    from numina_hooks.numina.partition import head_instances

    # under the focus: a 10-patch object keeping 0.6, a 10-patch piece of background keeping
    # 0.12 (over min_lift 0.05) and a 30-patch object keeping 0.5; off it: three 10-patch
    # pieces keeping 0.1, 0.12 and 0.15 (90th percentile 0.144) and a 60-patch one keeping 0.55
    parts = _one_head([(10, 0.6), (10, 0.12), (30, 0.5), (10, 0.1), (10, 0.12), (10, 0.15), (40, 0.55)])
    focus = np.zeros((12, 40), dtype=bool)
    focus[0:3, :] = True
    threshold_alone = head_instances(parts, 0, focus, 0.5, 0.05, None)
    assert np.flatnonzero(threshold_alone).tolist() == [1, 2, 3]
    # the background piece keeps no more than its head's pieces of its size: out; the 30-patch
    # object is compared with pieces of at most 60 patches, the 40-patch one among them
    # (90th percentile of 0.1, 0.12, 0.15, 0.55 is 0.43): it keeps more and stays
    kept = head_instances(parts, 0, focus, 0.5, 0.05, None, instance_null=1.0)
    assert np.flatnonzero(kept).tolist() == [1, 3]
    # a larger factor is stricter: the 30-patch object (0.5 against 1.2 x 0.43) goes too
    assert np.flatnonzero(head_instances(parts, 0, focus, 0.5, 0.05, None, instance_null=1.2)).tolist() == [1]
    # the 40-patch piece is another noun's object, not background: left out of every null,
    # the 30-patch object is compared with the three small pieces alone
    other = np.zeros(8, dtype=bool)
    other[7] = True
    got = head_instances(parts, 0, focus, 0.5, 0.05, None, instance_null=1.2, not_background=other)
    assert np.flatnonzero(got).tolist() == [1, 3]
    # with fewer than three pieces of its size and no tiles an instance has no null and stays
    few = _one_head([(10, 0.12), (10, 0.1), (10, 0.15)])
    focus_few = np.zeros((12, 40), dtype=bool)
    focus_few[0, :] = True
    assert np.flatnonzero(head_instances(few, 0, focus_few, 0.5, 0.05, None, instance_null=1.0)).tolist() == [1]


def test_a_positional_head_whose_every_instance_fails_its_null_falls_back_to_the_map():
    # the small frame tiled by position: with the frame-wide null comparison off, each
    # instance's own null still finds the tiles on the focus keeping no more than those off
    # it, and with none left the noun is read from its cross map (one instance an object)
    labels = _two_small_objects()
    keep = np.array([0.8, 0.8, 0.9, 0.9, 0.9, 0.8])
    sa, cross = _small_frame(_tiles_head(SMALL, 4, keep), labels, 0)
    layout = layout_from_attention(sa, cross, SMALL, NuminaConfig(self_evidence_null_factor=None))
    assert layout.from_cross and layout.count == 2
    # without the cross-map fallback (self_evidence_factor None) the noun keeps no instance
    bare = layout_from_attention(sa, cross, SMALL, NuminaConfig(self_evidence_null_factor=None,
                                                                self_evidence_factor=None))
    assert not bare.from_cross and bare.count == 0


def test_nouns_read_together_keep_each_others_objects_out_of_their_null():
    from numina_hooks.numina.identify import instances_by_noun

    # a cat (region 1, 10 patches, keeps 0.5) and two dogs (regions 2-3, 10 patches, keep
    # 0.7-0.8); off both: three background pieces keeping 0.1-0.15. Read alone, the cat's null
    # holds the dogs (90th percentile 0.74): the cat would be lost; with the dogs named, in
    # the same call or passed as ``others``, they are objects and the cat stays
    parts = _one_head([(10, 0.5), (10, 0.7), (10, 0.8), (10, 0.1), (10, 0.12), (10, 0.15)])
    cat, dogs = np.zeros((12, 40), dtype=bool), np.zeros((12, 40), dtype=bool)
    cat[0, :10] = True
    dogs[1:3, :10] = True
    cfg = NuminaConfig()
    alone = instances_by_noun(parts, 0, {"cat": cat}, cfg)["cat"]
    assert alone.max() == 0
    together = instances_by_noun(parts, 0, {"cat": cat, "dogs": dogs}, cfg)
    apart = instances_by_noun(parts, 0, {"cat": cat}, cfg, others=dogs)["cat"]
    assert together["cat"].max() == 1 and np.array_equal(together["cat"], apart)
    assert together["dogs"].max() == 2


def _lifts(values: dict):
    """A ``component_lift`` giving each strong component id the lift in ``values`` (0 for
    the others), with a record of its calls."""
    calls = []

    def lift(strong):
        calls.append(int(strong.max()))
        out = np.zeros(int(strong.max()) + 1)
        for k, v in values.items():
            out[k] = v
        return out
    lift.calls = calls
    return lift


def test_untouched_strong_components_count_only_where_the_head_shows_an_object():
    objects = _four_objects()
    focus = noun_focus(gaussian_filter((objects > 0).astype(np.float64), 1.0) + 0.01, GRID)
    strong = strong_components(focus)
    assert strong.max() == 4
    two = _instances_on(objects, (1, 2))  # two strong components left untouched
    touched = np.unique(strong[two > 0])
    untouched = [k for k in range(1, 5) if k not in touched]
    # the head keeps 0.2 on the components it found; on the other two as much as a third of it
    # (objects it missed) or next to nothing (clutter in the map)
    objects_there = _lifts({**{k: 0.2 for k in touched}, **{k: 0.07 for k in untouched}})
    clutter_there = _lifts({**{k: 0.2 for k in touched}, **{k: 0.01 for k in untouched}})
    assert head_missed_objects(two, focus, component_lift=objects_there)
    assert not head_missed_objects(two, focus, component_lift=clutter_there)
    # one untouched component with evidence is under the excess of 2
    one_shown = _lifts({**{k: 0.2 for k in touched}, untouched[0]: 0.07, untouched[1]: 0.0})
    assert not head_missed_objects(two, focus, component_lift=one_shown)
    # a head that shows its own objects no better than min_lift cannot speak against the map
    weak_head = _lifts({**{k: 0.04 for k in touched}, **{k: 0.0 for k in untouched}})
    assert head_missed_objects(two, focus, component_lift=weak_head)
    # the test off: every strong component counts, whatever the lifts
    off = NuminaConfig(cross_fallback_evidence=None)
    assert head_missed_objects(two, focus, off, component_lift=clutter_there)
    # the lifts are read only when the excess is reached
    three = _instances_on(objects, (1, 2, 3))
    unread = _lifts({})
    assert not head_missed_objects(three, focus, component_lift=unread) and unread.calls == []
    with pytest.raises(ValueError, match="component_lift gave shape"):
        head_missed_objects(two, focus, component_lift=lambda s: np.zeros(2))


def test_the_evidence_floor_lets_a_weak_but_clear_head_speak_against_clutter():
    # a head that keeps only 0.02 on the objects it found (under min_lift: high noise, a
    # large object) but nothing on two untouched bumps: clutter by the floor's measure
    objects = _four_objects()
    focus = noun_focus(gaussian_filter((objects > 0).astype(np.float64), 1.0) + 0.01, GRID)
    strong = strong_components(focus)
    two = _instances_on(objects, (1, 2))
    touched = np.unique(strong[two > 0])
    untouched = [k for k in range(1, 5) if k not in touched]
    weak_clear = _lifts({**{k: 0.02 for k in touched}, **{k: 0.0 for k in untouched}})
    weak_missed = _lifts({**{k: 0.02 for k in touched}, **{k: 0.015 for k in untouched}})
    assert head_missed_objects(two, focus, NuminaConfig(), component_lift=weak_clear)  # min_lift: map trusted
    low = NuminaConfig(cross_fallback_evidence_floor=0.01)
    assert not head_missed_objects(two, focus, low, component_lift=weak_clear)
    assert head_missed_objects(two, focus, low, component_lift=weak_missed)  # objects it missed
    # "head": the floor is the head's own instance threshold, given by the caller
    own = NuminaConfig(cross_fallback_evidence_floor="head")
    assert not head_missed_objects(two, focus, own, component_lift=weak_clear, head_threshold=0.01)
    assert head_missed_objects(two, focus, own, component_lift=weak_clear, head_threshold=0.03)
    assert head_missed_objects(two, focus, own, component_lift=weak_clear)  # no threshold: min_lift


@pytest.mark.parametrize("value", ["own", -0.1, 1.0, float("nan"), True])
def test_a_bad_evidence_floor_is_refused_by_name(value):
    with pytest.raises(ValueError, match="cross_fallback_evidence_floor"):
        NuminaConfig(cross_fallback_evidence_floor=value)


def test_clutter_as_strong_as_the_objects_does_not_replace_a_right_head():
    # the instance head separates the three objects; the noun's map has three more bumps as
    # strong as they are, on background where no head holds an object: clutter
    labels = _objects()
    sa, _ = _frame(labels, with_instance_head=True, seed=0)
    clutter = np.zeros(GRID)
    clutter[9:12, 12:15] = clutter[15:18, 15:18] = clutter[3:6, 14:17] = 1.0
    ca = _cross_of((labels > 0) + clutter, sa.shape[0])
    assert strong_components(noun_focus(ca[0].numpy().reshape(GRID), GRID)).max() == 6
    layout = layout_from_attention(sa, ca, GRID)
    assert not layout.from_cross and layout.self_head == 3 and layout.count == 3
    for k in (1, 2, 3):  # one instance on each object, none on the clutter
        found = np.unique(layout.labels[labels == k])
        assert len(found[found > 0]) == 1
    assert not layout.labels[clutter > 0].any()
    # every strong bump an object (the rule before): the map's six bumps replace the head's three
    before = layout_from_attention(sa, ca, GRID, NuminaConfig(cross_fallback_evidence=None))
    assert before.from_cross and before.count == 6
