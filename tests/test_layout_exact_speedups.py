"""The layout's faster helpers give exactly what the plain computations they replaced give.

Each helper is checked against an independent reference (torch's own quantile, scipy's sparse
component search, a brute-force distance, scipy's binary dilation) on random inputs shaped
like a frame's: ties, -inf edge weights, both benchmark grids, small and large pixel groups.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from numina_hooks.numina import partition as P


@pytest.mark.parametrize("rows", [2, 5, 12, 40])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0])
def test_column_quantile_is_torch_quantile_bit_for_bit(rows, q):
    g = torch.Generator().manual_seed(rows * 100 + int(q * 1000))
    cases = [torch.randn(rows, 300, generator=g) * 5]
    cases.append(torch.round(cases[0]))  # ties
    with_inf = cases[0].clone()
    with_inf[torch.rand(rows, 300, generator=g) < 0.1] = -float("inf")
    cases += [with_inf, cases[0].double()]
    for values in cases:
        got, want = P.column_quantile(values, q), torch.quantile(values, q, dim=0)
        assert got.dtype == want.dtype
        # NaN only where torch gives NaN too (a column of several -inf: -inf - -inf)
        assert torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)


def test_column_quantile_with_nan_is_torch_quantile():
    values = torch.randn(12, 50)
    values[3, 7] = float("nan")
    got, want = P.column_quantile(values, 0.25), torch.quantile(values, 0.25, dim=0)
    assert torch.isnan(got[7]) and torch.isnan(want[7])
    assert torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)


def _edge_list(h, H, W):
    idx = np.arange(H * W).reshape(H, W)
    p = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    q = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    offsets = (np.arange(h) * H * W)[:, None]
    return (p[None] + offsets).ravel(), (q[None] + offsets).ravel(), len(p)


def _same_classes(a, b):
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    both = np.unique(ia.astype(np.int64) * (ib.max() + 1) + ib)
    return len(both) == ia.max() + 1 == ib.max() + 1


@pytest.mark.parametrize("grid", [(30, 52), (15, 26), (1, 7), (6, 1)])
def test_grid_components_has_the_sparse_search_classes(grid):
    H, W = grid
    h = 3
    gp, gq, e = _edge_list(h, H, W)
    rng = np.random.default_rng(H * W)
    for share in (0.0, 0.3, 0.6, 0.9, 1.0):
        join = rng.random(h * e) < share
        got = P._grid_components(join.reshape(h, e), grid)
        want = P._components(h * H * W, gp[join], gq[join])
        assert got.shape == (h * H * W,)
        assert _same_classes(got, want)
        # no component crosses from one head to the next
        assert not np.intersect1d(got[:H * W], got[H * W:2 * H * W]).size


def _brute_gaps(pix, a_idx, b_idx, W):
    out = []
    for a, b in zip(a_idx, b_idx):
        ya, xa = np.divmod(pix[a], W)
        yb, xb = np.divmod(pix[b], W)
        d = np.sqrt((ya[:, None] - yb[None]) ** 2 + (xa[:, None] - xb[None]) ** 2)
        out.append(d.min())
    return np.array(out)


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5])  # few pixels (one matrix) to many (k-d trees)
def test_closest_gaps_are_the_closest_patch_centres(density):
    rng = np.random.default_rng(int(density * 100))
    H, W = 30, 52
    for _ in range(30):
        m = int(rng.integers(2, 7))
        lab = rng.integers(1, m + 1, size=(H, W)) * (rng.random((H, W)) < density)
        groups = {j - 1: np.flatnonzero(lab.ravel() == j) for j in range(1, m + 1)}
        groups = {j: g for j, g in groups.items() if len(g)}
        ids = sorted(groups)
        if len(ids) < 2:
            continue
        a_idx, b_idx = np.array(ids[:-1]), np.array(ids[1:])
        got = P._closest_gaps(groups, a_idx, b_idx, W)
        assert np.array_equal(got, _brute_gaps(groups, a_idx, b_idx, W))


def test_within_reach_keeps_near_pieces_and_drops_far_ones():
    H, W = 30, 52
    near_a = np.array([5 * W + 5, 5 * W + 6])
    near_b = np.array([5 * W + 8])  # 2 patches from near_a
    far = np.array([25 * W + 45])
    pairs = np.ones((3, 3), dtype=bool)
    out = P.within_reach([near_a, near_b, far], (H, W), pairs, floor=2.0, factor=0.5)
    assert out[0, 1] and out[1, 0]
    assert not out[0, 2] and not out[2, 0] and not out[1, 2]


@pytest.mark.parametrize("grid", [(30, 52), (15, 26)])
def test_touching_is_the_3x3_dilation_overlap(grid):
    H, W = grid
    rng = np.random.default_rng(H)
    for _ in range(40):
        m = int(rng.integers(1, 8))
        lab = rng.integers(1, m + 1, size=(H, W)) * (rng.random((H, W)) < rng.uniform(0.01, 0.3))
        groups = [np.flatnonzero(lab.ravel() == j) for j in range(1, m + 1)]
        masks = np.zeros((m, H * W), dtype=bool)
        for j, g in enumerate(groups):
            masks[j, g] = True
        grown = np.stack([binary_dilation(x.reshape(H, W), np.ones((3, 3), bool)).reshape(-1) for x in masks])
        want = (grown.astype(np.int32) @ masks.T.astype(np.int32)) > 0
        assert np.array_equal(P._touching(groups, grid), want)


def _bridged_pair_by_pair(groups, pairs, maps, level):
    """The map's bump test as first written: the map labelled again for every pair."""
    from scipy.ndimage import label

    out = np.zeros(pairs.shape, dtype=bool)
    for a, b in zip(*np.nonzero(np.triu(pairs, 1))):
        for cross, floor in maps:
            flat = np.asarray(cross, dtype=np.float64).reshape(-1)
            lower = min(flat[groups[a]].max(), flat[groups[b]].max())
            if not lower > floor:
                continue
            high = flat >= floor + level * (lower - floor)
            comp = label(high.reshape(cross.shape), np.ones((3, 3), bool))[0].reshape(-1)
            ca, cb = comp[groups[a][high[groups[a]]]], comp[groups[b][high[groups[b]]]]
            if np.intersect1d(ca, cb).size:
                out[a, b] = out[b, a] = True
    return out


@pytest.mark.parametrize("grid", [(15, 26), (30, 52)])
@pytest.mark.parametrize("level", [0.5, 0.9])
def test_map_bridged_labels_once_per_level_with_the_same_answer(grid, level):
    rng = np.random.default_rng(grid[0] * 10 + int(level * 10))
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W]
    maps = []
    for _ in range(2):  # blurry bumps over a floor, some merging, and a tie between two groups
        cross = 0.05 + sum(rng.uniform(0.2, 1.0) * np.exp(-((yy - rng.uniform(0, H)) ** 2 + (xx - rng.uniform(0, W)) ** 2)
                                                         / (2 * rng.uniform(1, 4) ** 2)) for _ in range(6))
        maps.append((cross, float(np.median(cross))))
    groups = []  # small blocks anywhere: on a bump, between bumps, on the floor
    for _ in range(11):
        y, x = int(rng.integers(0, H - 3)), int(rng.integers(0, W - 3))
        groups.append(((yy >= y) & (yy < y + 3) & (xx >= x) & (xx < x + 3)).reshape(-1).nonzero()[0])
    groups.append(groups[0].copy())  # two groups with the same best value: one level, labelled once
    pairs = rng.random((len(groups), len(groups))) < 0.7
    pairs = pairs | pairs.T
    got = P.map_bridged(groups, pairs, maps, level)
    want = _bridged_pair_by_pair(groups, pairs, maps, level)
    assert (got == want).all()
    assert want.any() and not want[np.triu(pairs, 1)].all()  # both answers occur


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_row_quantile_from_sorted_rows_is_the_masked_sort(q):
    """``_row_quantile`` reading the weights above each row's cut off the sorted rows gives
    what sorting the masked rows gives: ties, -inf, rows with none and all masked, NaN."""
    g = np.random.default_rng(int(q * 100))
    values = np.round(g.normal(size=(12, 400)) * 3).astype(np.float32)  # ties
    values[g.random(values.shape) < 0.05] = -np.inf
    cut = np.quantile(values, 0.6, axis=1)
    cut[3], cut[4] = np.inf, -np.inf  # a row with none, a row with all (but -inf)
    mask = values > cut[:, None]
    for vals in (values, np.where(g.random(values.shape) < 0.01, np.nan, values).astype(np.float32)):
        m = mask & ~np.isnan(vals)
        want = P._row_quantile(vals, m, q)
        got = P._row_quantile(vals, m, q, np.sort(vals, axis=1))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
