"""Regions out of reach join when the noun's cross-attention holds them in one bump
(``NuminaConfig.link_bridge``, ``partition.map_bridged``): on hand-built maps, two pieces of
one long object far apart join, two objects with a bump each do not, and the level decides
how deep a dip between two bumps may be."""

import numpy as np
import pytest
from hand_built_maps import gaussian_bump, grid_block, group_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.focus import FocusUnion
from numina_hooks.numina.layout import bridge_option, noun_focus, reach_option, splinter_option
from numina_hooks.numina.partition import _linked, map_bridged

GRID = (20, 40)
N = GRID[0] * GRID[1]
SAME = [[1.5, 1.5], [1.5, 1.5]]  # two groups attending to each other as to themselves


def _block(rows: range, cols: range) -> np.ndarray:
    return grid_block(rows, cols, GRID[1])


def _bump(cy: float, cx: float, sy: float, sx: float, height: float = 1.0) -> np.ndarray:
    return gaussian_bump(GRID, cy, cx, sy, sx, height)


#: the two ends of one long object (columns 2-5 and 30-33 of rows 8-11), 24 patches apart
LEFT, RIGHT = _block(range(8, 12), range(2, 6)), _block(range(8, 12), range(30, 34))
ONE_OBJECT = 0.05 + _bump(9.5, 18.0, 3.0, 14.0)  # one wide bump over both ends
TWO_OBJECTS = 0.05 + _bump(9.5, 3.5, 2.5, 2.5) + _bump(9.5, 31.5, 2.5, 2.5)


def _links(groups, cross, cfg):
    sa, groups = group_head(groups, SAME, N)
    return _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID,
                   reach=reach_option(cfg), bridge=bridge_option(noun_focus(cross, GRID, cfg), cfg))


def test_one_bump_joins_the_far_pieces_and_two_bumps_do_not():
    cfg = NuminaConfig(link_bridge=0.5)
    assert _links([LEFT, RIGHT], ONE_OBJECT, cfg)[0, 1]
    assert not _links([LEFT, RIGHT], TWO_OBJECTS, cfg)[0, 1]
    # without the bridge the reach alone refuses both
    assert not _links([LEFT, RIGHT], ONE_OBJECT, NuminaConfig(link_bridge=None))[0, 1]


def test_the_level_sets_how_deep_a_dip_may_be():
    # two bumps whose rims meet: between them the map dips to about 0.6 of the peaks above floor
    cross = 0.05 + _bump(9.5, 12.0, 2.5, 4.0) + _bump(9.5, 24.0, 2.5, 4.0)
    a, b = _block(range(8, 12), range(10, 15)), _block(range(8, 12), range(22, 27))
    focus = noun_focus(cross, GRID, NuminaConfig())
    saddle = (cross[9, 18] - focus.floor) / (cross[8:12, 10:15].max() - focus.floor)
    assert 0.5 < saddle < 0.9
    pairs = np.array([[False, True], [True, False]])
    maps = [(focus.cross, focus.floor)]
    assert map_bridged([a, b], pairs, maps, saddle - 0.05)[0, 1]
    assert not map_bridged([a, b], pairs, maps, saddle + 0.05)[0, 1]
    # only the pairs asked about are tested
    assert not map_bridged([a, b], np.zeros((2, 2), dtype=bool), maps, 0.1).any()


def test_a_piece_below_the_floor_is_never_bridged():
    flat_corner = _block(range(0, 2), range(38, 40))  # where ONE_OBJECT is at its floor
    focus = noun_focus(ONE_OBJECT, GRID, NuminaConfig())
    assert not map_bridged([LEFT, flat_corner], np.ones((2, 2), dtype=bool), [(focus.cross, focus.floor)], 0.01)[0, 1]


def test_any_noun_of_a_union_may_bridge_and_a_bare_mask_cannot():
    cfg = NuminaConfig(link_bridge=0.5)
    one, two = noun_focus(ONE_OBJECT, GRID, cfg), noun_focus(TWO_OBJECTS, GRID, cfg)
    maps, level, veto = bridge_option(FocusUnion([two, one]), cfg)
    assert len(maps) == 2 and level == 0.5 and veto == cfg.link_map_veto
    pairs = np.ones((2, 2), dtype=bool)
    assert map_bridged([LEFT, RIGHT], pairs, maps, level)[0, 1]
    assert bridge_option(one.mask, cfg) is None
    assert bridge_option(one, NuminaConfig(link_bridge=None)) is None
    # without a reach the bridge still joins weak pieces
    assert bridge_option(one, NuminaConfig(link_bridge=0.5, link_reach=None)) is not None


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan")])
def test_bad_levels_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=f"link_bridge={bad}"):
        NuminaConfig(link_bridge=bad)


def test_weak_pieces_join_by_the_ratio_only_inside_one_bump():
    # two weak pieces side by side (within reach): the ratio holds, but weak pairs join by
    # the splinter test alone unless the noun's map holds them in one bump
    a, b = _block(range(8, 12), range(14, 18)), _block(range(8, 12), range(19, 23))
    sa, groups = group_head([a, b], SAME, N)
    cfg = NuminaConfig()
    focus = noun_focus(ONE_OBJECT, GRID, cfg)
    weak = np.array([False, False])

    def links(bridge):
        return _linked(sa, 0, groups, cfg.link_ratio, 256, None, GRID, by_ratio=weak,
                       reach=reach_option(cfg), bridge=bridge)[0, 1]

    assert not links(None)
    assert links(bridge_option(focus, cfg))
    # two bumps: the map does not hold them together
    assert not links(bridge_option(noun_focus(0.05 + _bump(9.5, 15.5, 2.0, 1.5) + _bump(9.5, 21.0, 2.0, 1.5),
                                              GRID, cfg), cfg))
