"""Countable layout of one noun in one frame (paper section 4.1, eqs. 3-4).

1. Proposals: the chosen self-attention head's map is split into contiguous regions. Two
   4-neighbouring pixels are joined when the correlation of their attention rows (each row
   centred by the mean row) is at least ``proposal_affinity``; the connected components of
   that graph are the regions. Rows of one object attend to the same object, so they
   correlate; across the seam between two touching objects they do not. Regions smaller
   than ``min_region`` patches (noise) or larger than ``max_region_fraction`` of the frame
   (background) are dropped. Every region is 4-connected by construction.
2. Focus: the cross-attention map is thresholded at ``median + peak_ratio * (peak - median)``
   (the paper's peak ratio, measured above the map's background level) and the remaining
   pixels are density-clustered (DBSCAN or HDBSCAN on patch coordinates); the clustered
   pixels (not the density noise) form the focus mask F.
3. A proposal r is an instance when |r ∩ F| / |r| >= tau. Instances are labelled 1..n in
   raster order of their first pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import NuminaConfig
from .heads import _check_grid, as_tensor, score_self_attention_heads, select_cross_attention

__all__ = ["Layout", "layout_from_attention", "layout_from_maps", "proposals_from_self_map",
           "focus_mask", "naive_cross_count"]


@dataclass
class Layout:
    """The countable layout of one noun in one frame.

    labels: int32 [H, W]; 0 background, 1..count instances (each 4-connected).
    count: number of instances.
    self_head: the self-attention head used (-1 when the map was given directly).
    cross_head: the cross-attention head used (-1 for the mean over heads or a given map).
    focus: bool [H, W], the density-clustered cross-attention foreground F.
    proposals: int32 [H, W], the contiguous regions of the self-attention map (0 = none).
    head_scores: float32 [heads] self-attention head scores, or None.
    """
    labels: np.ndarray
    count: int
    self_head: int
    cross_head: int
    focus: np.ndarray
    proposals: np.ndarray
    head_scores: np.ndarray | None = None


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _denoised_rows(a: torch.Tensor, rank: int, power_iters: int = 2) -> torch.Tensor:
    """Rows of the centred map projected on its top ``rank`` principal components
    ``[HW, rank]`` (randomized PCA): attention noise is spread over all components, the
    object structure lives in the top few."""
    x = a - a.mean(dim=0, keepdim=True)
    k = min(rank, *x.shape)
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(x @ torch.randn(x.shape[1], k, generator=gen, dtype=x.dtype)).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(x @ (x.T @ q)).Q
    b = q.T @ x  # [k, HW]
    evals, evecs = torch.linalg.eigh(b @ b.T)
    return q @ (evecs * evals.clamp_min(0).sqrt()[None, :])  # principal component scores


def proposals_from_self_map(self_map, grid: tuple[int, int],
                            config: NuminaConfig | None = None) -> np.ndarray:
    """Contiguous regions of one head's self-attention map ``[HW, HW]`` -> int32 [H, W]
    (0 = no region, 1..m regions). See the module docstring."""
    cfg = config or NuminaConfig()
    a = as_tensor(self_map, "self_map")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"self_map must be [HW, HW], got {tuple(a.shape)}")
    H, W = _check_grid(a.shape[0], grid, "proposals_from_self_map")
    n = H * W
    feats = _denoised_rows(a, cfg.proposal_rank)
    norm = feats.norm(dim=1).clamp_min(1e-12)
    ac = feats
    idx = torch.arange(n).reshape(H, W)
    pairs = []
    if W > 1:
        pairs.append((idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)))
    if H > 1:
        pairs.append((idx[:-1, :].reshape(-1), idx[1:, :].reshape(-1)))
    src_list, dst_list = [], []
    for p, q in pairs:
        corr = (ac[p] * ac[q]).sum(1) / (norm[p] * norm[q])
        keep = corr >= cfg.proposal_affinity
        src_list.append(p[keep].numpy())
        dst_list.append(q[keep].numpy())
    src = np.concatenate(src_list) if src_list else np.zeros(0, np.int64)
    dst = np.concatenate(dst_list) if dst_list else np.zeros(0, np.int64)
    comp = _components(n, src, dst)
    sizes = np.bincount(comp)
    ok = (sizes >= cfg.min_region) & (sizes <= cfg.max_region_fraction * n)
    # relabel the kept components 1..m in raster order of their first pixel
    first = np.full(len(sizes), n, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n))
    order = np.argsort(first, kind="stable")
    new = np.zeros(len(sizes), dtype=np.int32)
    kept = order[ok[order]]
    new[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return new[comp].reshape(H, W)


def focus_mask(cross_map, grid: tuple[int, int], config: NuminaConfig | None = None
               ) -> np.ndarray:
    """The focus mask F (bool [H, W]) of one cross-attention map ``[HW]`` or ``[H, W]``."""
    cfg = config or NuminaConfig()
    c = as_tensor(cross_map, "cross_map").reshape(-1)
    H, W = _check_grid(c.numel(), grid, "focus_mask")
    c = c.reshape(H, W).double().numpy()
    peak = float(c.max())
    out = np.zeros((H, W), dtype=bool)
    if peak <= 0 or float(c.min()) == peak:
        return out  # no response, or a flat map: nothing stands out
    # the ratio is taken above the map's background level (its median): a cross map with a
    # floor of clutter at 20% of its peak would otherwise be foreground everywhere
    floor = float(np.median(c))
    fg = np.argwhere(c >= floor + cfg.peak_ratio * (peak - floor))
    if len(fg) < cfg.focus_min_samples:
        return out
    if cfg.focus_clustering == "dbscan":
        from sklearn.cluster import DBSCAN
        lab = DBSCAN(eps=cfg.focus_eps, min_samples=cfg.focus_min_samples).fit_predict(fg)
    else:
        try:
            import hdbscan
        except ImportError as err:  # an optional dependency, asked for explicitly
            raise ImportError("focus_clustering='hdbscan' needs the hdbscan package "
                              "(pip install hdbscan), or use focus_clustering='dbscan'") from err
        size = max(2, cfg.focus_min_samples)
        lab = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=cfg.focus_min_samples,
                              allow_single_cluster=True).fit_predict(fg.astype(np.float64))
    keep = fg[lab >= 0]
    out[keep[:, 0], keep[:, 1]] = True
    return out


def _instances(proposals: np.ndarray, focus: np.ndarray, tau: float) -> np.ndarray:
    m = int(proposals.max())
    if m == 0:
        return np.zeros_like(proposals, dtype=np.int32)
    size = np.bincount(proposals.ravel(), minlength=m + 1)
    hit = np.bincount(proposals.ravel(), weights=focus.ravel().astype(np.float64),
                      minlength=m + 1)
    keep = np.zeros(m + 1, dtype=bool)
    keep[1:] = hit[1:] >= tau * size[1:]
    new = np.zeros(m + 1, dtype=np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[proposals]


def layout_from_maps(self_map, cross_map, grid: tuple[int, int],
                     config: NuminaConfig | None = None, *, self_head: int = -1,
                     cross_head: int = -1) -> Layout:
    """Layout from already chosen maps: ``self_map`` ``[HW, HW]`` (the frame's best
    self-attention head) and ``cross_map`` ``[HW]`` or ``[H, W]`` (the noun's map). Reuse one
    ``self_map`` for every noun of the frame. ``self_head``/``cross_head`` are recorded."""
    cfg = config or NuminaConfig()
    H, W = (int(g) for g in grid)
    proposals = proposals_from_self_map(self_map, (H, W), cfg)
    focus = focus_mask(cross_map, (H, W), cfg)
    labels = _instances(proposals, focus, cfg.tau)
    return Layout(labels=labels, count=int(labels.max()), self_head=int(self_head),
                  cross_head=int(cross_head), focus=focus, proposals=proposals)


def layout_from_attention(self_attn, cross_attn, grid: tuple[int, int],
                          config: NuminaConfig | None = None) -> Layout:
    """The countable layout of one noun in one frame.

    Args:
        self_attn: ``[heads, HW, HW]`` self-attention of the frame (rows sum to 1), tensor or
            array, at the reference step and layer.
        cross_attn: ``[heads, HW]`` or ``[heads, H, W]``: the noun's cross-attention in this
            frame (summed over the noun's token columns).
        grid: (H, W) in patches; H * W = HW.
        config: ``NuminaConfig`` (defaults if None).

    Returns:
        ``Layout`` with ``.labels`` (int32 [H, W], 0 background, 1..n instances), ``.count``,
        ``.self_head``, ``.cross_head``, ``.focus``, ``.proposals``, ``.head_scores``.

    Raises:
        ValueError: NaN/inf in the maps, or shapes that do not match ``grid``.
    """
    cfg = config or NuminaConfig()
    sa = as_tensor(self_attn, "self_attn")
    if sa.ndim != 3:
        raise ValueError(f"self_attn must be [heads, HW, HW], got shape {tuple(sa.shape)}")
    ca = as_tensor(cross_attn, "cross_attn")
    if ca.ndim == 3:
        ca = ca.reshape(ca.shape[0], -1)
    if ca.ndim != 2 or ca.shape[1] != sa.shape[1]:
        raise ValueError(f"cross_attn must be [heads, HW] or [heads, H, W] with HW="
                         f"{sa.shape[1]}, got shape {tuple(as_tensor(cross_attn, 'cross_attn').shape)}")
    import numbers

    if ca.shape[0] != sa.shape[0]:
        raise ValueError(f"self_attn has {sa.shape[0]} heads but cross_attn has {ca.shape[0]}: pass both maps "
                         "of the same layer, with the same heads")
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(g, numbers.Integral) and not isinstance(g, bool) and g >= 1 for g in grid)):
        raise ValueError(f"grid={grid!r}: expected (H, W), two ints >= 1 in patches")
    if grid[0] * grid[1] != sa.shape[1]:
        raise ValueError(f"grid={tuple(grid)} has {grid[0] * grid[1]} patches but the maps have HW={sa.shape[1]}")
    scores = score_self_attention_heads(sa, grid, gamma=cfg.gamma, block_size=cfg.block_size,
                                        stride=cfg.score_stride)
    head = int(scores.argmax())
    cross_map, cross_head = select_cross_attention(ca, cfg.cross_head)
    layout = layout_from_maps(sa[head], cross_map, grid, cfg, self_head=head,
                              cross_head=cross_head)
    layout.head_scores = scores.numpy().astype(np.float32)
    return layout


def naive_cross_count(cross_attn, grid: tuple[int, int], threshold: float = 0.5,
                      min_size: int = 2) -> int:
    """The floor to beat: 8-connected components of the head-mean cross-attention
    thresholded at ``threshold * peak`` (components under ``min_size`` patches ignored)."""
    from scipy.ndimage import label
    ca = as_tensor(cross_attn, "cross_attn")
    m = ca.reshape(ca.shape[0], -1).mean(0) if ca.ndim >= 2 else ca
    H, W = _check_grid(m.numel(), grid, "naive_cross_count")
    img = m.reshape(H, W).numpy()
    if img.max() <= 0:
        return 0
    lab, k = label(img >= threshold * img.max(), structure=np.ones((3, 3)))
    if k == 0:
        return 0
    sizes = np.bincount(lab.ravel())[1:]
    return int((sizes >= min_size).sum())
