"""A head's own lift threshold (``NuminaConfig.min_lift_null_factor``, ``partition.lift_threshold``):
what a diffuse head's objects keep is far under ``min_lift``, a share of a row; measured against
the same head's regions off the focus (or tiles of its background), they stand out. The default
since 2026-12-03."""

import dataclasses
import numpy as np
import pytest

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import layout_from_attention
from numina_hooks.numina.partition import (MIN_NULL_REGIONS, NULL_TILES, HeadPartitions, background_tiles,
                                           lift_threshold)
from synthetic_rope_scenes import make_rope_scene  # benchmarks/ (on sys.path via conftest.py)

#: index 0 unused (no region); regions 1-2 on the focus, 3-6 off it
ON_FOCUS = np.array([False, True, True, False, False, False, False])

def test_threshold_follows_the_heads_background_regions():
    lift = np.array([np.nan, 0.02, 0.004, 0.001, 0.002, 0.003, 0.0025])
    threshold = lift_threshold(ON_FOCUS, lift, 0.05, 2.0)
    assert threshold == pytest.approx(2.0 * np.percentile([0.001, 0.002, 0.003, 0.0025], 90))
    assert 0.004 < threshold < 0.02  # the object at 0.02 passes, the speck at 0.004 does not

def test_threshold_is_never_stricter_than_min_lift_nor_used_without_a_background():
    noisy = np.array([np.nan, 0.3, 0.2, 0.1, 0.12, 0.09, 0.11])  # a head whose background keeps a lot
    assert lift_threshold(ON_FOCUS, noisy, 0.05, 2.0) == 0.05
    few = np.array([np.nan, 0.02, 0.004, 0.001, np.nan, np.nan, np.nan])  # one measured off-focus region
    assert MIN_NULL_REGIONS > 1 and lift_threshold(ON_FOCUS, few, 0.05, 2.0) == 0.05
    flat = np.array([np.nan, 0.02, 0.004, -0.001, -0.002, -0.003, 0.0])  # nothing kept off the focus
    assert lift_threshold(ON_FOCUS, flat, 0.05, 2.0) == 0.05
    assert lift_threshold(ON_FOCUS, np.array([np.nan, 0.02, 0.004, 0.001, 0.002, 0.003, 0.0025]),
                          0.05, None) == 0.05

def test_a_head_without_background_regions_takes_its_null_from_background_tiles():
    """Every region on the focus (a small frame, the background one region too large to
    keep): the tiles cut out of the background give the null instead of ``min_lift``."""
    all_on = np.array([False, True, True, True])
    lift = np.array([np.nan, 0.03, 0.025, 0.006])  # two objects and a speck of background
    assert lift_threshold(all_on, lift, 0.05, 2.0) == 0.05  # no null: min_lift alone
    tiles = np.array([0.001, 0.004, 0.002, -0.001, 0.003, -np.inf])  # -inf: not counted
    threshold = lift_threshold(all_on, lift, 0.05, 2.0, tiles)
    assert threshold == pytest.approx(2.0 * np.percentile([0.001, 0.004, 0.002, -0.001, 0.003], 90))
    assert 0.006 < threshold < 0.025
    off = np.array([np.nan, 0.03, 0.001, 0.002, 0.0015])  # enough regions off the focus: tiles unused
    assert lift_threshold(np.array([False, True, False, False, False]), off, 0.05, 2.0, tiles) == \
        pytest.approx(2.0 * np.percentile([0.001, 0.002, 0.0015], 90))

def test_background_tiles_lie_inside_the_background_and_match_the_regions_size():
    regions = np.zeros((2, 12, 20), dtype=np.int32)
    regions[0, 2:5, 3:6] = 1  # 9 patches: tiles of side 3
    regions[0, 6:9, 10:13] = 2
    sink_keys = np.zeros((2, 240), dtype=bool)
    sink_keys[0, 0] = True  # a sink key at (0, 0): no tile over it
    parts = HeadPartitions(regions=regions, lift=[np.full(3, np.nan), np.full(1, np.nan)],
                           contrast=[np.zeros(3), np.zeros(1)], sink=[np.zeros(3, bool), np.zeros(1, bool)],
                           thresholds=np.zeros(2, np.float32), sink_keys=sink_keys)
    tiles = background_tiles(parts).reshape(2, 12, 20)
    assert 1 <= tiles[0].max() <= NULL_TILES
    assert not (tiles[0] > 0)[regions[0] > 0].any() and tiles[0, 0, 0] == 0
    for t in range(1, tiles[0].max() + 1):
        ys, xs = np.nonzero(tiles[0] == t)
        assert len(ys) == 9 and np.ptp(ys) == 2 and np.ptp(xs) == 2  # 3 x 3 squares
    assert tiles[1].max() == NULL_TILES  # no region: 2 x 2 tiles over the whole frame, 16 of 60
    assert (np.bincount(tiles[1].reshape(-1))[1:] == 4).all()

@pytest.mark.parametrize("seed", [902, 904])
def test_diffuse_heads_objects_are_counted_with_the_heads_own_threshold(seed):
    """A rope-family frame (3D rotary position terms, rows spread over the frame; noise 1.0):
    the instance head's objects keep 0.01-0.03 of a row beyond a moved copy, so ``min_lift``
    alone finds nothing, while the head's own threshold counts the three objects."""
    scene = make_rope_scene(3, (30, 52), noise=1.0, seed=seed)
    frame = scene.frames[0]
    assert frame.count == 3
    row_share = NuminaConfig(min_lift_null_factor=None, min_member_lift=0.005, peak_gap=None)  # the rule before
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52), row_share).count == 0
    own = layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52))
    assert own.count == 3 and scene.head_types[own.self_head] == "instance"

def test_the_factor_is_validated():
    for bad in (0, -1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="min_lift_null_factor"):
            NuminaConfig(min_lift_null_factor=bad)
    assert NuminaConfig(min_lift_null_factor=2.0).min_lift_null_factor == 2.0

@pytest.mark.parametrize("seed", [900, 902])
def test_a_small_frames_objects_are_counted_against_background_tiles(seed, monkeypatch):
    """A rope-family frame at 15x26 (noise 0.5, four objects of 4-9 patches): the instance
    head's background is one region too large to keep, so it has no regions off the focus;
    its null comes from tiles of that background. Without them ``min_lift`` alone applies
    and half the objects are missed."""
    frame = make_rope_scene(4, (15, 26), noise=0.5, seed=seed).frames[0]
    own = NuminaConfig()
    assert own.min_lift_null_factor is not None
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (15, 26), own).count == 4
    import numina_hooks.numina.partition as partition

    def no_tiles(parts, most=NULL_TILES, heads=None):
        return np.zeros((parts.regions.shape[0], parts.regions[0].size), dtype=np.int64)

    monkeypatch.setattr(partition, "background_tiles", no_tiles)
    # the missed-objects fallback (``cross_fallback_excess``) and the map's bumps of step 5c
    # (``unclaimed_peaks``) off: this is the null's test (with either, the objects come back)
    alone = dataclasses.replace(own, cross_fallback_excess=None, unclaimed_peaks=False)
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (15, 26), alone).count == 2
    # each alone brings objects back: the fallback reads the cross map, step 5c one more
    # object from its bump. The fallback as it was before its evidence test: here the head's
    # missed objects are small and, without the tiles' null, missed because they keep little
    # (in seed 902 one keeps a lift of 0.003 against the found objects' 0.08), so the test
    # (``cross_fallback_evidence``) does not count it; with the tiles (the default, above)
    # the head finds all four
    with_fallback = dataclasses.replace(own, unclaimed_peaks=False, cross_fallback_evidence=None)
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (15, 26), with_fallback).from_cross
    # (step 5c's shape-matched null off: with it the bumps bring back all four objects)
    with_bumps = dataclasses.replace(own, cross_fallback_excess=None, unclaimed_peak_null_z=None)
    bumps = layout_from_attention(frame.self_attn, frame.cross_attn, (15, 26), with_bumps)
    labels = np.asarray(frame.labels)
    assert bumps.count == 3 and sum(bool((bumps.labels[labels == k] > 0).any()) for k in range(1, 5)) == 3


def test_the_null_measures_a_few_regions_off_the_focus_and_tiles_only_where_needed():
    from numina_hooks.numina.partition import NULL_REGIONS, null_candidates

    many = np.zeros(31, dtype=bool)
    many[1:4] = True  # 3 regions on the focus, 27 off it
    sink = np.zeros(31, dtype=bool)
    sink[30] = True  # a sink region is never part of the null
    few = np.array([False, True, True, False, False])  # 2 regions off the focus
    wanted, tiles = null_candidates([many, few], [sink, np.zeros(5, dtype=bool)])
    assert wanted[0].sum() == NULL_REGIONS and not (wanted[0] & many).any() and not wanted[0][[0, 30]].any()
    assert np.ptp(np.flatnonzero(wanted[0])) >= 20  # spread over the frame, not the first ones
    assert list(np.flatnonzero(wanted[1])) == [3, 4]
    assert list(tiles) == [False, True]



def test_background_tiles_are_measured_once_per_head_as_later_calls_ask():
    """A second noun of the same frame may need the tiles of a head the first did not: they
    are measured then, and the heads measured before keep theirs."""
    import torch

    from numina_hooks.numina.partition import fill_lift, partition_heads

    frame = make_rope_scene(4, (15, 26), noise=0.5, seed=900).frames[0]
    sa = torch.as_tensor(frame.self_attn)
    parts = partition_heads(sa, (15, 26))
    h = parts.regions.shape[0]
    nothing = [np.zeros(len(x), dtype=bool) for x in parts.lift]
    first = np.arange(h) < h // 2
    fill_lift(parts, sa, nothing, null_tiles=first)
    assert [x is not None for x in parts.null_lift] == list(first)
    kept = [parts.null_lift[k] for k in range(h // 2)]
    fill_lift(parts, sa, nothing, null_tiles=True)
    assert all(x is not None for x in parts.null_lift)
    assert all(parts.null_lift[k] is kept[k] for k in range(h // 2))  # not measured again
    assert sum(len(parts.null_lift[k]) for k in range(h // 2, h)) > 0

@pytest.mark.parametrize("seed,count", [(912, 8), (936, 5)])
def test_a_positional_heads_piece_of_the_focus_does_not_outscore_the_instance_head(seed, count, monkeypatch):
    """A rope-family frame at noise 1.0: a positional head keeps a little over ``min_lift``
    on the one piece of the frame under the focus, more than the diffuse instance head keeps
    on its objects, but that piece covers a few percent of the focus. Scored without the
    share of the focus its instances cover, the positional head wins and the frame is
    counted 1 (the cross-map fallbacks, ``self_evidence_factor``, ``cross_fallback_excess``
    and ``instance_map_contrast``, off: this is the head score's test)."""
    import numina_hooks.numina.partition as partition

    scene = make_rope_scene(count, (30, 52), noise=1.0, seed=seed)
    frame = scene.frames[0]
    own = layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52))
    assert scene.head_types[own.self_head] == "instance" and own.count == count
    monkeypatch.setattr(partition, "focus_coverage", lambda regions, instances, mask: 1.0)
    lift_alone = layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52),
                                       NuminaConfig(self_evidence_factor=None, cross_fallback_excess=None,
                                                    instance_map_contrast=None))
    assert scene.head_types[lift_alone.self_head] == "positional" and lift_alone.count == 1
