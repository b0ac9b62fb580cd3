"""Pieces the noun's cross-attention holds in separate bumps stay apart whatever their
affinity (``NuminaConfig.link_map_veto``, 0.5 by default): on hand-built maps, two nearby
objects of a class-level head (each attending to the other as to itself) join without the
veto and stay apart with it; two pieces of one object inside one bump still join; a
splinter touching its region joins across a dip; bad values are refused by name."""

import numpy as np
import pytest
from hand_built_maps import gaussian_bump, grid_block, group_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import bridge_option, noun_focus, reach_option, splinter_option
from numina_hooks.numina.partition import _linked

GRID = (20, 40)
N = GRID[0] * GRID[1]
SAME = [[1.5, 1.5], [1.5, 1.5]]  # a class-level head: each group attends to the other as to itself


def _block(rows: range, cols: range) -> np.ndarray:
    return grid_block(rows, cols, GRID[1])


def _bump(cy: float, cx: float, sy: float, sx: float, height: float = 1.0) -> np.ndarray:
    return gaussian_bump(GRID, cy, cx, sy, sx, height)


#: two objects two patches apart (columns 10-14 and 17-21 of rows 8-11)
A, B = _block(range(8, 12), range(10, 15)), _block(range(8, 12), range(17, 22))
TWO_BUMPS = 0.05 + _bump(9.5, 12.0, 1.5, 1.5) + _bump(9.5, 19.0, 1.5, 1.5)
ONE_BUMP = 0.05 + _bump(9.5, 15.5, 3.0, 6.0)


def _links(groups, cross, cfg):
    sa, groups = group_head(groups, SAME, N)
    return _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID,
                   reach=reach_option(cfg), bridge=bridge_option(noun_focus(cross, GRID, cfg), cfg))


def test_without_the_veto_two_nearby_objects_of_a_class_head_join():
    cfg = NuminaConfig(link_map_veto=None)
    assert bridge_option(noun_focus(TWO_BUMPS, GRID, cfg), cfg).veto is None
    assert _links([A, B], TWO_BUMPS, cfg)[0, 1]


def test_the_default_vetoes_at_half_the_way_from_floor_to_the_lower_peak():
    cfg = NuminaConfig()
    assert cfg.link_map_veto == 0.5
    assert bridge_option(noun_focus(TWO_BUMPS, GRID, cfg), cfg).veto == 0.5
    assert not _links([A, B], TWO_BUMPS, cfg)[0, 1]


def test_the_veto_keeps_two_bumps_apart_and_one_bump_together():
    cfg = NuminaConfig(link_map_veto=0.5)
    assert not _links([A, B], TWO_BUMPS, cfg)[0, 1]
    assert _links([A, B], ONE_BUMP, cfg)[0, 1]


def test_a_splinter_touching_its_region_joins_across_a_dip():
    big = _block(range(6, 14), range(8, 18))  # 80 patches
    splinter = _block(range(8, 10), range(18, 20))  # 4 patches, touching its right edge
    cross = 0.05 + _bump(10.0, 12.5, 2.5, 3.0) + _bump(9.0, 21.0, 1.0, 1.0)  # a dip at column 18-19
    cfg = NuminaConfig(link_map_veto=0.9)
    assert _links([big, splinter], cross, cfg)[0, 1]


def test_the_veto_needs_the_bridge_maps():
    # without link_bridge there are no maps: the veto has nothing to read and links stand
    cfg = NuminaConfig(link_map_veto=0.5, link_bridge=None)
    assert bridge_option(noun_focus(TWO_BUMPS, GRID, cfg), cfg) is None
    assert _links([A, B], TWO_BUMPS, cfg)[0, 1]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2, float("nan"), "0.5"])
def test_bad_veto_levels_are_refused_by_name(bad):
    with pytest.raises((ValueError, TypeError), match="link_map_veto"):
        NuminaConfig(link_map_veto=bad)
