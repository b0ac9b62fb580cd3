"""Adaptive partition of self-attention maps into regions, and head choice by containment.

The layout stage's default (see docs/method.md, "Identify, as implemented"). For every head of a frame:

0. **Rows without their own key** (``own_key="excluded"``, set on the source of entries:
   ``attention_entries``): each row's entry on the token's own key is left out and the rest
   renormalised, so that a head spending much of every row on the token itself (a per-token
   component shared by its queries and keys) reads like one that does not.
1. **Edge weights.** Each 4-neighbour pair (p, q) is weighed by the log of its symmetric
   affinity ``log(N * mean(A[a, b], A[b, a]))`` (``N = H * W``: 0 is what a uniform map gives,
   so the unit does not depend on the model's attention scale). With ``edge_band = r > 0``
   the mean runs over every pair (a, b) with ``a`` on p's side and ``b`` on q's side of the
   seam, within ``r`` patches along the seam (a (2r+1) x (2r+1) bundle of pairs): per-entry
   noise averages out while the seam itself stays where it is. Each weight is then taken
   relative to the ``edge_reference_quantile`` (0.25) of the same pair's weight over the
   heads: what the least structured heads give that pair (the positional part every head
   shares, grid-border effects included) cancels.
2. **Adaptive cut.** The map's edge weights are split in two by Otsu's threshold (the cut
   that maximises the between-class variance), so the cut follows each map's own scale;
   edges above it may join their pixels. With ``core_quantile`` (the default's 0.5) the
   regions grow from *cores*, the components of the strongest joined edges, and two cores
   never merge unless the border between their grown regions is no valley
   (``_grown_cores``): one noisy edge across the seam between two touching objects no
   longer merges them. Without it the regions are the connected components of the joined
   edges. Regions under ``min_region`` patches or over ``max_region_fraction`` of the frame
   are dropped (noise, background). With ``peak_gap`` each region is then trimmed to its
   peaks (``peak_regions``): the components of the upper class of its own edges, when that
   class stands ``peak_gap`` above the rest (a small object the frame-wide cut joined to
   the background around it).
3. **Containment lift.** For each kept region ``R``: the attention its pixels keep inside
   ``R`` (``mean_i sum_{j in R} A[i, j]``) minus what the same head keeps inside ``R`` moved
   by half its height or width (mean over the moves that stay on the grid). Attention that
   stays near the query whatever the content (positional heads, the shared component of
   every head) keeps as much in the moved copy and cancels. A region is an instance when it
   overlaps the noun's focus (``focus_overlap``) and its lift exceeds ``min_lift``; regions holding an
   attention-sink key never are. ``link_regions`` then joins a head's instances that attend
   to each other about as much as to themselves and lie within reach of each other
   (``within_reach``: the pieces of one occluded object).
4. **Head choice.** Each head scores the size-weighted mean over its instances of
   ``lift * max(contrast, 0)``, contrast being the region's mean inside edge weight minus its
   mean border edge weight (log units). The best head wins; with ``head_margin > 0`` a head
   within that fraction of the best and with more instances wins instead (a remedy for
   class-level heads whose regions hold several instances, off by default: it did not help
   on the development scenes). The remedy in use is ``finer.finer_head``: a head whose own
   instances, once linked, lie inside the winner's regions two or more to one replaces it.

All functions take ``[heads, HW, HW]`` maps, or a source of their entries
(``attention_entries``), and read only O(HW) entries per head for the edges, 64 rows for the
sinks, and blocks of sampled region members for containment: the full maps are never
multiplied. ``partition_from_qk`` reads a frame from its q/k without building its map: one
q.k pass for the softmax normalisers (and the edge entries), the rest on demand.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .attention_entries import MapSelfAttention, QKSelfAttention
from .focus import focus_bool, heads_hits, region_hits
from .order_stats import median, percentile

__all__ = ["HeadPartitions", "edge_weights", "edge_pairs", "otsu_threshold", "partition_heads",
           "partition_from_qk", "fill_lift", "link_regions", "concat_partitions",
           "focus_regions", "head_instances", "head_scores_from_focus", "focus_coverage",
           "instance_evidence",
           "choose_head", "lift_threshold", "head_lift_threshold", "background_tiles",
           "null_candidates", "peak_regions", "rim_grown", "temporal_vote", "within_reach",
           "head_region_lifts"]


class MapBridge(NamedTuple):
    """What the nouns' cross-attention says about joining a head's pieces (``_linked``;
    ``layout.bridge_option`` builds it from a config).

    maps: list of ``(map, floor)``: each responding noun's map (float [H, W]) and its floor.
    level: ``link_bridge``: a pair out of reach, or two weak pieces, join by the ratio when a
        map's pixels at or above ``floor + level * (lower - floor)`` connect them.
    veto: ``link_map_veto`` (None = no veto): a joined pair that no map connects at that
        level stays apart, a splinter touching its region excepted.
    """
    maps: list
    level: float
    veto: float | None = None


@dataclass
class HeadPartitions:
    """Regions of every head of one frame.

    regions: int32 [heads, H, W]; 0 = no kept region, 1..m_h the kept regions of head h
        (4-connected, raster order of their first pixel).
    lift: list (one per head) of float64 [m_h + 1] arrays: the containment lift of each
        region (index 0 unused): mean over its pixels of the attention kept inside the region
        minus the all-head mean of the same; -inf for a region that holds an attention sink;
        NaN until measured (``fill_lift``: only the regions a noun needs are measured).
    contrast: list (one per head) of float64 [m_h + 1] arrays: mean edge weight inside each
        region minus the mean on its border (log units).
    sink: list (one per head) of bool [m_h + 1]: the region holds an attention-sink key.
    thresholds: float32 [heads], the Otsu cut of each head's edge weights.
    sink_keys: bool [heads, N]: the attention-sink keys of each head (``sink_mass``).
    null_lift: None until measured (``fill_lift(..., null_tiles=...)``), then a list (one
        per head) of float64 [t_h] arrays, None for a head not measured: the containment
        lift of square tiles cut out of the head's background (region 0), a null for
        ``lift_threshold`` when the head has too few regions off the focus.
    cut: None, or int32 [heads, H, W]: the regions as cut, before ``peak_regions`` trimmed
        them (set when ``partition_heads`` trims); ``rim_grown`` grows a peak back inside
        its region as cut.
    """
    regions: np.ndarray
    lift: list
    contrast: list
    sink: list
    thresholds: np.ndarray
    sink_keys: np.ndarray
    null_lift: list | None = None
    cut: np.ndarray | None = None


def _grid_index(H: int, W: int) -> torch.Tensor:
    return torch.arange(H * W).reshape(H, W)


def edge_weights(self_attn, grid: tuple[int, int], band: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log symmetric affinity of every 4-neighbour pair of every head.

    ``self_attn``: ``[heads, N, N]``, N = H * W (or a source of its entries, see
    ``attention_entries``). Returns (horizontal ``[heads, H, W-1]`` for (y, x)-(y, x+1),
    vertical ``[heads, H-1, W]`` for (y, x)-(y+1, x)). ``band``: half-width of the bundle of
    pairs averaged across the seam (0 = the pair alone). One gather of
    ``2 * (2 band + 1)^2`` entries per pair; the maps themselves are not copied."""
    source = _as_source(self_attn)
    rows, cols, valid, shapes = edge_pairs(grid, band)
    if isinstance(source, MapSelfAttention):
        # the bundles lie on a few diagonals of the map (offsets within two rows of the
        # grid): those diagonals read whole, then each pair's entries copied out of them;
        # the same values, entry for entry
        offsets, places = _diagonal_places(int(grid[0]), int(grid[1]), int(band))
        vals = source.diagonals(offsets).reshape(source.heads, len(offsets) * source.n).index_select(1, places)
    else:  # the q/k source gathered its pairs already (``partition_from_qk``)
        vals = source.pairs(rows, cols)
    return _bundle_weights(vals, valid, shapes, grid, band)


@functools.lru_cache(maxsize=8)
def _diagonal_places(H: int, W: int, band: int) -> tuple[tuple[int, ...], torch.Tensor]:
    """Where ``edge_pairs``' entries lie among the diagonals of the map: (the diagonals
    ``b - a`` of its entries ``A[a, b]``, ascending, none 0; long ``[P]``, each entry's place
    ``i * N + a`` in the ``[D, N]`` rows that ``MapSelfAttention.diagonals`` gives for them).
    A placeholder entry (its bundle leaves the grid) points at place 0, row 0 of the most
    negative diagonal: off the map, so 0. Cached per grid and band: do not modify them."""
    rows, cols, valid, _ = _edge_pairs(H, W, band)
    d = (cols - rows)[valid]
    offsets = tuple(int(v) for v in torch.unique(torch.cat([d, -d])))  # a pair's entries never lie on 0
    at = torch.full((2 * H * W + 1,), -1, dtype=torch.long)
    at[torch.tensor(offsets, dtype=torch.long) + H * W] = torch.arange(len(offsets))
    places = at[(cols - rows) + H * W] * (H * W) + rows
    return offsets, torch.where(valid, places, torch.zeros_like(places))


def edge_pairs(grid: tuple[int, int], band: int = 1) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor, list]:
    """The entries ``(rows, cols)`` (long ``[P]``) that ``edge_weights`` reads, with
    ``valid`` (bool ``[P]``: False where the bundle leaves the grid; the entry read there is
    a placeholder) and the seams' shapes (horizontal first, then vertical; a seam that does
    not exist on the grid is left out). Cached per grid and band: do not modify them."""
    return _edge_pairs(int(grid[0]), int(grid[1]), int(band))


@functools.lru_cache(maxsize=8)
def _edge_pairs(H: int, W: int, band: int):
    idx = _grid_index(H, W)
    sides = []
    if W > 1:
        sides.append((idx[:, :-1], idx[:, 1:], 0))  # seam along the rows (dim 0)
    if H > 1:
        sides.append((idx[:-1, :], idx[1:, :], 1))
    rows, cols, valid, shapes = [], [], [], []
    for a_side, b_side, along in sides:
        for s in range(-band, band + 1):
            ia = _shifted(a_side, s, along)
            for t in range(-band, band + 1):
                ib = _shifted(b_side, t, along)
                ok = (ia >= 0) & (ib >= 0)
                a, b = ia.clamp_min(0).reshape(-1), ib.clamp_min(0).reshape(-1)
                rows += [a, b]
                cols += [b, a]
                valid += [ok.reshape(-1)] * 2
        shapes.append(a_side.shape)
    if not rows:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0, dtype=torch.bool), shapes
    return torch.cat(rows), torch.cat(cols), torch.cat(valid), shapes


def _bundle_weights(vals: torch.Tensor, valid: torch.Tensor, shapes: list,
                    grid: tuple[int, int], band: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries ``vals`` ``[heads, P]`` of ``edge_pairs`` -> (horizontal, vertical) log
    affinities (see ``edge_weights``)."""
    H, W = grid
    n = H * W
    h = vals.shape[0]
    ok_all = valid.to(vals.dtype)
    vals = vals * ok_all  # [h, k * pairs]
    k = 2 * (2 * band + 1) ** 2
    out, start = [], 0
    for shape in shapes:
        m = shape[0] * shape[1]
        block = vals[:, start:start + k * m].reshape(h, k, m)
        count = ok_all[start:start + k * m].reshape(k, m).sum(0).clamp_min(1)
        out.append(torch.log(block.sum(1) / count * n + 1e-12).reshape(h, *shape))
        start += k * m
    empty_h, empty_v = torch.zeros(h, H, 0), torch.zeros(h, 0, W)
    horiz = out.pop(0) if W > 1 else empty_h
    vert = out.pop(0) if H > 1 else empty_v
    return horiz, vert


def _as_source(self_attn, exclude_own_key: bool = False):
    """A ``[heads, N, N]`` tensor as a ``MapSelfAttention`` (rows without their own key with
    ``exclude_own_key``); a source as it is."""
    if isinstance(self_attn, torch.Tensor):
        return MapSelfAttention(self_attn, exclude_own_key=exclude_own_key)
    return self_attn


def partition_from_qk(q: torch.Tensor, k: torch.Tensor, scale: float, grid: tuple[int, int], *,
                      band: int = 1, name: str = "self-attention", exclude_own_key: bool = False,
                      **kwargs
                      ) -> tuple[HeadPartitions, QKSelfAttention]:
    """``partition_heads`` of ``softmax(q k^T * scale)`` computed from one frame's ``q``, ``k``
    ``[heads, N, d]`` without building the map (on their device). Returns the partitions and
    the q/k source, to pass to ``fill_lift`` in place of the map. ``exclude_own_key``: rows
    without their own key (``attention_entries``). ``kwargs``: those of
    ``partition_heads``. ValueError (naming ``name``) when the map would be constant."""
    n = grid[0] * grid[1]
    if q.dim() != 3 or q.shape[1] != n:
        raise ValueError(f"q has shape {tuple(q.shape)}; expected [heads, {n}, d] for the "
                         f"grid {grid[0]}x{grid[1]}")
    rows, cols, _, _ = edge_pairs(grid, band)
    source = QKSelfAttention(q, k, scale, pairs=(rows, cols), name=name,
                             exclude_own_key=exclude_own_key)
    return partition_heads(source, grid, band=band, **kwargs), source


def _shifted(index: torch.Tensor, offset: int, along: int) -> torch.Tensor:
    """``index`` shifted by ``offset`` along dim ``along``; -1 where it leaves the grid."""
    if offset == 0:
        return index
    out = torch.full_like(index, -1)
    L = index.shape[along]
    if abs(offset) >= L:
        return out
    if along == 0:
        if offset > 0:
            out[:-offset] = index[offset:]
        else:
            out[-offset:] = index[:offset]
    else:
        if offset > 0:
            out[:, :-offset] = index[:, offset:]
        else:
            out[:, -offset:] = index[:, :offset]
    return out


def column_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q, dim=0)`` (linear interpolation) of a float ``[rows, E]``
    tensor, bit for bit: the columns sorted by numpy (at 12 x 3068 edge weights, 0.3x the
    time of torch's quantile, which sorts along the short dimension), then the two order
    statistics around rank ``q * (rows - 1)`` blended by ``torch.lerp`` as torch blends them.
    Columns with NaN, and ``q`` outside [0, 1], go to ``torch.quantile`` itself."""
    rows = values.shape[0]
    if rows < 2 or not 0.0 <= q <= 1.0 or bool(torch.isnan(values).any()):
        return torch.quantile(values, q, dim=0)
    srt = torch.from_numpy(np.sort(values.detach().cpu().numpy(), axis=0))
    rank = torch.tensor(q, dtype=values.dtype) * (rows - 1)  # as torch computes it
    below = int(torch.floor(rank))
    above = int(torch.ceil(rank))
    return torch.lerp(srt[below], srt[above], rank - below).to(values.device)


def otsu_threshold(values: torch.Tensor, sorted_rows: np.ndarray | None = None) -> torch.Tensor:
    """Otsu's threshold of each row of ``values`` ``[heads, E]`` -> ``[heads]``: the cut
    between sorted values that maximises the between-class variance (midpoint of the two
    values it falls between). Rows with fewer than 2 distinct values get +inf (no edge
    passes). ``sorted_rows``: ``np.sort(values.numpy(), axis=1)`` when the caller has it."""
    h, e = values.shape
    if e < 2:
        return torch.full((h,), float("inf"), dtype=values.dtype)
    if sorted_rows is None:
        sorted_rows = np.sort(values.detach().cpu().numpy(), axis=1)
    # numpy's sort (3x torch's here) in the values' own precision, then widened: the same
    # order and values (float32 to float64 is exact), in about 0.2x the time of sorting float64
    v = torch.from_numpy(sorted_rows.astype(np.float64))
    csum = v.cumsum(1)
    total = csum[:, -1:]
    k = torch.arange(1, e, dtype=v.dtype)  # size of the lower class
    lo_mean = csum[:, :-1] / k
    hi_mean = (total - csum[:, :-1]) / (e - k)
    between = k * (e - k) * (lo_mean - hi_mean).square()
    between = torch.where(v[:, 1:] > v[:, :-1], between, torch.full_like(between, -1.0))
    best = between.argmax(1)
    thr = 0.5 * (v.gather(1, best[:, None]) + v.gather(1, best[:, None] + 1))[:, 0]
    flat = between.amax(1) <= 0
    return torch.where(flat, torch.full_like(thr, float("inf")), thr).to(values.dtype)


def _components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


#: ``_grid_components``: 4-connectivity within each head's plane, none across heads
_PLANE_FOUR = np.zeros((3, 3, 3), dtype=bool)
_PLANE_FOUR[1] = [[False, True, False], [True, True, True], [False, True, False]]


def _grid_components(join: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Components of every head's grid graph whose edges are the 4-neighbour pairs marked in
    ``join`` (bool [heads, E], the pairs in ``partition_heads``' order: the H * (W - 1)
    horizontal pairs row by row, then the (H - 1) * W vertical ones): int [heads * N], one
    id per component (any ids; head ``k``'s pixels at ``k * N ...``), the same classes as
    ``_components`` of those edges.

    The graph drawn as an image at twice the resolution, a pixel node at every even place
    and an edge node between two pixel nodes where their pair is joined, labelled by
    ``scipy.ndimage.label`` with 4-connectivity in each head's plane: two pixels connect
    exactly through joined pairs. 0.5x the time of the sparse-graph search for a frame's 12
    heads at 30x52."""
    from scipy.ndimage import label

    H, W = (int(g) for g in grid)
    h = join.shape[0]
    img = np.zeros((h, 2 * H - 1, 2 * W - 1), dtype=bool)
    img[:, ::2, ::2] = True
    img[:, ::2, 1::2] = join[:, :H * (W - 1)].reshape(h, H, W - 1)
    img[:, 1::2, ::2] = join[:, H * (W - 1):].reshape(h, H - 1, W)
    return label(img, _PLANE_FOUR)[0][:, ::2, ::2].reshape(-1)


def _sparse_components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Components of a graph with few edges among many nodes: per node the smallest node id
    of its component (an isolated node keeps its own). Only the nodes on an edge enter the
    component search."""
    out = np.arange(n_nodes)
    if len(src) == 0:
        return out
    if len(src) <= FEW_EDGES:
        spread = _smallest_ids(out.copy(), np.asarray(src), np.asarray(dst))
        if spread is not None:
            return spread
    nodes, inv = _unique_small(np.concatenate([src, dst]))  # node ids < n_nodes
    comp = _components(len(nodes), inv[:len(src)], inv[len(src):])
    first = np.full(comp.max() + 1, n_nodes, dtype=np.int64)
    np.minimum.at(first, comp, nodes)
    out[nodes] = first[comp]
    return out


#: at most this many edges: ``_sparse_components`` spreads the smallest id along the edges
#: (``_smallest_ids``) instead of building a sparse graph for scipy, whose set-up outweighs
#: the search when a frame's grown regions join across a few borders
FEW_EDGES = 256


#: rounds ``_smallest_ids`` may take before the caller hands the graph to scipy (a long chain
#: of edges in scrambled order needs more: 256 of them took up to 1.2 ms, scipy 0.15 ms)
SPREAD_ROUNDS = 8


def _smallest_ids(ids: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """``ids`` (int [n], ``ids[i] = i``, modified) with every node on an edge (``src`` to
    ``dst``, int [E]) given the smallest id of its component: each round every edge's two
    ends take the smaller of their ids, then every node the id of the node its id names
    (pointer jumping), until every edge's ends agree; None when that takes more than
    ``SPREAD_ROUNDS`` rounds."""
    for _ in range(SPREAD_ROUNDS):
        low = np.minimum(ids[src], ids[dst])
        np.minimum.at(ids, src, low)
        np.minimum.at(ids, dst, low)
        ids = ids[ids]
        if np.array_equal(ids[src], ids[dst]):
            # a component's ids are then one, that of a node of it no larger than its
            # smallest node, whose own id could not fall: the smallest node's id
            return ids
    return None


def _sorted_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of equal values of sorted ``keys`` (int [K], K > 0): (each run's key, its
    start, its length), int64 [R] each: ``np.unique(keys, return_index=True,
    return_counts=True)`` without a sort."""
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    start = np.flatnonzero(new)
    return keys[start], start, np.diff(np.append(start, len(keys)))


def _unique_small(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for non-negative int ``keys`` [K] whose
    largest is a small multiple of K (ids of a frame's regions): a count per key value
    instead of a sort. Returns (the distinct keys ascending, int64 [D]; each key's place
    among them, int64 [K])."""
    present = np.bincount(keys) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[keys]


def _unique_first_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(keys, return_index=True, return_inverse=True, return_counts=True)`` for
    non-negative int ``keys`` [K]: (distinct keys ascending, the place of each one's first
    occurrence, each key's place among them, their counts), all int64. Keys of a range up
    to ``UNIQUE_BY_COUNT`` times their number are counted per value instead of sorted."""
    if len(keys) == 0 or int(keys.max()) >= UNIQUE_BY_COUNT * len(keys):
        return np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    counts = np.bincount(keys)
    present = counts > 0
    inv = (np.cumsum(present) - 1)[keys]
    first = np.full(int(present.sum()), len(keys), dtype=np.int64)
    np.minimum.at(first, inv, np.arange(len(keys)))
    return np.flatnonzero(present), first, inv, counts[present]


#: widest range of keys, as a multiple of their number, that ``_unique_first_counts``
#: counts per value (a frame's region ids per head: 12 heads' component ids at 30x52 span
#: 12x the pixels)
UNIQUE_BY_COUNT = 16


def _relabel(comp: np.ndarray, keep_sizes: tuple[float, float]) -> np.ndarray:
    """Components of one head ``[N]`` -> int32 [N] with kept components (size in
    ``keep_sizes``) 1..m in raster order of their first pixel, 0 elsewhere."""
    return _ids_per_row(comp.reshape(1, -1), keep_sizes, zero_is_region=True).reshape(comp.shape)


def _ids_per_row(labels: np.ndarray, keep_sizes: tuple[float, float] | None = None,
                 zero_is_region: bool = False) -> np.ndarray:
    """Every row of ``labels`` (int [h, N], non-negative) renumbered at once: int32 [h, N],
    each row's kept labels 1..m in raster order of their first pixel, 0 elsewhere. A label
    is kept when its size in its row lies in ``keep_sizes`` (None: any size) and, unless
    ``zero_is_region`` (component ids, where 0 is a component too), it is not 0. One sort of
    the ``h * N`` labels for every row (``_relabel`` and ``_renumbered`` are its one-row
    cases)."""
    h, n = labels.shape
    lab = labels.astype(np.int64, copy=False)
    span = int(lab.max()) + 1 if lab.size else 1
    key = (np.arange(h, dtype=np.int64)[:, None] * span + lab).reshape(-1)
    uniq, first, inv, size = _unique_first_counts(key)
    keep = np.ones(len(uniq), dtype=bool) if zero_is_region else uniq % span != 0
    if keep_sizes is not None:
        keep &= (size >= keep_sizes[0]) & (size <= keep_sizes[1])
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(first[kept], kind="stable")]  # by first pixel: rows in order
    row = first[kept] // n
    new = np.zeros(len(uniq), dtype=np.int32)
    new[kept] = np.arange(len(kept)) - np.searchsorted(row, row, side="left") + 1
    return new[inv.reshape(-1)].reshape(h, n)


def partition_heads(self_attn, grid: tuple[int, int], *, band: int = 1,
                    min_region: int = 4, max_region_fraction: float = 0.5,
                    reference_quantile: float | None = 0.25,
                    sink_mass: float = 0.05, core_quantile: float | None = None,
                    peak_gap: float | None = None) -> HeadPartitions:
    """Regions and containment lift of every head of one frame.

    ``self_attn``: ``[heads, N, N]`` float tensor (rows sum to 1), or a source of its
    entries (``attention_entries``; see ``partition_from_qk``). ``reference_quantile``:
    each pair's weight is taken relative to this quantile of the same pair's weight over the
    heads (what the least structured heads give it: the shared positional part, border
    effects included); None = absolute weights. ``sink_mass``: a key that receives this
    share of the average row is an attention sink. Lifts are left unmeasured (NaN): see
    ``fill_lift``. ``peak_gap``: regions trimmed to their peaks (``peak_regions``); None =
    regions as cut. See the module docstring. Half-precision maps are read in float32.
    """
    if isinstance(self_attn, torch.Tensor) and self_attn.dtype in (torch.float16, torch.bfloat16):
        self_attn = self_attn.float()
    source = _as_source(self_attn)
    h, n = source.heads, source.n
    H, W = grid
    if n != H * W:
        raise ValueError(f"self_attn has {n} tokens per frame; the grid {H}x{W} has {H * W}")
    # the sink keys first, right after the map's checks (the same result; read after the
    # diagonals and the cut they took 1.4 ms of a frame at 30x52, read here 0.9 ms)
    sinks = _sink_keys(source, sink_mass)
    horiz, vert = edge_weights(source, (H, W), band)
    values = torch.cat([horiz.reshape(h, -1), vert.reshape(h, -1)], 1)
    if reference_quantile is not None and h > 2:
        values = values - column_quantile(values, reference_quantile)[None, :]
    # each head's edge weights sorted once: for its Otsu cut and for the core quantile of the
    # weights above it (``_grown_cores``), a suffix of the same sorted row
    sorted_rows = np.sort(values.numpy(), axis=1)
    thr = otsu_threshold(values, sorted_rows)
    idx = _grid_index(H, W)
    ph = torch.cat([idx[:, :-1].reshape(-1), idx[:-1, :].reshape(-1)])
    qh = torch.cat([idx[:, 1:].reshape(-1), idx[1:, :].reshape(-1)])
    offsets = (np.arange(h) * n)[:, None]  # head k's pixels are nodes k * n ...
    gp = (ph.numpy()[None, :] + offsets).reshape(-1)
    gq = (qh.numpy()[None, :] + offsets).reshape(-1)
    join = (values > thr[:, None]).numpy().reshape(-1)
    if core_quantile is None:
        comp = _grid_components(join.reshape(h, -1), (H, W)).reshape(h, n)
    else:
        comp = _grown_cores(values.numpy(), thr.numpy(), gp, gq, join, (H, W), core_quantile,
                            min_region, sorted_rows).reshape(h, n)
    hi = max(1, int(np.floor(max_region_fraction * n)))
    regions = _ids_per_row(comp, (min_region, hi), zero_is_region=True)
    edge_args = (values.numpy(), ph.numpy(), qh.numpy())
    cut = None
    if peak_gap is not None:
        cut = regions.reshape(h, H, W).astype(np.int32)
        regions = peak_regions(regions, *edge_args, min_region, peak_gap)
    contrast = _region_contrast(regions, *edge_args)
    sink_region = []
    for k in range(h):
        flag = np.zeros(int(regions[k].max()) + 1, dtype=bool)
        if sinks[k].any():  # a region holding a sink key is the sink's halo, not an object
            flag[regions[k][sinks[k]]] = True
            flag[0] = False
        sink_region.append(flag)
    return HeadPartitions(regions=regions.reshape(h, H, W).astype(np.int32),
                          lift=[np.full(len(c), np.nan) for c in contrast],
                          contrast=contrast, sink=sink_region,
                          thresholds=thr.numpy().astype(np.float32), sink_keys=sinks, cut=cut)


def _grown_cores(values: np.ndarray, thr: np.ndarray, gp: np.ndarray, gq: np.ndarray,
                 join: np.ndarray, grid: tuple[int, int], core_quantile: float,
                 min_region: int, sorted_rows: np.ndarray | None = None) -> np.ndarray:
    """Regions of every head in which touching objects stay apart: component ids
    ``[heads * n]`` (head ``k``'s pixels at ``k * n ...``).

    ``values`` [heads, E]: the edge weights of the pixel pairs (``gp``, ``gq``), both
    [heads * E] node ids (head ``k``'s pixels at ``k * n ...``); ``thr`` [heads]: each head's
    cut; ``join`` bool [heads * E]: the pairs above it. A *core* is a component, of at least ``min_region`` pixels, of
    the edges above the ``core_quantile`` of the head's joined edge weights (those above
    ``thr``). Pixels joined to a core grow onto it, each round every unlabelled pixel taking
    the label of its most strongly joined labelled neighbour; what no core reaches keeps its
    own components. Two grown regions that touch become one again unless the edges along
    their shared border are, on average, at or below the cut: a split stands only where the
    border is a valley (the seam between two objects), not where a region of even edges
    (a background) was cut by the core quantile alone."""
    h, e = values.shape
    n = int(grid[0]) * int(grid[1])
    flat_w = values.reshape(-1)
    joined = np.flatnonzero(join)  # one pass over the mask for the three arrays
    a, b, w = gp[joined], gq[joined], flat_w[joined]
    hi = _row_quantile(values, join.reshape(h, e), core_quantile, sorted_rows)
    comp = _grid_components(join.reshape(h, e) & (values >= hi[:, None]), grid)  # the cores' edges
    size = np.bincount(comp)
    label = np.where(size[comp] >= min_region, comp + 1, 0)
    # growth: directed edges into unlabelled pixels; of several assignments to one pixel in
    # a round the strongest is kept (among equal weights the later edge). Nothing is sorted:
    # each round's strongest weight per pixel, then the last edge that has it, by two
    # unbuffered maxima over the frontier (the grown cores of 64 recorded frames at 30x52
    # in 0.88x the time of sorting each frontier, the same regions)
    frm, to, wt = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([w, w])
    open_ = np.flatnonzero(label[to] == 0)
    frm, to, wt = frm[open_], to[open_], wt[open_]
    best_w = np.full(h * n, -np.inf, dtype=wt.dtype)
    best_at = np.full(h * n, -1, dtype=np.int64)
    while True:
        step = np.flatnonzero(label[frm] > 0)  # every edge left leads into an unlabelled pixel
        if not len(step):
            break
        into = to[step]
        np.maximum.at(best_w, into, wt[step])
        top = wt[step] == best_w[into]
        np.maximum.at(best_at, into[top], step[top])
        dst = into[top]
        label[dst] = label[frm[best_at[dst]]]
        best_w[into] = -np.inf
        best_at[into] = -1
        alive = np.flatnonzero(label[to] == 0)  # edges into labelled pixels never step again: dropped
        frm, to, wt = frm[alive], to[alive], wt[alive]
    rest = label == 0
    grown_max = label.max()
    rest_edges = (join & rest[gp] & rest[gq]).reshape(h, e)  # joined pairs no core reached
    label = np.where(rest, _grid_components(rest_edges, grid) + grown_max + 1, label)
    # borders between grown regions (the rest was never split): join back the ones that are
    # not valleys
    la, lb = label[gp], label[gq]
    border = (la != lb) & (la <= grown_max) & (lb <= grown_max)
    if border.any():
        lo, up = np.minimum(la[border], lb[border]), np.maximum(la[border], lb[border])
        key = lo.astype(np.int64) * (grown_max + 1) + up
        uniq, inv = np.unique(key, return_inverse=True)
        mean = np.bincount(inv, weights=flat_w[border]) / np.bincount(inv)
        cut = np.bincount(inv, weights=np.repeat(thr, e)[border]) / np.bincount(inv)
        even = mean > cut
        if even.any():
            label = _sparse_components(int(label.max()) + 1, uniq[even] // (grown_max + 1),
                                       uniq[even] % (grown_max + 1))[label]
    return label


#: a region is trimmed to its peaks only when they hold at most this share of its pixels
#: (``peak_regions``): a region that is nearly all peak is one object already
PEAK_SHARE = 0.8


def peak_regions(regions: np.ndarray, values: np.ndarray, p: np.ndarray, q: np.ndarray,
                 min_region: int, gap: float, share: float = PEAK_SHARE) -> np.ndarray:
    """Regions trimmed to their peaks: small objects stop carrying their surroundings.

    A head's Otsu cut is set by the whole frame's edges. When its objects are small, their
    edges are a tiny class and the cut falls inside the background's own spread: background
    pixels join each other and the object, whose region becomes several times its size, keeps
    little attention inside itself on average (its lift is diluted by the background rows)
    and overlaps the noun's focus by a small share. Here each region's inside edges are split
    again by their own Otsu cut; when the two classes' means differ by at least ``gap`` (log
    units: ``log 2`` = the upper class's pairs attend to each other twice as densely) and the
    components of the upper class's edges (at least ``min_region`` patches each) hold at
    most ``share`` of the region, those components replace it (two objects joined by
    background become two regions) and the rest of it is no region. A region of even edges
    (one object, or plain background) has no such gap and stays as it is.

    Args:
        regions: int [heads, N], 0 = no region, 1..m_h per head.
        values: float [heads, E] edge weights of the pixel pairs (``p``, ``q``: int [E]).
        min_region: smallest peak kept (patches).
        gap: smallest difference of the two classes' mean edge weights that trims a region.
        share: largest share of a region its peaks may hold.

    Returns:
        int32 [heads, N], each head's regions renumbered 1..m in raster order of their first
        pixel.
    """
    h, n = regions.shape
    lp, lq = regions[:, p], regions[:, q]  # [heads, E]
    inside = (lp == lq) & (lp > 0)
    head_of, edge = np.nonzero(inside)
    if len(edge) == 0:
        return regions.astype(np.int32, copy=False)
    key = head_of.astype(np.int64) * (n + 1) + lp[head_of, edge]
    groups, gid = _unique_small(key)
    vals = values[head_of, edge].astype(np.float64)
    thr, lo, hi = _group_otsu(vals, gid, len(groups))
    count = np.bincount(gid, minlength=len(groups))
    ok = (count >= 2 * min_region) & np.isfinite(thr) & (hi - lo >= gap)
    up = ok[gid] & (vals > np.where(ok, thr, np.inf)[gid])
    if not up.any():
        return regions.astype(np.int32, copy=False)
    a = head_of[up] * n + p[edge[up]]
    b = head_of[up] * n + q[edge[up]]
    root = _sparse_components(h * n, a, b)
    nodes = np.unique(np.concatenate([a, b]))
    peak_of = root[nodes]
    roots, size = np.unique(peak_of, return_counts=True)
    big = roots[size >= min_region]
    nodes = nodes[np.isin(peak_of, big)]
    flat = regions.reshape(-1)
    node_group = np.searchsorted(groups, (nodes // n) * (n + 1) + flat[nodes])
    held = np.bincount(node_group, minlength=len(groups))
    fg = np.nonzero(flat)[0]
    fg_key = fg // n * (n + 1) + flat[fg]
    fg_group = np.minimum(np.searchsorted(groups, fg_key), len(groups) - 1)
    grouped = groups[fg_group] == fg_key  # regions without inside edges are in no group
    region_size = np.bincount(fg_group[grouped], minlength=len(groups))
    trim = ok & (held > 0) & (held <= share * region_size)
    if not trim.any():
        return regions.astype(np.int32, copy=False)
    out = flat.astype(np.int64)
    out[fg[grouped & trim[fg_group]]] = 0
    nodes = nodes[trim[node_group]]
    # peaks get ids above every head's old ones (any order: renumbered below)
    out[nodes] = int(regions.max()) + 1 + np.unique(root[nodes], return_inverse=True)[1]
    return _ids_per_row(out.reshape(h, n))


def _group_otsu(values: np.ndarray, group: np.ndarray, n_groups: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Otsu's cut of each group of ``values`` (float [E]; ``group`` int [E] in 0..G-1, every
    group non-empty): (cut, mean of the lower class, mean of the upper class), float64 [G]
    each; NaN for a group with fewer than 2 distinct values."""
    span = float(values.max() - values.min())
    # one sort by group, then value: the values mapped into [0, 0.5) keep their order (the
    # order among equal values does not matter: cuts fall between distinct values only)
    order = np.argsort(group + (values - values.min()) / (2 * span + 1e-300))
    v, g = values[order], group[order]
    count = np.bincount(g, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    csum = np.cumsum(v)
    before = np.where(start > 0, csum[np.maximum(start - 1, 0)], 0.0)  # sum of earlier groups
    total = np.bincount(g, weights=v, minlength=n_groups)
    k = (np.arange(len(v)) - start[g] + 1).astype(np.float64)  # lower class size, cut after v
    size = count[g]
    lo_sum = csum - before[g]
    nxt = np.append(v[1:], np.inf)
    valid = (k < size) & (nxt > v)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo_mean = lo_sum / k
        hi_mean = (total[g] - lo_sum) / np.maximum(size - k, 1)
        between = np.where(valid, k * (size - k) * (lo_mean - hi_mean) ** 2, -1.0)
    best = np.maximum.reduceat(between, start)
    at = np.where((between == best[g]) & (between > 0), np.arange(len(v)), len(v))
    pick = np.minimum.reduceat(at, start)  # the first best cut of each group
    cut, lo, hi = (np.full(n_groups, np.nan) for _ in range(3))
    has = pick < len(v)
    i = pick[has]
    cut[has] = 0.5 * (v[i] + v[i + 1])
    lo[has], hi[has] = lo_mean[i], hi_mean[i]
    return cut, lo, hi


def _row_quantile(values: np.ndarray, mask: np.ndarray, q: float,
                  sorted_rows: np.ndarray | None = None) -> np.ndarray:
    """The ``q`` quantile (linear interpolation) of each row's masked entries of ``values``
    [rows, E] -> [rows]; +inf for a row with none.

    ``sorted_rows``: ``np.sort(values, axis=1)``, given where ``mask`` is each row's values
    above a cut (``_grown_cores``: the joined edges) and ``values`` has no NaN: the masked
    entries, in order, are then the last ``count`` of the sorted row, read there instead of
    sorting again (0.3 ms of a frame's layout at 30x52, 2-core AMD EPYC, one thread)."""
    count = mask.sum(1)
    pos = q * np.maximum(count - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    up = np.minimum(lo + 1, np.maximum(count - 1, 0))
    rows = np.arange(len(values))
    if sorted_rows is not None and not np.isnan(sorted_rows[:, -1:]).any():  # NaN sorts last
        # the k-th masked entry is the sorted row's (E - count + k)-th (a row with none: any
        # entry, its quantile is +inf below)
        skip = np.minimum(values.shape[1] - count, values.shape[1] - 1)
        a, b = sorted_rows[rows, skip + lo], sorted_rows[rows, np.minimum(skip + up, values.shape[1] - 1)]
    else:
        srt = np.sort(np.where(mask, values, np.inf), axis=1)
        a, b = srt[rows, lo], srt[rows, up]
    with np.errstate(invalid="ignore"):  # inf - inf in a row with no entries
        out = a + (pos - lo) * np.where(up > lo, b - a, 0.0)
    return np.where(count > 0, out, np.inf)


def concat_partitions(parts: list) -> HeadPartitions:
    """Several ``HeadPartitions`` of one frame (one per block read) as one, their heads side by
    side in the order given: head ``k`` of the second block becomes ``heads_of_first + k``.
    Every part must be on the same grid."""
    if len(parts) == 1:
        return parts[0]
    grids = {p.regions.shape[1:] for p in parts}
    if len(grids) != 1:
        raise ValueError(f"concat_partitions: the parts have grids {sorted(grids)}; expected one grid")
    return HeadPartitions(regions=np.concatenate([p.regions for p in parts]),
                          lift=[x for p in parts for x in p.lift],
                          contrast=[x for p in parts for x in p.contrast],
                          sink=[x for p in parts for x in p.sink],
                          thresholds=np.concatenate([p.thresholds for p in parts]),
                          sink_keys=np.concatenate([p.sink_keys for p in parts]),
                          null_lift=None if all(p.null_lift is None for p in parts)
                          else [x for p in parts for x in (p.null_lift or [None] * len(p.lift))],
                          cut=None if all(p.cut is None for p in parts)
                          else np.concatenate([p.regions if p.cut is None else p.cut for p in parts]))


def fill_lift(parts: HeadPartitions, self_attn, wanted: list | None = None,
              sample: int = 16, min_member_lift: float | None = None,
              null_tiles=False) -> None:
    """Compute the containment lift of the ``wanted`` regions (a list, one bool
    [m_h + 1] array per head; None = every region) into ``parts.lift`` in place. Regions
    already measured are not measured again; sink regions get -inf. ``self_attn``: the
    frame's ``[heads, N, N]`` map or a source of its entries (``partition_from_qk``).

    ``min_member_lift``: a region whose lift without each row's own entry (what its rows
    keep on its *other* members beyond a moved copy) is at most this gets -inf too: its
    rows keep attention on themselves, not on each other, so it is no group of tokens.
    A head whose queries and keys share a per-token component (texture) gives every token
    a spike on its own key, and a splinter of a few patches then shows as much lift as a
    whole object. None = no such check.

    ``null_tiles``: also measure, once per head, the lift of square tiles of the head's
    background into ``parts.null_lift`` (``background_tiles``; the same blocks read, the same
    member check): True for every head, or a bool [heads] array (the others get no tiles
    now; a later call may ask for theirs)."""
    h = parts.regions.shape[0]
    flat_regions = parts.regions.reshape(h, -1)
    todo = np.zeros_like(flat_regions)
    for k in range(h):
        want = np.ones(len(parts.lift[k]), dtype=bool) if wanted is None else wanted[k].copy()
        want[0] = False
        want &= np.isnan(parts.lift[k]) & ~parts.sink[k]
        parts.lift[k][parts.sink[k]] = -np.inf
        todo[k] = np.where(want[flat_regions[k]], flat_regions[k], 0)
    tiles_from = None
    tile_heads = np.broadcast_to(np.asarray(null_tiles, dtype=bool), (h,)).copy()
    if parts.null_lift is not None:  # each head's tiles are measured once
        tile_heads &= np.array([x is None for x in parts.null_lift])
    if tile_heads.any():
        # tile ids follow each head's region ids (m_h + 1, m_h + 2, ...)
        tiles_from = np.array([len(x) for x in parts.lift])
        tiles = background_tiles(parts, heads=tile_heads)
        todo = np.where(tiles > 0, tiles + tiles_from[:, None] - 1, todo)
    if not todo.any():
        if tiles_from is not None:
            _set_null_lift(parts, tile_heads, lambda k: np.zeros(0))
        return
    measured, members = _containment_lift(_as_source(self_attn), todo, sample, parts.regions.shape[1:])
    for k in range(h):
        ids = np.flatnonzero(np.bincount(todo[k]))  # the ids measured, ascending
        ids = ids[ids > 0]
        lift = measured[k][ids]
        if min_member_lift is not None:
            lift = np.where(members[k][ids] > min_member_lift, lift, -np.inf)
        if tiles_from is None:
            parts.lift[k][ids] = lift
            continue
        region = ids < tiles_from[k]
        parts.lift[k][ids[region]] = lift[region]
    if tiles_from is not None:
        _set_null_lift(parts, tile_heads, lambda k: _tile_lifts(measured[k], members[k], tiles_from[k],
                                                                min_member_lift))


def _set_null_lift(parts: HeadPartitions, heads: np.ndarray, lifts) -> None:
    """``parts.null_lift[k] = lifts(k)`` for the heads ``k`` marked in ``heads`` (bool
    [heads]); the others keep theirs (None: not measured)."""
    if parts.null_lift is None:
        parts.null_lift = [None] * len(heads)
    for k in np.flatnonzero(heads):
        parts.null_lift[k] = lifts(k)


def _tile_lifts(measured: np.ndarray, members: np.ndarray, first: int,
                min_member_lift: float | None) -> np.ndarray:
    """float64 [t]: the finite lifts of the tiles with ids ``first``.. of one head (``fill_lift``)."""
    lift = measured[first:]
    if min_member_lift is not None:
        lift = np.where(members[first:] > min_member_lift, lift, -np.inf)
    return lift[np.isfinite(lift)]


#: most tiles of a head's background measured for its null (``background_tiles``)
NULL_TILES = 16


def background_tiles(parts: HeadPartitions, most: int = NULL_TILES, heads=None) -> np.ndarray:
    """int [heads, N]: per head (of ``heads``, a bool [heads] array; None = every head; the
    others get none), up to ``most`` square tiles (ids 1..t) laid on a grid
    aligned to the frame and wholly inside the head's background (region 0, no attention-sink
    key), evenly spaced among those that fit; 0 elsewhere. The tile side is the square root of
    the head's median region size (at least 2 patches; 2 when the head has no region): pieces
    of the background as large as the head's own regions, a null for what a region keeps
    inside itself by chance."""
    h, H, W = parts.regions.shape
    out = np.zeros((h, H * W), dtype=np.int64)
    for k in range(h):
        if heads is not None and not heads[k]:
            continue
        size = np.bincount(parts.regions[k].reshape(-1))[1:]
        size = size[size > 0]
        side = max(2, int(round(float(np.sqrt(np.median(size)))))) if len(size) else 2
        free = (parts.regions[k] == 0) & ~parts.sink_keys[k].reshape(H, W)
        ny, nx = H // side, W // side
        if ny == 0 or nx == 0:
            continue
        blocks = free[:ny * side, :nx * side].reshape(ny, side, nx, side).all(axis=(1, 3))
        fit = np.flatnonzero(blocks)
        if len(fit) == 0:
            continue
        pick = fit[np.unique(np.round(np.linspace(0, len(fit) - 1, min(most, len(fit)))).astype(np.int64))]
        lab = np.zeros((H, W), dtype=np.int64)
        for t, b in enumerate(pick, start=1):
            y, x = divmod(int(b), nx)
            lab[y * side:(y + 1) * side, x * side:(x + 1) * side] = t
        out[k] = lab.reshape(-1)
    return out


def link_regions(parts: HeadPartitions, self_attn, ratio: float, min_lift: float = 0.0,
                 sample: int = 16, heads=None, splinter: tuple[float, float] | None = None,
                 splinter_lift: float | None = None, reach: tuple[float, float, float] | None = None,
                 bridge: MapBridge | None = None) -> None:
    """Join, in place, the regions of a head that attend to each other about as much as to
    themselves: the pieces of one object cut apart by an occluder, by the frame's edge, or
    by the core cut of ``partition_heads``.

    Among each head's measured regions with lift > ``min_lift`` (``fill_lift`` first), the
    affinity of regions ``a`` and ``b`` is ``log(N * mean A[i, j])`` over sampled members
    ``i`` of ``a`` and ``j`` of ``b`` (both directions averaged; within a region, ``i != j``;
    0 is what a uniform map gives). ``a`` and ``b`` become one region when their affinity
    reaches ``ratio`` times the smaller of their own (positive) affinities; joins are
    transitive. (Unlike the edge weights, no reference over the heads is taken: at a
    distance a sharply positional head gives almost nothing, and relative to it every pair
    of regions would look linked.) A joined region gets one id (its pieces need not touch),
    the size-weighted mean of its pieces' lift and contrast (a conservative lift: measured
    whole, a joined object would keep more, and so would a class-level head's joined
    regions), and the sink flag of any piece; ids are renumbered 1..m in raster order of
    their first pixel. ``self_attn``: the frame's ``[heads, N, N]`` map or a source of its
    entries (``partition_from_qk``); the same frame and heads as ``parts``. ``heads``: the
    heads to link (an iterable of indices; None = every head). ``splinter``: ``(fraction,
    gap)``, a second way to join for a region at most ``fraction`` of the other's size (see
    ``_linked``); None = the ratio alone. ``splinter_lift``: with ``splinter``, regions with
    lift in (``splinter_lift``, ``min_lift``] may join too (a head's own lift threshold,
    ``lift_threshold``): by the splinter test, or by the ratio to a region over ``min_lift``
    (a piece of an object keeps less than the object), never by the ratio to each other (a
    diffuse head's weak regions attend to each other about as much as to themselves, and
    would join distinct objects). ``reach``: ``(floor, factor, grid_share)``, how far apart
    two regions may lie and still join by the ratio (``within_reach``); None = any distance.
    ``bridge``: a ``MapBridge``: pairs out of reach that a map's bump holds together join
    too, and so do two weak regions, and with its veto pairs in separate bumps do not
    (``map_bridged``, ``_linked``); None = the reach alone. Reads one ``[R, R]`` block per
    head with two or more candidates (R: their sampled members)."""
    source = _as_source(self_attn)
    h = source.heads
    if parts.regions.shape[0] != h:
        raise ValueError(f"link_regions: parts has {parts.regions.shape[0]} heads, the "
                         f"attention {h}: pass the partitions of this attention")
    for k in range(h) if heads is None else heads:
        link_head(parts, k, source, k, ratio, min_lift, sample, splinter, splinter_lift=splinter_lift,
                  reach=reach, bridge=bridge)


def link_head(parts: HeadPartitions, k: int, source, source_head: int, ratio: float,
              min_lift: float = 0.0, sample: int = 16, splinter: tuple[float, float] | None = None,
              candidates: np.ndarray | None = None, splinter_lift: float | None = None,
              reach: tuple[float, float, float] | None = None,
              bridge: MapBridge | None = None) -> None:
    """``link_regions`` for head ``k`` of ``parts``, whose attention is head ``source_head``
    of ``source`` (a source of entries: ``_as_source``; the heads differ where ``parts``
    pools several blocks). ``candidates``: bool [m_k + 1], the regions that may join (None
    = every region with lift > ``min_lift``, or > ``splinter_lift`` for the splinter test;
    the lift test holds either way). ``reach``, ``bridge``: as ``link_regions``."""
    lift = np.nan_to_num(parts.lift[k], nan=-np.inf)
    strong = lift > min_lift
    weak_too = splinter is not None and splinter_lift is not None and splinter_lift < min_lift
    eligible = strong | (lift > splinter_lift) if weak_too else strong.copy()
    if candidates is not None:
        eligible &= candidates
    ids = np.nonzero(eligible)[0]
    ids = ids[ids > 0]
    if len(ids) < 2:
        return
    flat = parts.regions[k].reshape(-1)
    join = _linked(source, source_head, [np.nonzero(flat == r)[0] for r in ids], ratio, sample, splinter,
                   parts.regions.shape[1:], by_ratio=strong[ids], reach=reach, bridge=bridge)
    a, b = np.nonzero(np.triu(join, 1))
    if len(a) == 0:
        return
    # the linked regions' classes (an edge always joins two: some regions merge); per region
    # the smallest index of its class, spread along the few edges without building a graph
    _merge_regions(parts, k, ids, _sparse_components(len(ids), a, b))


def group_affinities(source, head: int, groups: list, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """(aff float64 [m, m], own float64 [m]) of pixel ``groups`` (m int arrays of flat
    indices) in ``head`` of ``source`` (a source of entries or a ``[heads, N, N]`` map):
    ``log(N * mean A[i, j])`` over at most ``sample`` evenly spaced members of each group,
    both directions averaged, ``i != j`` within a group; ``own`` is the diagonal, -inf for a
    group of one member."""
    source = _as_source(source)
    members = [g if len(g) <= sample else g[np.round(np.linspace(0, len(g) - 1, sample)).astype(np.int64)]
               for g in groups]
    owner = torch.from_numpy(np.concatenate([np.full(len(m), j) for j, m in enumerate(members)]))
    rows = torch.from_numpy(np.concatenate(members).astype(np.int64))
    onehot = torch.nn.functional.one_hot(owner, len(groups)).double()  # [R, m]
    vals = source.blocks(torch.tensor([head]), rows[None])[0].double()  # [R, R]
    vals.fill_diagonal_(0.0)
    count = onehot.sum(0)
    pairs = count[:, None] * count[None, :] - torch.diag(count)
    dens = (onehot.t() @ vals @ onehot) / pairs.clamp_min(1)
    aff = torch.log(0.5 * (dens + dens.t()) * source.n + 1e-12).numpy()
    own = np.where(pairs.diagonal().numpy() > 0, aff.diagonal(), -np.inf)
    return aff, own


def _linked(source, k: int, groups: list, ratio: float, sample: int,
            splinter: tuple[float, float] | None = None, grid: tuple[int, int] | None = None,
            by_ratio: np.ndarray | None = None, reach: tuple[float, float, float] | None = None,
            bridge: MapBridge | None = None) -> np.ndarray:
    """bool [m, m]: which of the pixel ``groups`` (a list of m int arrays of flat pixel
    indices) of head ``k`` attend to each other about as much as to themselves: the affinity
    ``log(N * mean A[i, j])`` over sampled members (at most ``sample`` evenly spaced ones of
    each group; both directions averaged; ``i != j`` within a group) reaches ``ratio`` times
    the smaller of the two groups' own (positive) affinities (``link_regions``).

    ``splinter = (fraction, gap)``: a group of at most ``fraction`` of the other's size that
    touches it (a pixel of one among the 8 neighbours of a pixel of the other, on ``grid``,
    needed then) is also linked to it when their affinity is at most ``gap`` below the
    smaller of their own affinities (a density at least ``exp(-gap)`` of the sparser
    group's own). A large object spreads its rows over many keys, so its own affinity is
    low (0.2-1.2 at 100-200 patches on the synthetic families at noise 1.0) and a splinter
    cut off at its rim, whose few compact members attend to each other through the
    positional part, has a high one: the ratio then asks more of the pair than the object
    gives itself. Between two objects of an
    instance head the affinity is far lower still (-1.5 to -7 in those scenes); on the toy
    model it is near 0 for a small object a patch away from a cluster of touching ones, which
    the touch test keeps apart.

    ``by_ratio``: bool [m], the strong groups (None = all): a pair joins by the ratio only
    when one of them is strong; two weak groups join by the splinter test, or, with
    ``bridge``, by the ratio when a map holds them in one bump (``map_bridged``: the
    fragments a head cut a large object into are weak, and many).

    ``reach = (floor, factor, grid_share)``: a pair joins by the ratio only when the groups
    lie within reach of each other on ``grid`` (``within_reach``); None = at any distance.
    ``bridge``: a ``MapBridge`` (``layout.bridge_option``): a pair out of reach still joins
    when a map holds the two in one bump at ``level`` (``map_bridged``),
    and so do two weak groups (``by_ratio``); with ``veto`` (``NuminaConfig.link_map_veto``),
    after every rule, a joined pair that the maps do not hold in one bump at the ``veto``
    level stays apart, unless it is a splinter touching the other group. None = the reach
    alone, weak groups by the splinter test alone.

    Reads one ``[R, R]`` block of head ``k`` (R: every group's members together)."""
    aff, own = group_affinities(source, k, groups, sample)
    lower = np.minimum(own[:, None], own[None, :])
    bar = ratio * lower
    join = (aff >= bar) & (bar > 0)
    bridged = np.zeros_like(join)  # pairs a map holds in one bump: no reach asked of them
    if by_ratio is not None:
        weak = join & ~(by_ratio[:, None] | by_ratio[None, :])
        join &= ~weak
        if bridge is not None and weak.any():  # two weak pieces in one bump of the map
            bridged = map_bridged(groups, weak, bridge.maps, bridge.level)
            join |= bridged
    if reach is not None and join.any():
        if grid is None:
            raise ValueError("_linked: the reach test needs the grid (distances between groups)")
        near = within_reach(groups, grid, join & ~bridged, *reach)  # pairs not asked: True
        far = join & ~near
        if bridge is not None and far.any():
            near |= map_bridged(groups, far, bridge.maps, bridge.level)
        join &= near
    touching = None  # splinters touching the other group (bool [m, m]), where measured
    if splinter is not None:
        fraction, gap = splinter
        small = _splinter_sized(groups, fraction)
        close = small & np.isfinite(lower) & (aff >= lower - gap)
        if close.any():  # the touch test (dilations of every group) only where it can matter
            if grid is None:
                raise ValueError("_linked: the splinter test needs the grid (touching groups)")
            touching = small & _touching(groups, grid)
            join |= close & touching
    if bridge is not None and bridge.veto is not None and join.any():
        # the map's veto: pieces it holds in separate bumps are two objects (a splinter
        # touching its region excepted)
        apart = join & ~map_bridged(groups, join, bridge.maps, bridge.veto)
        if splinter is not None and grid is not None and apart.any():
            if touching is None:
                touching = _splinter_sized(groups, splinter[0]) & _touching(groups, grid)
            apart &= ~touching
        join &= ~apart
    return join


def _splinter_sized(groups: list, fraction: float) -> np.ndarray:
    """bool [m, m]: pairs of ``groups`` (pixel index arrays) whose smaller holds at most
    ``fraction`` of the larger's pixels (a splinter and the region it may join)."""
    size = np.array([len(g) for g in groups], dtype=np.float64)
    return np.minimum(size[:, None], size[None, :]) <= fraction * np.maximum(size[:, None], size[None, :])


def within_reach(groups: list, grid: tuple[int, int], pairs: np.ndarray, floor: float,
                 factor: float, grid_share: float = 0.0) -> np.ndarray:
    """bool [m, m]: which ``pairs`` (bool [m, m]; the others stay True) of pixel ``groups``
    (flat indices on ``grid`` = (H, W)) lie within reach of each other: the shortest distance
    between a pixel of one and a pixel of the other (patch centres; 1 = side by side) is at
    most ``max(floor, grid_share * min(H, W), factor * d)``, ``d`` the diameter of a disc as
    large as the two together (``2 * sqrt((|a| + |b|) / pi)``).

    The pieces of one object cut apart by an occluder lie on either side of it, a few
    patches apart, farther for a large object behind a wide occluder and on a finer grid
    (an occluder spans more patches); two objects that one head cannot tell apart
    (identical animals, or a head that gives a few objects one identity) may stand anywhere
    in the frame. Reads no attention."""
    W = int(grid[1])
    floor = max(float(floor), float(grid_share) * min(int(grid[0]), W))
    out = np.ones(pairs.shape, dtype=bool)
    a_idx, b_idx = np.nonzero(np.triu(pairs, 1))
    if len(a_idx) == 0:
        return out
    used = np.unique(np.concatenate([a_idx, b_idx]))
    pix = {j: np.asarray(groups[j], dtype=np.int64) for j in used}
    both = np.array([len(pix[a]) + len(pix[b]) for a, b in zip(a_idx, b_idx)], dtype=np.float64)
    gap = _closest_gaps(pix, a_idx, b_idx, W)
    far = gap > np.maximum(floor, factor * 2.0 * np.sqrt(both / np.pi))
    out[a_idx[far], b_idx[far]] = False
    out[b_idx[far], a_idx[far]] = False
    return out


#: at most this many pixels in the groups of one ``within_reach`` call: their closest gaps are
#: read off one matrix of squared distances ([P, P] int64: 2 MB at 512); more go pair by pair
#: through a k-d tree
GAP_MATRIX_PIXELS = 512


def _closest_gaps(pix: dict, a_idx: np.ndarray, b_idx: np.ndarray, W: int) -> np.ndarray:
    """float64 [K]: the distance between the closest patch centres of groups ``a_idx[i]`` and
    ``b_idx[i]`` (``pix``: group -> flat pixel indices, none empty, on a grid ``W`` wide).

    Up to ``GAP_MATRIX_PIXELS`` pixels in all: every pair of pixels' squared distance at
    once, reduced to each pair of groups (integer sums of squares are exact, so the square
    root of their minimum is the closest pair's distance, as a tree query gives it); a
    frame's linking asks this for 1-20 pairs of up to a few hundred pixels: 0.07-0.14 ms a
    call against 0.21 ms with a tree per pair. More pixels: a k-d tree query per pair."""
    used = list(pix)
    total = sum(len(pix[j]) for j in used)
    if total <= GAP_MATRIX_PIXELS:
        size = np.array([len(pix[j]) for j in used])
        y, x = np.divmod(np.concatenate([pix[j] for j in used]), W)  # [P] each
        dy, dx = y[:, None] - y[None, :], x[:, None] - x[None, :]
        d2 = dy * dy + dx * dx  # [P, P]
        start = np.concatenate([[0], np.cumsum(size)[:-1]])
        least = np.minimum.reduceat(np.minimum.reduceat(d2, start, axis=0), start, axis=1)
        at = {j: i for i, j in enumerate(used)}
        return np.sqrt(least[[at[a] for a in a_idx], [at[b] for b in b_idx]].astype(np.float64))
    from scipy.spatial import cKDTree

    coords = {j: np.stack(np.divmod(pix[j], W), 1) for j in used}
    trees = {j: cKDTree(coords[j]) for j in np.unique(b_idx)}
    return np.array([float(trees[b].query(coords[a])[0].min()) for a, b in zip(a_idx, b_idx)])


def map_bridged(groups: list, pairs: np.ndarray, maps: list, level: float) -> np.ndarray:
    """bool [m, m]: which ``pairs`` (bool [m, m]) of pixel ``groups`` (flat indices into
    the maps) one bump of a map holds together: in one of ``maps`` (a list of ``(cross,
    floor)``, a float [H, W] map and its background level), the pixels at or above
    ``floor + level * (lower - floor)`` connect a pixel of each group (8-neighbours),
    ``lower`` the smaller of the two groups' highest values; never where ``lower`` is at
    or below the floor.

    The regions a head cut one large object into lie inside that object's bump of the
    noun's cross-attention: between them the map stays about as high as at the lower
    piece's best pixel (``level`` 1 = no dip at all). Two objects have a bump each, and the
    map falls to its background between them unless their blurred rims merge. (A piece
    cut off by an occluder is apart in the map too: the occluder shows there; the reach
    joins those.) Reads no attention. The map is labelled once per distinct level asked
    (at most one per group: a pair's level follows from its lower group), not per pair."""
    from scipy.ndimage import label

    out = np.zeros(pairs.shape, dtype=bool)
    a_idx, b_idx = np.nonzero(np.triu(pairs, 1))
    eight = np.ones((3, 3), dtype=bool)
    idx = [np.asarray(g, dtype=np.int64) for g in groups]
    for cross, floor in maps:
        flat = np.asarray(cross, dtype=np.float64).reshape(-1)
        best = np.array([flat[g].max() if len(g) else -np.inf for g in idx])
        labelled = {}  # the pair's lower best value -> (pixels at or above its level, their components)
        for a, b in zip(a_idx, b_idx):
            lower = min(best[a], best[b])
            if out[a, b] or not lower > floor:
                continue
            if lower not in labelled:
                high = flat >= floor + level * (lower - floor)
                labelled[lower] = (high, label(high.reshape(np.shape(cross)), eight)[0].reshape(-1))
            high, comp = labelled[lower]
            ga, gb = idx[a], idx[b]
            ca, cb = comp[ga[high[ga]]], comp[gb[high[gb]]]
            if np.intersect1d(ca, cb).size:
                out[a, b] = out[b, a] = True
    return out


def _touching(groups: list, grid: tuple[int, int]) -> np.ndarray:
    """bool [m, m]: groups (flat pixel indices on ``grid``) with a pixel among the 8
    neighbours of a pixel of the other (the diagonal: True)."""
    H, W = grid
    m = len(groups)
    masks = np.zeros((m, H * W), dtype=bool)
    for j, g in enumerate(groups):
        masks[j, g] = True
    padded = np.zeros((m, H + 2, W + 2), dtype=bool)
    padded[:, 1:-1, 1:-1] = masks.reshape(m, H, W)
    # every group grown by its 8 neighbours at once (a 3x3 dilation, off the grid empty):
    # the nine shifted copies of the padded masks ORed
    grown = np.zeros((m, H, W), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[:, dy:dy + H, dx:dx + W]
    return (grown.reshape(m, -1).astype(np.int32) @ masks.T.astype(np.int32)) > 0


def unclaimed_instances(labels: np.ndarray, focus: np.ndarray, self_attn, head: int, *,
                        min_size: int, min_lift: float, link_ratio: float | None,
                        sample: int = 16, sink_keys: np.ndarray | None = None,
                        splinter: tuple[float, float] | None = None,
                        reach: tuple[float, float, float] | None = None,
                        bridge: MapBridge | None = None) -> np.ndarray:
    """Instances for the focus that no instance of ``head`` claims: objects too large for
    the edge cut.

    A large object spreads each of its rows over many keys, so its neighbour affinities sit
    near the background's and the Otsu cut breaks it into splinters that each keep little
    attention inside themselves (lift below ``min_lift`` of the partition): the object gets
    no instance although the focus covers it. Here the focus pixels at least one patch away
    from every instance of ``labels`` form 4-connected components; a component of at least
    ``min_size`` patches whose containment lift in ``head`` (``_containment_lift``: what its
    pixels keep inside it beyond a copy of it moved by half its box) exceeds ``min_lift``
    becomes an instance, unless it is linked (``link_ratio``, as ``link_regions`` links
    pieces) to an instance of ``labels``: then it is the rest of that object and joins it.
    Background left in the focus (a halo, clutter in the cross map) keeps no more than a
    moved copy of itself and stays out; so does a component holding an attention-sink key of
    ``head`` (``sink_keys``, as ``partition_heads`` finds them: the sink, not the object,
    keeps the attention there).

    Args:
        labels: int [H, W] instances of one noun (0 = none, 1..n), from ``head``.
        focus: bool [H, W], the noun's focus mask (or a ``focus.NounFocus``: its mask).
        self_attn: the frame's ``[heads, N, N]`` map or a source of its entries.
        head: the head whose attention is measured.
        min_size: smallest component considered (patches).
        min_lift: the lift a component must exceed.
        link_ratio: ``link_regions``' ratio; None = never join to an instance.
        splinter: ``link_regions``' ``(fraction, gap)``, used with ``link_ratio``.
        reach: ``link_regions``' ``(floor, factor, grid_share)``, used with ``link_ratio``.
        bridge: ``link_regions``' ``MapBridge``.
        sample: members measured per component (``lift_sample``).
        sink_keys: bool [N], the sink keys of ``head`` (``HeadPartitions.sink_keys[head]``);
            None = no sink check.

    Returns:
        int32 [H, W]: ``labels`` with the new instances added (and components joined to the
        instances they are linked to), renumbered 1..n in raster order of their first pixel.
    """
    from scipy.ndimage import label

    H, W = labels.shape
    left = focus_bool(focus).reshape(H, W) & ~_grow(labels > 0)
    comp, _ = label(left)  # 4-connected components of the left-over focus, 1..m
    big = _ids_per_row(comp.reshape(1, -1), (min_size, np.inf))[0]
    return _claimed(labels, big, self_attn, head, min_lift=min_lift,
                    link_ratio=link_ratio, sample=sample, sink_keys=sink_keys,
                    splinter=splinter, reach=reach, bridge=bridge)


def unclaimed_peaks(labels: np.ndarray, peaks: np.ndarray, self_attn, head: int, *,
                    min_lift: float, link_ratio: float | None, min_size: int = 2,
                    sample: int = 16, sink_keys: np.ndarray | None = None,
                    splinter: tuple[float, float] | None = None,
                    reach: tuple[float, float, float] | None = None,
                    bridge: MapBridge | None = None,
                    background: np.ndarray | None = None,
                    null_z: float | None = None, weak: bool = False):
    """Instances for the noun map's bumps that no instance of ``head`` touches: objects too
    small for the edge cut.

    An object of a few patches (on a 15x26 grid, most objects a crowded frame holds) gives
    the cut too few edges of its own: it falls under ``min_region`` or into a background
    region, and no instance of the head holds it, while the noun's map still shows its
    bump. The map's bumps (``peaks``: ``layout.cross_peaks``, one label a bump) that share
    no pixel with an instance of ``labels``, each without the ring of pixels next to the
    instances, become instances when at least ``min_size`` patches remain and their
    containment lift in ``head`` exceeds ``min_lift`` (as ``unclaimed_instances`` decides, a
    bump linked to an instance joining it). Clutter in the map (a bump where the
    self-attention holds no object) keeps no more than its moved copy and stays out.

    Args:
        labels: int [H, W] instances of one noun (0 = none, 1..n), from ``head``.
        peaks: int [H, W], the noun map's bumps (0 = none, 1..k).
        self_attn, head, min_lift, link_ratio, sample, sink_keys, splinter, reach, bridge: as for
            ``unclaimed_instances``.
        min_size: smallest bump considered once the ring is taken off (patches).
        background: bool [H, W], where copies of a bump may lie for its shape-matched null
            (e.g. the head's pixels in no region of its partition), or a function of no
            arguments returning it (called once, at the first bump the null decides); None =
            no null.
        null_z: with ``background``, a bump under ``min_lift`` is an instance too when its
            lift stands ``null_z`` standard deviations above the median of its copies' lifts
            (``shape_null_lifts``; at least ``SHAPE_NULL_MIN_COPIES`` copies, a lift of at
            least ``SHAPE_NULL_FLOOR``). None = ``min_lift`` alone.
        weak: return ``(labels, mask)``: ``mask`` bool [H, W], the pixels of the bumps that
            only the null let in (a caller's tests of the head's own evidence leave them out).

    Returns:
        int32 [H, W]: ``labels`` with the new instances added (and bumps joined to the
        instances they are linked to), renumbered 1..n in raster order of their first pixel.
    """
    H, W = labels.shape
    if np.shape(peaks) != (H, W):
        raise ValueError(f"peaks has shape {np.shape(peaks)}; expected the instances' shape {(H, W)} "
                         "(one label per patch of the frame, e.g. layout.cross_peaks of the noun's focus)")
    peaks = np.asarray(peaks).reshape(-1).astype(np.int64)
    k = int(peaks.max()) if peaks.size else 0
    touched = np.zeros(k + 1, dtype=bool)
    touched[peaks[labels.reshape(-1) > 0]] = True
    cand = np.where(touched[peaks], 0, peaks)
    cand[_grow(labels > 0).reshape(-1)] = 0
    kept = _ids_per_row(cand.reshape(1, -1), (min_size, np.inf))[0]
    over_null = None
    if null_z is not None and background is not None:
        @functools.cache  # worked out at the first bump the null decides, then kept
        def free() -> np.ndarray:
            """bool [H, W]: where copies lie: off the map's bumps, the instances and their
            ring, and the sink keys."""
            where = background() if callable(background) else background
            mask = np.asarray(where, dtype=bool).reshape(H, W) & (peaks.reshape(H, W) == 0)
            mask &= ~_grow(labels > 0)
            if sink_keys is not None:
                mask &= ~np.asarray(sink_keys, dtype=bool).reshape(H, W)
            return mask

        def over_null(source, i: int, lift: float) -> bool:
            if lift < SHAPE_NULL_FLOOR:
                return False
            copies = shape_null_lifts(source, head, (kept == i).reshape(H, W), free(), sample)
            if len(copies) < SHAPE_NULL_MIN_COPIES:
                return False
            spread = max(float(np.std(copies)), SHAPE_NULL_MIN_SPREAD)
            return (lift - float(np.median(copies))) / spread > null_z
    return _claimed(labels, kept, self_attn, head, min_lift=min_lift,
                    link_ratio=link_ratio, sample=sample, sink_keys=sink_keys,
                    splinter=splinter, reach=reach, bridge=bridge, over_null=over_null, weak=weak)


#: the shape-matched null of ``unclaimed_peaks``: the fewest copies of a bump that must fit
#: on the head's background, the lift a bump needs whatever its copies keep (a fraction of
#: a row), the smallest standard deviation of the copies' lifts divided by, and the most
#: copies measured
SHAPE_NULL_MIN_COPIES = 3
SHAPE_NULL_FLOOR = 0.005
SHAPE_NULL_MIN_SPREAD = 1e-4
SHAPE_NULL_COPIES = 12


def shape_copies(shape: np.ndarray, free: np.ndarray, most: int = SHAPE_NULL_COPIES) -> np.ndarray:
    """Up to ``most`` copies of ``shape`` (bool [H, W], non-empty) moved wholly inside
    ``free`` (bool [H, W]): the shape's bounding box stepped over the frame on a lattice
    one patch wider and taller than the box (copies never touch), the places that fit
    taken evenly spaced in raster order. Returns int [H, W], copies 1..c (0 = none)."""
    H, W = free.shape
    ys, xs = np.nonzero(shape)
    ys, xs = ys - ys.min(), xs - xs.min()
    h, w = int(ys.max()) + 1, int(xs.max()) + 1
    out = np.zeros((H, W), dtype=np.int64)
    fit = [(y, x) for y in range(0, H - h + 1, h + 1) for x in range(0, W - w + 1, w + 1)
           if free[ys + y, xs + x].all()]
    if not fit:
        return out
    pick = np.unique(np.round(np.linspace(0, len(fit) - 1, min(most, len(fit)))).astype(np.int64))
    for c, i in enumerate(pick, start=1):
        y, x = fit[i]
        out[ys + y, xs + x] = c
    return out


def shape_null_lifts(self_attn, head: int, shape: np.ndarray, free: np.ndarray,
                     sample: int, most: int = SHAPE_NULL_COPIES) -> np.ndarray:
    """The containment lifts in ``head`` (``head_region_lifts``) of up to ``most`` copies of
    ``shape`` (bool [H, W]) laid inside ``free`` (bool [H, W]; ``shape_copies``): what the
    head gives a piece of its background of the same shape and size by chance. float64 [c]
    (empty when no copy fits). ``self_attn``: the frame's map or a source of its entries."""
    copies = shape_copies(shape, free, most)
    c = int(copies.max())
    if c == 0:
        return np.zeros(0)
    return head_region_lifts(self_attn, head, copies, sample, free.shape)[1:]


def _claimed(labels: np.ndarray, cand: np.ndarray, self_attn, head: int, *, min_lift: float,
             link_ratio: float | None, sample: int, sink_keys: np.ndarray | None,
             splinter: tuple[float, float] | None, reach: tuple[float, float, float] | None,
             bridge: MapBridge | None = None, over_null=None, weak: bool = False):
    """``labels`` (int [H, W]) with the candidates ``cand`` (int [N], 0 = none, 1..c) whose
    containment lift in ``head`` exceeds ``min_lift`` (or, with ``over_null``, a function
    ``(source, id, lift) -> bool``, passes it) and that hold no sink key added: each
    joins the instance it is linked to (``link_ratio``), or is an instance of its own.
    Renumbered 1..n in raster order; ``labels`` as they are when no candidate passes.
    ``weak``: return ``(labels, mask)``, ``mask`` bool [H, W] the pixels of the candidates
    that passed by ``over_null`` alone."""
    H, W = labels.shape
    c = int(cand.max()) if cand.size else 0
    none = np.zeros((H, W), dtype=bool)

    def result(out):
        return (out, none) if weak else out
    if c == 0:
        return result(labels.astype(np.int32, copy=False))
    source = _as_source(self_attn)
    lift = head_region_lifts(source, head, cand, sample, (H, W))
    sinkless = [i for i in range(1, c + 1) if sink_keys is None or not sink_keys[cand == i].any()]
    # the null's copies are measured only for a candidate the fixed threshold and the sink
    # keys leave undecided
    by_null = [] if over_null is None else \
        [i for i in sinkless if lift[i] <= min_lift and over_null(source, i, float(lift[i]))]
    new = sorted([i for i in sinkless if lift[i] > min_lift] + by_null)
    if not new:
        return result(labels.astype(np.int32, copy=False))
    out = labels.reshape(-1).astype(np.int64)
    n_old = int(out.max())
    joined_to = np.zeros(len(new), dtype=np.int64)
    if link_ratio is not None and n_old > 0:
        groups = [np.nonzero(out == i)[0] for i in range(1, n_old + 1)]
        groups += [np.nonzero(cand == i)[0] for i in new]
        join = _linked(source, head, groups, link_ratio, sample, splinter, (H, W),
                       reach=reach, bridge=bridge)[n_old:, :n_old]
        for j in range(len(new)):
            hits = np.nonzero(join[j])[0]
            if len(hits):
                joined_to[j] = hits[0] + 1
    for j, i in enumerate(new):
        out[cand == i] = joined_to[j] if joined_to[j] else n_old + 1 + j
    out = _renumbered(out.reshape(H, W))
    if not weak:
        return out
    return out, np.isin(cand, [i for i in new if i in by_null]).reshape(H, W)


def grid_disc(radius: float) -> np.ndarray:
    """bool ``[2r + 1, 2r + 1]`` (r = floor(radius)): the grid offsets within Euclidean
    distance ``radius`` of the centre."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    return dy * dy + dx * dx <= radius * radius


def _grow(mask: np.ndarray) -> np.ndarray:
    """bool [H, W] ``mask`` grown by one patch to its 4-neighbours."""
    g = mask.copy()
    g[1:] |= mask[:-1]
    g[:-1] |= mask[1:]
    g[:, 1:] |= mask[:, :-1]
    g[:, :-1] |= mask[:, 1:]
    return g


def rim_grown(regions: np.ndarray, cut: np.ndarray | None, rings: int) -> np.ndarray:
    """One head's regions grown back by up to ``rings`` rings of patches inside the regions
    they were trimmed from (``peak_regions``): a trimmed peak is an object's core, and the
    blurred rim around it, which the upper class of edges leaves out, belongs to the object
    too. A patch joins a region when it is in no region, 4-adjacent to it, and in the same
    region as cut; a patch next to two regions joins the one met first (above, left, below,
    right). Regions stay disjoint and 4-connected and keep their ids: the count does not
    change, only the masks grow.

    Args:
        regions: int [H, W], 0 = no region.
        cut: int [H, W], the regions before trimming (0 = none), or None (nothing trimmed).
        rings: patches grown at most, >= 0.

    Returns:
        int32 [H, W].
    """
    out = np.array(regions, dtype=np.int32)  # a copy: grown in place below
    if cut is None or rings <= 0:
        return out
    cut = np.asarray(cut)
    for _ in range(int(rings)):
        prev = out.copy()
        free = (prev == 0) & (cut > 0)
        if not free.any():
            break
        for take, give in ((np.s_[1:], np.s_[:-1]), (np.s_[:-1], np.s_[1:])):
            for sl_t, sl_g in (((take, slice(None)), (give, slice(None))),
                               ((slice(None), take), (slice(None), give))):
                cand = free[sl_t] & (prev[sl_g] > 0) & (cut[sl_g] == cut[sl_t]) & (out[sl_t] == 0)
                out[sl_t][cand] = prev[sl_g][cand]
    return out


def _merge_regions(parts: HeadPartitions, k: int, ids: np.ndarray, group: np.ndarray) -> None:
    """Give the regions ``ids`` of head ``k`` that share a ``group`` one id (see
    ``link_regions``)."""
    lab = parts.regions[k]
    m = len(parts.lift[k])
    target = np.arange(m)
    for g in np.unique(group):
        pick = ids[group == g]
        target[pick] = pick.min()
    size = np.bincount(lab.reshape(-1), minlength=m).astype(np.float64)
    merged = target[lab]
    new_ids = np.unique(merged[merged > 0])
    keep = np.zeros(m, dtype=bool)
    keep[new_ids] = True
    relabelled = _regions_to_ids(merged, keep)
    out_m = int(relabelled.max()) + 1
    new_of_old = np.zeros(m, dtype=np.int64)
    present, first = np.unique(merged.reshape(-1), return_index=True)
    new_of_old[present] = relabelled.reshape(-1)[first]
    lift, contrast = np.zeros(out_m), np.zeros(out_m)
    sink = np.zeros(out_m, dtype=bool)
    weight = np.zeros(out_m)
    for old in range(1, m):
        if size[old] == 0:
            continue
        new = new_of_old[target[old]]
        lift[new] += size[old] * parts.lift[k][old]
        contrast[new] += size[old] * parts.contrast[k][old]
        weight[new] += size[old]
        sink[new] |= parts.sink[k][old]
    with np.errstate(invalid="ignore", divide="ignore"):
        lift[1:] = lift[1:] / weight[1:]
        contrast[1:] = contrast[1:] / weight[1:]
    parts.regions[k] = relabelled
    parts.lift[k], parts.contrast[k], parts.sink[k] = lift, contrast, sink


def _regions_to_ids(regions: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Kept ids (bool [m]) of an int region map -> 1..n in raster order of their first pixel
    (0 elsewhere)."""
    flat = regions.reshape(-1)
    new = np.zeros(len(keep), dtype=np.int32)
    ids = np.nonzero(keep)[0]
    if len(ids):
        first = np.full(len(keep), flat.size, dtype=np.int64)
        np.minimum.at(first, flat, np.arange(flat.size))
        ids = ids[np.argsort(first[ids], kind="stable")]
        new[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return new[regions]


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """An int region map (0 = none) with its regions renumbered 1..m in raster order of their
    first pixel, int32 of the same shape."""
    return _ids_per_row(labels.reshape(1, -1)).reshape(labels.shape)


def _region_contrast(regions: np.ndarray, values: np.ndarray, p: np.ndarray, q: np.ndarray
                     ) -> list:
    """Per head and region: mean edge weight inside the region minus the mean on its
    border (log units). ``regions``: int [heads, N]; ``values``: [heads, E] edge weights of
    the pairs (p, q). Every head in one pass: head ``k``'s regions are counted in bins
    ``offset[k] ...``."""
    m = regions.max(axis=1).astype(np.int64) + 1  # [heads]
    offset = np.concatenate([[0], np.cumsum(m)[:-1]])
    lp, lq = regions[:, p].astype(np.int64), regions[:, q].astype(np.int64)  # [heads, E]
    total = int(m.sum())
    inside = (lp == lq) & (lp > 0)
    gp, gq = lp + offset[:, None], lq + offset[:, None]
    n_in = np.bincount(gp[inside], minlength=total)
    s_in = np.bincount(gp[inside], weights=values[inside], minlength=total)
    cross = lp != lq
    a, b, w = gp[cross], gq[cross], values[cross]
    n_b = np.bincount(a, minlength=total) + np.bincount(b, minlength=total)
    s_b = np.bincount(a, weights=w, minlength=total) + np.bincount(b, weights=w, minlength=total)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(n_in > 0, s_in / np.maximum(n_in, 1), 0.0) - \
            np.where(n_b > 0, s_b / np.maximum(n_b, 1), 0.0)
    out = np.split(c, np.cumsum(m)[:-1])
    for x in out:
        x[0] = 0.0
    return out


def _sink_keys(source, sink_mass: float, rows: int = 64) -> np.ndarray:
    """bool [heads, N]: keys that receive at least ``sink_mass`` of the attention of the
    average row (estimated on ``rows`` evenly spaced query rows)."""
    source = _as_source(source)
    n = source.n
    pick = torch.linspace(0, n - 1, min(rows, n)).round().long()
    return (source.mean_rows(pick) >= sink_mass).numpy()


def head_region_lifts(self_attn, head: int, labels: np.ndarray, sample: int,
                      grid: tuple[int, int]) -> np.ndarray:
    """The containment lift (``_containment_lift``) in ``head`` alone of each region of
    ``labels`` (int, N = H * W entries in any shape, 0 = none, ids 1..m), measured on at most
    ``sample`` members each: float64 [m + 1] (index 0 unused). ``self_attn``: the frame's
    ``[heads, N, N]`` map or a source of its entries."""
    source = _as_source(self_attn)
    regions = np.zeros((source.heads, source.n), dtype=np.int64)
    regions[head] = np.asarray(labels).reshape(-1)
    return _containment_lift(source, regions, sample, tuple(grid))[0][head]


def _containment_lift(source, regions: np.ndarray, sample: int,
                      grid: tuple[int, int]) -> tuple[list, list]:
    """Per head and region: the attention the region's rows keep inside the region, minus
    what the same head keeps inside the region moved by half its own height or width (the
    mean over the up to 4 moves that stay on the grid). A head that attends by position
    alone keeps as much in the moved copy; an instance head keeps much less (the copy
    straddles the object's edge: half of it is background or another object; a whole-box
    move could land exactly on an identical neighbour). A region too large to move anywhere
    is compared with the all-head mean instead. ``regions``: int [heads, N]. Large regions are measured
    on ``sample`` evenly spaced members. ``source``: the frame's entries (``attention_entries``),
    read as one ``[S, S]`` block per region and move (S = the members used), reduced where it
    is read (``block_sums``: the rows' weighted sums and own entries), every region and move
    of one block width in one call.

    Returns (lift, member lift), two lists (one float64 [m_h + 1] array per head) from the
    same blocks: the member lift is the same measure with each row's own entry left out (in
    the moved copy and the all-head mean too): what the region's rows keep on its *other*
    members."""
    h, n = source.heads, source.n
    H, W = grid
    out = [np.zeros(int(regions[k].max()) + 1) for k in range(h)]
    out_members = [x.copy() for x in out]
    heads_of, pix = np.nonzero(regions)
    if len(pix) == 0:
        return out, out_members
    # every (head, region) is one group
    gid = heads_of.astype(np.int64) * (n + 1) + regions[heads_of, pix]
    order = np.argsort(gid, kind="stable")
    gid, pix, heads_of = gid[order], pix[order], heads_of[order]
    groups, start, size = _sorted_runs(gid)
    g_head = heads_of[start]
    g_region = groups - g_head * (n + 1)
    # bounding boxes and the moves by one box height / width that stay on the grid
    g_of_pix = np.repeat(np.arange(len(groups)), size)
    ys, xs = pix // W, pix % W
    y0 = np.full(len(groups), H)
    y1 = np.full(len(groups), -1)
    x0 = np.full(len(groups), W)
    x1 = np.full(len(groups), -1)
    np.minimum.at(y0, g_of_pix, ys)
    np.maximum.at(y1, g_of_pix, ys)
    np.minimum.at(x0, g_of_pix, xs)
    np.maximum.at(x1, g_of_pix, xs)
    bh, bw = (y1 - y0 + 2) // 2, (x1 - x0 + 2) // 2  # half the box, rounded up
    moves = [(bh, 0 * bh, y1 + bh < H), (-bh, 0 * bh, y0 - bh >= 0),
             (0 * bw, bw, x1 + bw < W), (0 * bw, -bw, x0 - bw >= 0)]
    n_moves = sum(ok.astype(np.int64) for _, _, ok in moves)
    # members used: all of a small region, ``sample`` evenly spaced ones of a large one
    used = np.minimum(size, sample)
    n_groups, width = len(groups), int(used.max())
    slot = np.arange(width)
    filled = slot[None, :] < used[:, None]  # [G, S]
    spaced = np.round(slot[None, :] * (size[:, None] - 1) / max(sample - 1, 1)).astype(np.int64)
    rank = np.where((size > sample)[:, None], spaced, slot[None, :])
    members = pix[start[:, None] + np.where(filled, rank, 0)]  # [G, S]; padding repeats slot 0
    # each row's own entry plus its other sampled columns scaled by (|R| - 1) / (used - 1),
    # averaged over the used rows (the diagonal is always sampled: scaling it too would
    # overrate heads that attend to the query itself)
    scale = (size - 1) / np.maximum(used - 1, 1)
    # per block width: its groups (the member weights, 0 for padding, come from ``filled``)
    buckets = _width_buckets(used)
    weights_of = torch.from_numpy(filled).float()  # [G, S]

    def kept(sums, sel: list) -> np.ndarray:
        """[len(sel), 2, G]: every entry, then the rows' own entries left out, for the groups
        ``sel[m]`` (bool [G]; 0 for the others) of each read ``m``. ``sums(reads, groups,
        w, weights)`` gives the (row sums, diagonal), float32 [K, w] (``block_sums``), of K
        (read, group) pairs (int [K] each) on their first w members, ``weights`` [K, w]
        their members' weights: one call per block width for every read together."""
        total, diag = np.zeros((len(sel), n_groups)), np.zeros((len(sel), n_groups))
        picked = np.stack(sel)  # [reads, G]
        for idx, w in buckets:
            read_of, at = np.nonzero(picked[:, idx])
            if len(at) == 0:
                continue
            group = idx[at]
            weights = weights_of[torch.from_numpy(group), :w]
            row_sums, own = sums(read_of, group, w, weights)
            total[read_of, group] = (row_sums * weights).sum(1).double().numpy()
            diag[read_of, group] = (own * weights).sum(1).double().numpy()
        off = (total - diag) * scale
        return np.stack([diag + off, off], axis=1) / used

    offsets = np.stack([np.zeros(n_groups, dtype=np.int64)] + [dy * W + dx for dy, dx, _ in moves])
    reads = [np.ones(n_groups, dtype=bool)] + [ok for _, _, ok in moves]
    heads_t = torch.from_numpy(g_head.astype(np.int64))

    def moved_sums(read_of, group, w, weights):  # the members moved by each read's offset
        rows = members[group, :w] + offsets[read_of, group][:, None]
        return source.block_sums(heads_t[torch.from_numpy(group)], torch.from_numpy(rows), weights)

    measured = kept(moved_sums, reads)  # [5, 2, G]: inside, then the up to 4 moves
    inside = measured[0]
    lift = inside - measured[1:].sum(0) / np.maximum(n_moves, 1)
    stuck = n_moves == 0
    if stuck.any():  # too large to move: compare with the all-head mean
        def head_mean(read_of, group, w, weights):  # every head's blocks in one read
            rows = torch.from_numpy(members[group, :w])
            g = len(rows)
            every = torch.arange(h).repeat_interleave(g)
            sums, own = source.block_sums(every, rows.repeat(h, 1), weights.repeat(h, 1))
            return sums.view(h, g, w).mean(0), own.view(h, g, w).mean(0)
        lift[:, stuck] = inside[:, stuck] - kept(head_mean, [stuck])[0][:, stuck]
    for k in range(h):
        pick = g_head == k
        out[k][g_region[pick]] = lift[0, pick]
        out_members[k][g_region[pick]] = lift[1, pick]
    return out, out_members


def _width_buckets(used: np.ndarray) -> list:
    """Groups by block width: ``(idx, w)``, ``idx`` the groups (of ``used`` members each,
    int [G]) read as ``w x w`` blocks, w the next power of two (at least 4, at most the
    largest ``used``): small regions are read on small blocks, not padded to the largest."""
    top = int(used.max())
    w = np.minimum(np.maximum(4, 2 ** np.ceil(np.log2(np.maximum(used, 1)))), top).astype(np.int64)
    return [(np.nonzero(w == b)[0], int(b)) for b in np.unique(w)]


def focus_regions(parts: HeadPartitions, focus, min_overlap: float) -> list:
    """Per head, bool [m_h + 1]: the regions on ``focus``: a bool [H, W] mask (``|R ∩ F| /
    |R| >= min_overlap``), or a ``focus.NounFocus`` / ``FocusUnion`` (its local tests too)."""
    return heads_hits(parts.regions, focus, min_overlap)


def head_instances(parts: HeadPartitions, head: int, focus, min_overlap: float,
                   min_lift: float, null_factor: float | None = None,
                   instance_null: float | None = None,
                   not_background: np.ndarray | None = None) -> np.ndarray:
    """bool [m_head + 1]: the instances of one head for one focus (as ``focus_regions``): its
    regions on the focus with a measured lift > ``min_lift`` (or > the head's own threshold,
    ``null_factor``: see ``lift_threshold``). ``instance_null``: each of them must also keep
    more than this factor times the 90th percentile of the head's null for its size (its
    measured regions off the focus of at most twice its size, with its background tiles
    when fewer than ``MIN_NULL_REGIONS``; those of ``not_background``, bool [m + 1], left
    out: another noun's objects); an instance with no such null stays
    (``NuminaConfig.instance_null_factor``). None = the threshold alone."""
    lift, inst, size, off = _instances_and_background(parts, head, focus, min_overlap, min_lift,
                                                      null_factor, not_background)
    keep = np.zeros(len(lift), dtype=bool)
    keep[inst] = True
    if instance_null is None or not len(inst):
        return keep
    for i, upper in zip(inst, _null_uppers(parts, head, lift, inst, size, off)):
        if upper is not None and lift[i] <= instance_null * upper:
            keep[i] = False
    return keep


def head_lift_threshold(parts: HeadPartitions, head: int, focus, min_overlap: float,
                        min_lift: float, null_factor: float | None = None) -> float:
    """The lift a region of ``head`` must exceed to be an instance on ``focus``
    (``lift_threshold`` with that head's regions off the focus and its background tiles)."""
    return lift_threshold(region_hits(parts.regions[head], focus, min_overlap), parts.lift[head],
                          min_lift, null_factor, _null_of(parts, head))


def _null_of(parts: HeadPartitions, head: int) -> np.ndarray | None:
    return None if parts.null_lift is None else parts.null_lift[head]


#: most regions off the focus measured per head for its null (``null_candidates``)
NULL_REGIONS = 12


def null_candidates(on_focus: list, sink: list, most: int = NULL_REGIONS) -> tuple[list, np.ndarray]:
    """What ``fill_lift`` must measure for each head's own lift threshold on one focus
    (``on_focus``: per head bool [m_h + 1], ``focus_regions``; ``sink``: the heads' sink flags):
    per head, up to ``most`` of its regions off the focus (evenly spaced in id order, i.e.
    over the frame in raster order; no sink regions), as bool [m_h + 1] arrays, and bool
    [heads], the heads with fewer than ``MIN_NULL_REGIONS`` of them, which need background
    tiles (``background_tiles``)."""
    wanted, tiles = [], np.zeros(len(on_focus), dtype=bool)
    for k, (on, sk) in enumerate(zip(on_focus, sink)):
        off = np.flatnonzero(~on & ~sk)
        off = off[off > 0]
        pick = np.zeros(len(on), dtype=bool)
        if len(off):
            pick[off[np.unique(np.round(np.linspace(0, len(off) - 1, min(most, len(off)))).astype(np.int64))]] = True
        wanted.append(pick)
        tiles[k] = len(off) < MIN_NULL_REGIONS
    return wanted, tiles


#: lifts a head's null needs (its off-focus regions, else with its background tiles;
#: ``lift_threshold``)
MIN_NULL_REGIONS = 3


def lift_threshold(on_focus: np.ndarray, lift: np.ndarray, min_lift: float,
                   null_factor: float | None, tiles: np.ndarray | None = None) -> float:
    """The lift a head's focus region must exceed to be an instance: ``min_lift``, or, with
    ``null_factor``, the lower ``null_factor * q90`` when it is positive, ``q90`` the 90th
    percentile of the null lifts: the measured lifts of the head's regions off the focus
    (``on_focus`` bool [m + 1] False, index 0 excluded) when there are at least
    ``MIN_NULL_REGIONS`` of them, else those with the lifts of its background ``tiles``
    (float [t], ``HeadPartitions.null_lift``; a head whose regions all touch the focus): what
    this head's background pieces keep, in the head's own units
    (``NuminaConfig.min_lift_null_factor``). Fewer null lifts than ``MIN_NULL_REGIONS``:
    ``min_lift``."""
    if null_factor is None:
        return min_lift
    off = null_lifts(on_focus, lift, tiles)
    if len(off) == 0:
        return min_lift
    own = null_factor * percentile(off, 90)
    return own if 0.0 < own < min_lift else min_lift


def null_lifts(left_out: np.ndarray, lift: np.ndarray, tiles: np.ndarray | None = None
               ) -> np.ndarray:
    """A head's null lifts, float64 [k]: the measured lifts (``lift`` float [m + 1], NaN = not
    measured) of its regions not ``left_out`` (bool [m + 1]: those on the focus, and any other
    region that is no background piece; index 0 excluded) when there are at least
    ``MIN_NULL_REGIONS`` of them, else those with the lifts of its background ``tiles``
    (float [t], ``HeadPartitions.null_lift``; None = none); empty when fewer than
    ``MIN_NULL_REGIONS`` remain. What the head's background pieces keep, in the head's own
    units (``lift_threshold``, ``null_evidence``)."""
    off = lift[1:][~left_out[1:] & np.isfinite(lift[1:])].astype(np.float64)
    if len(off) < MIN_NULL_REGIONS and tiles is not None:
        off = np.concatenate([off, tiles[np.isfinite(tiles)]])
    return off if len(off) >= MIN_NULL_REGIONS else np.zeros(0)


#: background pieces of an instance's size needed to compare it with (``instance_evidence``):
#: a quartile of fewer says little, and one other object among three pieces would decide it
MIN_EVIDENCE_REGIONS = 5


def instance_evidence(parts: HeadPartitions, head: int, focus, min_overlap: float,
                      min_lift: float, null_factor: float | None,
                      not_background: np.ndarray | None = None) -> float:
    """How clearly ``head``'s instances on ``focus`` (a mask, ``NounFocus`` or
    ``FocusUnion``) stand out of its background, each against background pieces of its own
    size: the median over the instances of the instance's lift over the upper quartile (75th
    percentile) of the lifts of the head's measured regions off the focus that are between
    half and twice its size; an instance with fewer than ``MIN_EVIDENCE_REGIONS`` such
    regions is left out.

    Under a positional or textured head a region's lift depends on its size and shape, not
    on where it lies, so the pieces it has under the focus keep about what its pieces
    elsewhere keep (ratios near 1); an instance head's objects keep several times what
    background pieces of their size keep. Why each choice (docs/method.md, identify step 8,
    and "The evidence test" under "What failed on the way"): a large background piece of a head with a local positional part
    keeps as much as a small object (hence sizes matched); another noun's object among the
    pieces off the focus keeps as much as this noun's (hence the upper quartile, not the
    top: a minority of such objects among the pieces does not decide it; hence at least 5
    pieces). NaN when no instance could be compared (no instance, too few pieces of its
    size off the focus, or a quartile that is not positive). ``not_background``: bool
    [m + 1], regions off the focus that are not background pieces either (another noun's
    objects), left out; None = none."""
    lift, inst, size, off = _instances_and_background(parts, head, focus, min_overlap, min_lift,
                                                      null_factor, not_background)
    ratios = []
    for i in inst:
        near = off[(size[off] >= size[i] / 2) & (size[off] <= 2 * size[i])]
        if len(near) < MIN_EVIDENCE_REGIONS:
            continue
        upper = percentile(lift[near], 75)
        if upper > 0:
            ratios.append(float(lift[i]) / upper)
    return median(ratios) if ratios else float("nan")


def _instances_and_background(parts: HeadPartitions, head: int, focus, min_overlap: float,
                              min_lift: float, null_factor: float | None,
                              not_background: np.ndarray | None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the evidence tests compare for ``head`` on ``focus``: its lifts (float [m + 1]),
    the ids of its instances (int [i], ``_lifted`` with its own threshold), its region sizes
    (float64 [m + 1], patches) and the ids of its measured regions off the focus (int [o],
    those of ``not_background`` left out)."""
    on_focus = region_hits(parts.regions[head], focus, min_overlap)
    lift = parts.lift[head]
    inst = _lifted(on_focus, lift, min_lift, null_factor, _null_of(parts, head))
    size = np.bincount(parts.regions[head].reshape(-1), minlength=len(lift)).astype(np.float64)
    off = ~on_focus & np.isfinite(lift)
    if not_background is not None:
        off &= ~not_background
    off = np.flatnonzero(off)
    return lift, np.flatnonzero(inst), size, off[off > 0]


def null_evidence(parts: HeadPartitions, head: int, focus, min_overlap: float,
                  min_lift: float, null_factor: float | None,
                  not_background: np.ndarray | None = None) -> float:
    """How clearly ``head``'s instances on ``focus`` (a mask, ``NounFocus`` or ``FocusUnion``)
    stand out of the head's background pieces no larger than twice their size: the median
    over the instances of the instance's lift over the 90th percentile of the lifts of the
    head's measured regions off the focus of at most twice its size, those together with the
    lifts of its background tiles (``HeadPartitions.null_lift``, squares of the head's median
    region size) when there are fewer than ``MIN_NULL_REGIONS`` of them; an instance with
    fewer than ``MIN_NULL_REGIONS`` in all is left out.

    ``instance_evidence`` compares each instance with the upper quartile of at least
    ``MIN_EVIDENCE_REGIONS`` pieces of between half and twice its size, and says nothing
    on small grids (15x26), where a head that tiles the frame by position has few pieces
    off the focus; this comparison needs 3, of any size up to twice the instance's (a
    smaller piece keeps less, so it does not make an object look weak; a larger one may keep
    more when the head has a broad positional part, so it is left out). A head whose
    instances keep no more than these pieces keep (a ratio of 1 or less) is not telling
    objects apart. NaN when no instance could be compared or a percentile is not positive.
    ``not_background``: bool [m + 1], regions off the focus that are another noun's objects,
    left out; None = none."""
    lift, inst, size, off = _instances_and_background(parts, head, focus, min_overlap, min_lift,
                                                      null_factor, not_background)
    ratios = [float(lift[i]) / upper for i, upper in zip(inst, _null_uppers(parts, head, lift, inst, size, off))
              if upper is not None and upper > 0]
    return median(ratios) if ratios else float("nan")


def _null_uppers(parts: HeadPartitions, head: int, lift: np.ndarray, inst: np.ndarray,
                 size: np.ndarray, off: np.ndarray) -> list:
    """The 90th percentile of ``head``'s null for each of its regions ``inst`` (int [i]), as
    ``_instances_and_background`` gives them with the lifts and sizes (float [m + 1]) and the
    background pieces ``off`` (int [o]): the lifts of the pieces of at most twice the
    region's size, with the head's background tiles when fewer than ``MIN_NULL_REGIONS``
    (``null_lifts``). A list of floats, None for a region with too few."""
    tiles = _null_of(parts, head)
    not_null = np.ones(len(lift), dtype=bool)  # regions that are not background pieces
    not_null[off] = False
    uppers = []
    for i in inst:
        null = null_lifts(not_null | (size > 2 * size[i]), lift, tiles)
        uppers.append(percentile(null, 90) if len(null) else None)
    return uppers


def _lifted(on_focus: np.ndarray, lift: np.ndarray, min_lift: float,
            null_factor: float | None = None, tiles: np.ndarray | None = None) -> np.ndarray:
    """bool [m + 1]: the regions of ``on_focus`` (bool [m + 1]) whose measured ``lift``
    (float [m + 1], NaN = not measured) exceeds the head's threshold (``lift_threshold``:
    ``min_lift`` when ``null_factor`` is None; ``tiles``: its background tiles' lifts)."""
    threshold = lift_threshold(on_focus, lift, min_lift, null_factor, tiles)
    return on_focus & (np.nan_to_num(lift, nan=-np.inf) > threshold)


def head_scores_from_focus(parts: HeadPartitions, focus, min_overlap: float,
                           min_lift: float = 0.0, null_factor: float | None = None
                           ) -> tuple[np.ndarray, np.ndarray, list]:
    """Score, instance count and instances of every head for one focus (a bool [H, W] mask
    or a ``focus.NounFocus`` / ``FocusUnion``, as ``focus_regions``).

    ``parts.lift`` must be measured for the focus regions (``fill_lift``). A region is an
    instance when it is on the focus (``|R ∩ F| / |R| >= min_overlap`` for a mask) and its lift is > ``min_lift`` (its pixels keep
    more attention inside it than the average head does, by that share of a row;
    ``head_instances``; ``null_factor``: each head's own threshold, ``lift_threshold``).
    Score = size-weighted mean over the
    instances of lift * max(contrast, 0), times the share of the focus mask that the instances
    cover (-inf when the head has none): a positional head's one piece of the frame under the
    focus may keep as much as an object, but it explains a small part of the focus. Returns
    (scores float64 [heads], counts int [heads], instances: one bool [m_h + 1] per head)."""
    h = parts.regions.shape[0]
    scores = np.full(h, -np.inf)
    counts = np.zeros(h, dtype=np.int64)
    chosen = []
    on_focus = heads_hits(parts.regions, focus, min_overlap)
    mask = focus_bool(focus)
    for k in range(h):
        inst = _lifted(on_focus[k], parts.lift[k], min_lift, null_factor, _null_of(parts, k))
        chosen.append(inst)
        if not inst.any():
            continue
        size = np.bincount(parts.regions[k].reshape(-1), minlength=len(inst))
        strength = parts.lift[k][inst] * np.maximum(parts.contrast[k][inst], 0.0)
        scores[k] = (float((strength * size[inst]).sum() / size[inst].sum())
                     * focus_coverage(parts.regions[k], inst, mask))
        counts[k] = int(inst.sum())
    return scores, counts, chosen


def focus_coverage(regions: np.ndarray, instances: np.ndarray, mask: np.ndarray) -> float:
    """The share of the focus ``mask`` (bool [H, W]) inside the ``instances`` (bool [m + 1])
    of ``regions`` (int [H, W]); 1.0 for an empty mask."""
    return float(instances[regions[mask]].mean()) if mask.any() else 1.0


def choose_head(scores: np.ndarray, counts: np.ndarray, margin: float) -> int:
    """The best-scoring head, or among heads scoring at least ``(1 - margin)`` of the best,
    the one with the most instances (ties: the higher score). -1 when no head scores."""
    if not np.isfinite(scores).any() or scores.max() <= 0:
        return int(np.argmax(scores)) if np.isfinite(scores).any() else -1
    best = float(scores.max())
    near = np.nonzero(scores >= (1.0 - margin) * best)[0]
    return int(max(near, key=lambda k: (counts[k], scores[k])))


def temporal_vote(counts, window: int) -> list[int]:
    """Per-frame counts replaced by their median over ``2 * window + 1`` consecutive frames
    around each frame (near the ends the window is moved inward so that it keeps its
    length; a sequence shorter than the window votes over all its frames). Where the window
    holds an even number of frames (a short sequence) the frame keeps its own count: a tie
    has no median. ``window=0`` returns the counts unchanged; a window that is not an int
    >= 0 raises ``ValueError``."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"temporal_vote: window={window!r}: expected an int >= 0 (frames on each "
                         "side of a frame; 0 = counts as they are)")
    c = np.asarray(list(counts), dtype=np.int64)
    if window == 0 or len(c) <= 1:
        return [int(x) for x in c]
    length = min(2 * window + 1, len(c))
    if length % 2 == 0:
        return [int(x) for x in c]
    out = []
    for f in range(len(c)):
        lo = min(max(0, f - window), len(c) - length)
        out.append(int(np.median(c[lo:lo + length])))
    return out
