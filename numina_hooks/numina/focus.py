"""Where a noun's cross-attention puts it: the focus, and which self-attention regions lie on it.

A self-attention region becomes an instance of a noun when the noun's cross-attention says
the noun is there. The paper's test is global: the region covers at least ``focus_overlap``
of itself with the focus mask (the map's pixels above one threshold for the whole frame,
density-clustered). In a crowded frame at a small grid that threshold, taken above the
map's median, leaves out the weaker objects: a small object's bump then reaches it in one
or two pixels (which the density clustering drops as noise) or in none. Two local tests,
measured on each region the self-attention already separated, take those objects back
(``NounFocus.region_hits``):

* **specks** (``focus_specks``): the overlap is counted on the map's bright pixels before
  the density clustering, so a bright speck that a self-attention region confirms counts;
* **contrast** (``focus_contrast = k``): a region also lies on the focus when its mean
  cross-attention exceeds the mean over its ring (the pixels 4-adjacent to it outside it)
  by ``k`` of the map's range (``peak - floor``) and is above the map's floor. An object
  of the noun is brighter than what surrounds it; the halo next to an object is not (the
  object is on its ring), nor is a background region.

Both only add regions to those the paper's test keeps. ``NounFocus`` holds one noun's map of
one frame; ``FocusUnion`` the nouns of a frame together (phase 1 chooses the head on the
union of the nouns' focus). Functions that take a focus accept either, or a plain bool mask
(the paper's test alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["NounFocus", "FocusUnion", "region_hits", "heads_hits", "focus_bool", "shown_instances"]


@dataclass
class NounFocus:
    """One noun's cross-attention in one frame, for the region tests.

    mask: bool [H, W], the focus mask F (density-clustered bright pixels).
    bright: bool [H, W], the pixels at or above the focus threshold before clustering.
    cross: float64 [H, W], the noun's cross-attention map.
    floor: the map's background level (its ``focus_floor_quantile``).
    spread: ``peak - floor`` of the map (0 for a map with no response).
    specks: count ``bright`` (not only ``mask``) in the overlap test.
    contrast: the ring contrast (share of ``spread``) that also puts a region on the focus;
        None = no contrast test.
    """
    mask: np.ndarray
    bright: np.ndarray
    cross: np.ndarray
    floor: float
    spread: float
    specks: bool = False
    contrast: float | None = None
    _hits: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __or__(self, other):
        return FocusUnion([self]) | other

    def region_hits(self, regions: np.ndarray, min_overlap: float) -> np.ndarray:
        """bool [m + 1]: the regions of ``regions`` (int [H, W], 0 = none, 1..m) on this
        noun's focus (index 0 False). Remembered per partition and ``min_overlap``: the
        head choice asks again for the same regions."""
        key = (regions.tobytes(), regions.shape, float(min_overlap))
        if key not in self._hits:
            self.heads_hits(regions[None], min_overlap)
        return self._hits[key].copy()

    def heads_hits(self, regions: np.ndarray, min_overlap: float) -> list:
        """``region_hits`` of every head of ``regions`` (int [heads, H, W]) in one pass."""
        keys = [(r.tobytes(), r.shape, float(min_overlap)) for r in regions]
        if all(k in self._hits for k in keys):
            return [self._hits[k].copy() for k in keys]
        heads = regions.shape[0]
        m = regions.reshape(heads, -1).max(axis=1) if regions.size else np.zeros(heads, np.int64)
        offset = np.concatenate([[0], np.cumsum(m + 1)[:-1]]).astype(np.int64)
        lab = np.where(regions > 0, regions + offset[:, None, None], 0).astype(np.int64)
        total = int((m + 1).sum())
        covered = (self.mask | self.bright) if self.specks else self.mask
        sel = _overlap_hits(lab.reshape(-1), np.broadcast_to(covered, regions.shape).reshape(-1),
                            total - 1, min_overlap)
        if self.contrast is not None and self.spread > 0 and total > heads:
            inner, ring = _inner_and_ring_means(lab, self.cross, total - 1)
            sel[1:] |= inner[1:] - ring[1:] > self.contrast * self.spread
        out = []
        for k in range(heads):
            hits = sel[offset[k]:offset[k] + m[k] + 1].copy()
            hits[0] = False
            self._hits[keys[k]] = hits
            out.append(hits.copy())
        return out


@dataclass
class FocusUnion:
    """The focus of several nouns of one frame: a region is on it when it is on any noun's."""
    members: list

    @property
    def mask(self) -> np.ndarray:
        return np.logical_or.reduce([focus_bool(f) for f in self.members])

    def __or__(self, other):
        more = other.members if isinstance(other, FocusUnion) else [other]
        return FocusUnion(list(self.members) + list(more))

    def region_hits(self, regions: np.ndarray, min_overlap: float) -> np.ndarray:
        return np.logical_or.reduce([region_hits(regions, f, min_overlap) for f in self.members])

    def heads_hits(self, regions: np.ndarray, min_overlap: float) -> list:
        per_member = [heads_hits(regions, f, min_overlap) for f in self.members]
        return [np.logical_or.reduce([hits[k] for hits in per_member]) for k in range(regions.shape[0])]


def focus_bool(focus) -> np.ndarray:
    """The bool [H, W] focus mask of ``focus`` (a mask, ``NounFocus`` or ``FocusUnion``)."""
    return focus.mask if isinstance(focus, (NounFocus, FocusUnion)) else np.asarray(focus, dtype=bool)


def region_hits(regions: np.ndarray, focus, min_overlap: float) -> np.ndarray:
    """bool [m + 1]: the regions of ``regions`` (int [H, W]) on ``focus``: a bool [H, W]
    mask (the paper's test: ``|R ∩ F| / |R| >= min_overlap``), a ``NounFocus`` or a
    ``FocusUnion`` (the local tests added, see the module docstring)."""
    if isinstance(focus, (NounFocus, FocusUnion)):
        return focus.region_hits(regions, min_overlap)
    lab = regions.reshape(-1)
    m = int(lab.max()) if lab.size else 0
    return _overlap_hits(lab, np.asarray(focus, dtype=bool).reshape(-1), m, min_overlap)


def heads_hits(regions: np.ndarray, focus, min_overlap: float) -> list:
    """``region_hits`` of every head of ``regions`` (int [heads, H, W]): one bool
    [m_h + 1] per head."""
    if isinstance(focus, (NounFocus, FocusUnion)):
        return focus.heads_hits(regions, min_overlap)
    return [region_hits(r, focus, min_overlap) for r in regions]


def shown_instances(labels: np.ndarray, focus: NounFocus, min_contrast: float) -> np.ndarray:
    """``labels`` (int [H, W], 0 background, 1..n instances of one noun) without the instances
    that do not show in the noun's map as a bump, renumbered 1..m in the order kept.

    An instance shows when its mean cross-attention exceeds the mean over its ring (the
    pixels 4-adjacent to it that lie in no instance) by more than ``min_contrast`` of the
    map's range (``focus.spread``). An instance without such a ring (walled in by the
    others) is kept; so is every instance of a map with no range. A piece of background on
    a lifted neighbourhood has as much attention around it as inside it; an object of the
    noun, however weak, is brighter than the background around it. An instance cut much
    wider than its object (the object and several times its area of background) can fall
    under its ring too and is dropped. (The mean of the instance's brightest quarter instead
    kept most pieces of background: their brightest pixels stand above their ring by the
    map's noise; on the video family's report seeds at 15x26 it changed no frame.)"""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0 or focus.spread <= 0:
        return labels.astype(np.int32, copy=True)
    inner, ring = _inner_and_ring_means(labels, focus.cross, n, ring_mask=labels == 0)
    # a NaN ring (none) keeps the instance; an id without pixels (NaN inside) is no instance
    keep = ~(inner - ring <= min_contrast * focus.spread) & ~np.isnan(inner)
    keep[0] = False
    new_id = np.zeros(n + 1, dtype=np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_id[labels]


def _overlap_hits(lab: np.ndarray, covered: np.ndarray, m: int, min_overlap: float) -> np.ndarray:
    size = np.bincount(lab, minlength=m + 1)
    hit = np.bincount(lab, weights=covered.astype(np.float64), minlength=m + 1)
    sel = np.zeros(m + 1, dtype=bool)
    sel[1:] = (hit[1:] >= min_overlap * np.maximum(size[1:], 1)) & (size[1:] > 0)
    return sel


def _inner_and_ring_means(regions: np.ndarray, cross: np.ndarray, m: int,
                          ring_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``cross`` (float [H, W]) over each region of ``regions`` (int [..., H, W],
    1..m; the leading dimensions are separate grids, e.g. heads, with distinct labels) and
    over its ring (the pixels outside it 4-adjacent to it on its grid; with ``ring_mask``,
    bool like ``regions``, only those where it is True), float64 [m + 1] each; NaN for a
    region without pixels or without a ring (index 0 unused)."""
    lab = regions.reshape(-1)
    c = np.broadcast_to(np.asarray(cross, dtype=np.float64), regions.shape).reshape(-1)
    size = np.bincount(lab, minlength=m + 1)
    total = np.bincount(lab, weights=c, minlength=m + 1)
    # each pixel's four neighbours' regions (0 off the grid), each region once per pixel:
    # the pixel is on the ring of every such region other than its own
    p = np.pad(regions, [(0, 0)] * (regions.ndim - 2) + [(1, 1), (1, 1)])
    up, down = p[..., :-2, 1:-1].reshape(-1), p[..., 2:, 1:-1].reshape(-1)
    left, right = p[..., 1:-1, :-2].reshape(-1), p[..., 1:-1, 2:].reshape(-1)
    ring_n = np.zeros(m + 1, dtype=np.int64)
    ring_sum = np.zeros(m + 1)
    seen = []
    allowed = None if ring_mask is None else np.asarray(ring_mask, dtype=bool).reshape(-1)
    for side in (up, down, left, right):
        new = (side != lab) & (side > 0)  # a neighbour's region, not the pixel's own ...
        if allowed is not None:
            new &= allowed
        for before in seen:
            new &= side != before  # ... and not one an earlier side already counted
        seen.append(side)
        ring_n += np.bincount(side[new], minlength=m + 1)
        ring_sum += np.bincount(side[new], weights=c[new], minlength=m + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = np.where(size > 0, total / np.maximum(size, 1), np.nan)
        ring = np.where(ring_n > 0, ring_sum / np.maximum(ring_n, 1), np.nan)
    return inner, ring
