"""Regions join by the link ratio only within reach of each other (``NuminaConfig.link_reach``,
``partition.within_reach``): on a hand-built head whose two groups attend to each other as
much as to themselves, the pieces of one occluded object a few patches apart join, two
objects across the frame do not, and the reach grows with the pieces' size."""

import numpy as np
import pytest
from hand_built_maps import grid_block, group_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import reach_option, splinter_option
from numina_hooks.numina.partition import _linked, within_reach

GRID = (20, 40)
N = GRID[0] * GRID[1]
#: two groups that attend to each other as densely as to themselves: linked by any ratio
SAME = [[1.5, 1.5], [1.5, 1.5]]


def _block(rows: range, cols: range) -> np.ndarray:
    return grid_block(rows, cols, GRID[1])


def _links(groups, cfg):
    sa, groups = group_head(groups, SAME, N)
    return _linked(sa, 0, groups, cfg.link_ratio, 256, splinter_option(cfg), GRID,
                   reach=reach_option(cfg))


def test_pieces_a_few_patches_apart_join_and_objects_across_the_frame_do_not():
    left = _block(range(5, 9), range(2, 6))  # 4x4
    near = _block(range(5, 9), range(8, 12))  # 2 patches of occluder between: 3 apart
    far = _block(range(5, 9), range(30, 34))  # 25 apart
    assert _links([left, near], NuminaConfig())[0, 1]
    assert not _links([left, far], NuminaConfig())[0, 1]
    # without the reach the ratio alone decides: both join
    assert _links([left, far], NuminaConfig(link_reach=None))[0, 1]
    assert _links([left, far], NuminaConfig(link_reach=25.0))[0, 1]
    assert not _links([left, far], NuminaConfig(link_reach=24.0))[0, 1]


def test_the_reach_grows_with_the_pieces_size():
    # two 8x8 pieces 5 apart: a disc of 128 patches has diameter 12.8; half of it, 6.4, reaches
    big_a, big_b = _block(range(2, 10), range(2, 10)), _block(range(2, 10), range(14, 22))
    assert _links([big_a, big_b], NuminaConfig())[0, 1]
    assert not _links([big_a, big_b], NuminaConfig(link_reach_factor=0.0))[0, 1]
    # two 2x2 pieces as far apart stay apart: a disc of 8 patches reaches max(3, 1.6)
    small_a, small_b = _block(range(2, 4), range(2, 4)), _block(range(2, 4), range(8, 10))
    assert not _links([small_a, small_b], NuminaConfig())[0, 1]


def test_within_reach_measures_between_the_closest_patches():
    a = _block(range(0, 3), range(0, 3))
    b = _block(range(0, 3), range(6, 9))  # 4 apart along the row
    c = _block(range(6, 9), range(6, 9))  # 3 rows below and 3 columns right of a's corner
    pairs = np.ones((3, 3), dtype=bool)
    got = within_reach([a, b, c], GRID, pairs, 4.0, 0.0)
    assert got[0, 1] and got[1, 0]
    assert not got[0, 2]  # the corners (2, 2) and (6, 6) are 5.66 apart
    assert got[1, 2]  # (2, 6) and (6, 6): 4 apart
    # pairs not asked about stay True
    assert within_reach([a, b, c], GRID, np.zeros((3, 3), dtype=bool), 0.0, 0.0).all()


def test_the_floor_grows_with_the_grid():
    # two 2x2 pieces 4 apart (3 patches of occluder between): a disc of 8 patches reaches
    # 1.6, so the floor decides: 2 patches on a 20x40 grid (a tenth of 20), 4.5 on 45x80
    a, b = _block(range(2, 4), range(2, 4)), _block(range(2, 4), range(7, 9))
    pairs = np.ones((2, 2), dtype=bool)
    assert not within_reach([a, b], GRID, pairs, 2.0, 0.5, 0.1)[0, 1]
    wide = [np.stack(np.divmod(g, GRID[1]), 1) @ np.array([80, 1]) for g in (a, b)]
    assert within_reach(wide, (45, 80), pairs, 2.0, 0.5, 0.1)[0, 1]
    # without the share the floor is link_reach on every grid
    assert not within_reach(wide, (45, 80), pairs, 2.0, 0.5, 0.0)[0, 1]
    # through the config: a share of 0.2 reaches 4 patches on the 20x40 grid
    assert not _links([a, b], NuminaConfig())[0, 1]
    assert _links([a, b], NuminaConfig(link_reach_grid_share=0.2))[0, 1]
    assert not _links([a, b], NuminaConfig(link_reach_grid_share=0.0, link_reach=3.0))[0, 1]


def test_the_paper_preset_has_no_reach_and_bad_values_are_refused():
    assert NuminaConfig.paper().link_reach is None
    with pytest.raises(ValueError, match="link_reach=-1"):
        NuminaConfig(link_reach=-1)
    with pytest.raises(ValueError, match="link_reach_factor=nan"):
        NuminaConfig(link_reach_factor=float("nan"))
    with pytest.raises(ValueError, match="link_reach_factor"):
        NuminaConfig(link_reach_factor=None)
    with pytest.raises(ValueError, match="link_reach_grid_share=-0.1"):
        NuminaConfig(link_reach_grid_share=-0.1)
