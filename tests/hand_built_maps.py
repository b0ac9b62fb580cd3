"""Hand-built self-attention heads with known group affinities, shared by the linking tests."""

import math

import numpy as np
import torch

from numina_hooks.numina.partition import _as_source


def grid_block(rows: range, cols: range, width: int) -> np.ndarray:
    """Flat indices of the pixels in ``rows`` x ``cols`` of a grid ``width`` patches wide."""
    return np.array([r * width + c for r in rows for c in cols])


def gaussian_bump(grid: tuple[int, int], cy: float, cx: float, sy: float, sx: float,
                  height: float = 1.0) -> np.ndarray:
    """float64 [H, W]: a Gaussian bump of ``height`` centred at (``cy``, ``cx``) with
    standard deviations ``sy``, ``sx`` (patches): one object's blur in a noun map."""
    ys, xs = np.mgrid[0:grid[0], 0:grid[1]].astype(np.float64)
    return height * np.exp(-0.5 * (((ys - cy) / sy) ** 2 + ((xs - cx) / sx) ** 2))


def noisy_heads(heads: list, noise: float, seed: int) -> torch.Tensor:
    """``[len(heads), N, N]`` float32: each ``[N, N]`` float64 head times per-entry log-normal
    noise ``exp(noise * z)`` (one generator seeded with ``seed``, drawn head by head), rows
    renormalised to sum to 1."""
    gen = torch.Generator().manual_seed(seed)
    noisy = [h * torch.exp(noise * torch.randn(h.shape, generator=gen, dtype=torch.float64)) for h in heads]
    return torch.stack([h / h.sum(1, keepdim=True) for h in noisy]).float()


def group_head(groups: list, logd, n: int):
    """One head ``[1, n, n]`` as a source of entries (``partition._as_source``): rows of the
    pixel group ``groups[i]`` (flat indices) attend with density ``exp(logd[i][j]) / n`` to
    group j; the rest of each of those rows is spread over the other keys, and every other
    row is uniform. Returns ``(source, groups)``."""
    logd = np.asarray(logd, dtype=np.float64)
    a = np.full((n, n), np.nan)
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            a[np.ix_(gi, gj)] = math.exp(logd[i, j]) / n
    rows = set(np.concatenate(groups).tolist())
    for r in range(n):
        if r in rows:
            free = np.isnan(a[r])
            a[r, free] = (1.0 - np.nansum(a[r])) / free.sum()
        else:
            a[r] = 1.0 / n
    assert np.allclose(a.sum(1), 1.0) and (a > 0).all()
    return _as_source(torch.from_numpy(a[None]).float()), groups


def positional_head(grid: tuple[int, int], sigma: float) -> torch.Tensor:
    """``[HW, HW]`` float64 rows: a Gaussian bump of width ``sigma`` patches around each
    query (a head that attends by position alone)."""
    ys, xs = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                            torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)
    a = torch.exp(-torch.cdist(pos, pos).square() / (2 * sigma * sigma))
    return a / a.sum(1, keepdim=True)


def instance_head(labels: np.ndarray, share: float) -> torch.Tensor:
    """``[HW, HW]`` float64 rows over the grid of ``labels`` (int [H, W], 0 background):
    foreground rows spread ``share`` evenly over their own instance and the rest over a broad
    positional bump (width 3 patches); background rows the bump alone."""
    lab = torch.from_numpy(labels.reshape(-1))
    same = ((lab[:, None] == lab[None, :]) & (lab[:, None] > 0)).double()
    own = same / same.sum(1, keepdim=True).clamp_min(1)
    base = positional_head(labels.shape, 3.0)
    return torch.where((lab > 0)[:, None], (1 - share) * base + share * own, base)


class MapView:
    """What ``LayoutReader`` reads of an attention view, over given maps: the conditional
    row's self-attention of each frame (``self_maps[f]``: ``[heads, HW, HW]``) and the nouns'
    cross-attention (``cross_maps[f]``: ``[heads, HW]``) on ``grid``; every noun reads the
    same cross maps."""

    def __init__(self, kind: str, self_maps: list, cross_maps: list, grid: tuple[int, int]):
        from types import SimpleNamespace
        self.kind, self.step, self.layer, self.transformer = kind, 0, 0, "transformer"
        self.grid = grid
        self.geometry = SimpleNamespace(frames=len(self_maps), height=grid[0], width=grid[1])
        self._self, self._cross = self_maps, cross_maps

    def rows_of(self, branch):
        return [0] if branch == "cond" else []

    def self_attention_map(self, frame, batch):
        return self._self[frame][None]

    def cross_attention_maps(self, columns, batch):
        every = torch.stack([c.reshape(-1, *self.grid) for c in self._cross], 1)  # [heads, F, H, W]
        return [every[None] for _ in columns]
