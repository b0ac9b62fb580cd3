"""The bumps of a map split at their saddles: a flooding watershed, vectorised.

``flood_peaks`` floods a map's pixels from the highest down (8-connected). Each pixel belongs
to the peak its steepest way up leads to; where two flooded parts meet, the one with the
lower peak stays a bump of its own when that peak rises at least ``rise`` above the meeting
level, and joins the higher one otherwise. ``layout.cross_peaks`` reads a noun's objects off
its cross-attention map with it.

The flooding order decides only two things, and both are computed without visiting the
pixels one by one in Python:

1. a pixel's peak: its flooded neighbour ranked first (highest, then lowest index) is the
   way up, so following those pointers to a pixel with no earlier neighbour gives its peak
   (pointer jumping over the whole map at once);
2. the merges: parts are unions of those peaks' basins, and two parts meet only at a pixel
   whose earlier neighbours lie in two or more basins. Those pixels (the basins' borders,
   a few dozen on a smoothed map) are visited in flooding order with a union-find over
   the basins.

The result equals a pixel-by-pixel flood in that order, ties included.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flood_peaks"]

#: the eight neighbours: a peak's slope may run along a diagonal
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbour_ranks(rank: np.ndarray) -> np.ndarray:
    """Each pixel's eight neighbours' flooding ranks, int64 [8, H, W] (``rank`` [H, W]; a
    neighbour off the grid or never flooded has the rank of a pixel never flooded)."""
    H, W = rank.shape
    never = np.iinfo(np.int64).max
    padded = np.full((H + 2, W + 2), never, dtype=np.int64)
    padded[1:-1, 1:-1] = rank
    return np.stack([padded[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx] for dy, dx in _OFFSETS])


def flood_peaks(img: np.ndarray, base: float, rise: float) -> np.ndarray:
    """The bumps of ``img`` (float [H, W]) at or above ``base``, split at saddles at least
    ``rise`` deep: int64 [H, W], 0 under ``base`` or on no kept bump, else 1..k numbered by
    the raster index of the bump's peak pixel.

    Pixels at or above ``base`` are flooded from the highest (ties: the lower raster index
    first). A pixel whose flooded neighbours are all later in that order starts a part (its
    own peak); else it belongs to the peak its first-ranked flooded neighbour leads to, and
    joins every part its flooded neighbours hold. Where parts meet, each one but the part
    with the highest peak (ties: the lower peak index) is kept as a bump when its peak lies
    at least ``rise`` above this pixel's value, and is merged into that part's peak
    otherwise. A part that meets no higher one is kept when its peak lies at least ``rise``
    above ``base``."""
    img = np.asarray(img, dtype=np.float64)
    H, W = img.shape
    flat = img.reshape(-1)
    out = np.zeros(H * W, dtype=np.int64)
    above = np.flatnonzero(flat >= base)
    if not len(above):
        return out.reshape(H, W)
    order = above[np.argsort(-flat[above], kind="stable")]  # highest first, ties by index
    never = np.iinfo(np.int64).max
    rank = np.full(H * W, never, dtype=np.int64)
    rank[order] = np.arange(len(order))
    flooded = rank != never
    near = _neighbour_ranks(rank.reshape(H, W)).reshape(8, -1)  # [8, HW]
    # the way up: the neighbour flooded first, where it was flooded before the pixel
    pixels = np.arange(H * W)
    first = near.argmin(0)
    up_rank = near[first, pixels]
    steps = np.array([dy * W + dx for dy, dx in _OFFSETS])
    pointer = np.where((up_rank < rank) & flooded, pixels + steps[first], pixels)  # a peak, or off the flood: itself
    while True:  # pointer jumping: each pixel's peak
        nxt = pointer[pointer]
        if np.array_equal(nxt, pointer):
            break
        pointer = nxt
    basin = pointer  # peak pixel of each pixel's basin (its own index off the flood)
    # the merge pixels: flooded neighbours in two or more basins
    earlier = (near < rank[None, :]) & flooded[None, :]
    nb = np.where(earlier, basin[np.clip(pixels[None, :] + steps[:, None], 0, H * W - 1)], -1)
    lo = np.where(earlier, nb, never).min(0)
    hi = nb.max(0)
    meets = np.flatnonzero(earlier.any(0) & (lo != hi))
    meets = meets[np.argsort(rank[meets], kind="stable")]
    peaks = np.flatnonzero((basin == pixels) & flooded)
    part = {int(p): int(p) for p in peaks}  # union-find over the basins (by peak pixel)

    def root(p: int) -> int:
        while part[p] != p:
            part[p] = part[part[p]]
            p = part[p]
        return p

    alias = {}  # a peak merged into a higher one -> that part's peak
    kept = set()
    for i in meets.tolist():
        v = flat[i]
        roots = {root(int(b)) for b in nb[:, i] if b >= 0}
        if len(roots) < 2:
            continue
        # a part's root is its highest peak (the absorbing part keeps its root)
        high, *lower = sorted(roots, key=lambda r: (-flat[r], r))
        for low in lower:
            part[low] = high
            if flat[low] - v >= rise:
                kept.add(low)
            else:
                alias[low] = high
    kept |= {p for p in part if part[p] == p and flat[p] - base >= rise}
    ids = {p: k for k, p in enumerate(sorted(kept), start=1)}
    lookup = np.zeros(H * W, dtype=np.int64)  # each basin's peak pixel -> its bump's id
    for p in peaks.tolist():
        q = p
        while q in alias:
            q = alias[q]
        lookup[p] = ids.get(q, 0)
    out[flooded] = lookup[basin[flooded]]
    return out.reshape(H, W)
