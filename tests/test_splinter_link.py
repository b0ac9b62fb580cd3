"""A splinter cut off at a large object's rim joins the object (``NuminaConfig.splinter_link_gap``,
``partition._linked``), on a hand-built map with known affinities; a small object of its own,
a small region a patch away and a piece of comparable size do not."""

import dataclasses

import numpy as np
import pytest
import torch
from hand_built_maps import grid_block, group_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import splinter_option
from numina_hooks.numina.partition import _linked

#: the regions' containment measured on 16 members and the rows read with their own keys (the
#: defaults before the two changes of 2026-12-02): then a rim splinter of the scene below passes
#: the instance tests and needs the splinter test (with the regions as cut: trimmed to their
#: peaks, ``peak_gap``, the splinter no longer passes)
SPLINTERS_PASS = NuminaConfig(lift_sample=16, own_key="kept", min_lift_null_factor=None, min_member_lift=0.005,
                              peak_gap=None)

GRID = (30, 40)
N = GRID[0] * GRID[1]


def _block(rows: range, cols: range) -> np.ndarray:
    return grid_block(rows, cols, GRID[1])


def _links(groups, logd, cfg):
    sa, groups = group_head(groups, logd, N)
    return _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID)


# a large object O (rows 0-5, 120 patches) whose rows spread (own affinity 0.9), a splinter
# S of it on its rim (row 6, 6 patches, own 2.0: compact) attending to O at 0.3, and a small
# object T far away (6 patches) attending to O below uniform (-1.5). Measured on the feature
# family's large objects at noise 1.0: objects 0.2-1.2, splinters 1.7-2.5, splinter-object
# -0.14-0.51, two objects -1.45 and lower.
O, S, T = _block(range(6), range(20)), _block(range(6, 7), range(6)), _block(range(12, 13), range(30, 36))
LOGD = [[0.9, 0.3, -1.5],
        [0.3, 2.0, -1.5],
        [-1.5, -1.5, 2.0]]


def test_splinter_joins_its_object_and_a_small_object_does_not():
    join = _links([O, S, T], LOGD, NuminaConfig())
    assert join[0, 1] and join[1, 0]
    assert not join[0, 2] and not join[1, 2]


def test_without_the_gap_the_ratio_leaves_the_splinter_apart():
    # 0.3 < 0.5 * 0.9: the ratio alone asks more of the pair than the object gives itself
    join = _links([O, S, T], LOGD, NuminaConfig(splinter_link_gap=None))
    assert not join[0, 1]
    assert NuminaConfig.paper().splinter_link_gap is None


def test_a_small_region_a_patch_away_stays_apart():
    # S moved one row down (a row of background between it and O): no splinter of O, as a
    # small object a patch away from a cluster of touching ones on the toy model
    apart = _block(range(7, 8), range(6))
    join = _links([O, apart, T], LOGD, NuminaConfig())
    assert not join[0, 1]


def test_pieces_of_comparable_size_need_the_ratio():
    # the same affinities between touching groups of 60 and 30 patches (a half, over the
    # default fraction 0.25): two objects side by side, not a splinter
    a, b = _block(range(3), range(20)), _block(range(3, 4), range(30))
    join = _links([a, b], [[0.9, 0.3], [0.3, 2.0]], NuminaConfig())
    assert not join[0, 1]
    wider = _links([a, b], [[0.9, 0.3], [0.3, 2.0]], NuminaConfig(splinter_fraction=0.5))
    assert wider[0, 1]


def test_bad_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="splinter_link_gap=-1"):
        NuminaConfig(splinter_link_gap=-1)
    with pytest.raises(ValueError, match="splinter_fraction=0"):
        NuminaConfig(splinter_fraction=0)


def test_large_objects_at_high_noise_are_counted_once():
    # a development scene of the feature family (every map the softmax of q.k of token
    # features): three objects of radius 4-7 patches at noise 1.0, 30x52. Measured on 16
    # members a region (``lift_sample=16``) with the rows' own keys kept, a splinter at an
    # object's rim passes the instance tests, and without the splinter test it counts as a
    # fourth object in both frames; the default (64 members, own keys left out) counts 3
    from synthetic_feature_scenes import make_feature_scene

    from numina_hooks.numina.layout import layout_from_attention

    scene = make_feature_scene(3, (30, 52), n_frames=2, noise=1.0, seed=503, radius=(4.0, 7.0))
    for frame in scene.frames:
        assert frame.count == 3
        assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52)).count == 3
        assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52), SPLINTERS_PASS).count == 3
        ratio_alone = dataclasses.replace(SPLINTERS_PASS, splinter_link_gap=None)
        assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52), ratio_alone).count == 4


def _feature_views(scene, grid):
    """A self view and a cross view over the scene's frames, from the q/k the feature
    family's maps are the softmax of (scale 1)."""
    from bench_identify import views_of

    qk = {name: torch.cat([f[name] for f in scene.qk], 1).transpose(0, 1)[None]
          for name in ("self_q", "self_k", "cross_q")}
    text_k = scene.qk[0]["cross_k"].transpose(0, 1)[None]
    return views_of(qk["self_q"], qk["self_k"], qk["cross_q"], text_k, grid, len(scene.frames), 1.0)


@pytest.mark.parametrize("config,counts", [(NuminaConfig(), [3, 3]),
                                           (SPLINTERS_PASS, [3, 3]),
                                           (dataclasses.replace(SPLINTERS_PASS, splinter_link_gap=None), [4, 4])],
                         ids=["default", "16-members", "16-members-ratio-alone"])
def test_phase_one_reader_counts_large_objects_once_from_qk(config, counts):
    # the same scene read the way phase 1 reads a model: q/k views, the splinters linked
    # after the head choice among the chosen head's focus regions
    from synthetic_feature_scenes import make_feature_scene

    from numina_hooks.numina.identify import LayoutReader

    scene = make_feature_scene(3, (30, 52), n_frames=2, noise=1.0, seed=503, radius=(4.0, 7.0), with_qk=True)
    reader = LayoutReader({"objects": [0]}, step=0, layer=0, config=config)
    for view in _feature_views(scene, (30, 52)):
        reader.on_attention(view)
    assert reader.nouns["objects"].frame_counts == counts


def test_weak_regions_join_a_strong_one_by_the_ratio_never_each_other():
    """``by_ratio`` (the head's own lift threshold, ``link_head(..., splinter_lift=)``): two
    weak regions that attend to each other as much as to themselves (a diffuse head's
    objects) stay apart; a weak piece of a strong object joins it by the ratio."""
    a, b, c = _block(range(3), range(10)), _block(range(3), range(20, 30)), _block(range(10, 13), range(0, 10))
    logd = [[1.0, 0.9, 0.9],
            [0.9, 1.0, 0.9],
            [0.9, 0.9, 1.0]]
    sa, groups = group_head([a, b, c], logd, N)
    cfg = NuminaConfig()
    every = _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID)
    assert every[0, 1] and every[1, 2]  # all strong: the ratio joins them all
    one_strong = _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID,
                         by_ratio=np.array([True, False, False]))
    assert one_strong[0, 1] and one_strong[0, 2]
    assert not one_strong[1, 2]
    none_strong = _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID,
                          by_ratio=np.zeros(3, dtype=bool))
    assert not none_strong[0, 1] and not none_strong[1, 2] and not none_strong[0, 2]
