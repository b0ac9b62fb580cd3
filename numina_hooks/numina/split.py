"""Step 5d: an instance that the noun's map shows as several bumps, split where the head's
own attention keeps the bumps' parts apart.

The adaptive cut joins two touching objects into one region when one edge across their seam
stays above the map's Otsu threshold (noise, a blurred seam); the containment tests then keep
the merged region as one instance. The noun's cross-attention often still shows the two
objects as two bumps (``layout.map_bumps``: peaks separated by a saddle). Here an instance
holding the peaks of two or more bumps is cut along the bumps (each of its pixels goes to the
bump it lies in, or to the nearest one), and the parts stay apart when the head's rows keep
them apart: the affinity between two parts (``log(N * mean A[i, j])``, as
``partition.link_regions`` measures pieces) lies under ``ratio`` times the smaller of their
own affinities, both of which are positive (each part holds its attention). Parts that attend
to each other as one object (a class-level head, or one object with two bright spots in the
map) are joined again, so the instance stays whole. The link rule of the partition read
backwards: pieces the linking step would join are never split.
"""

from __future__ import annotations

import numpy as np

from .partition import _components, _renumbered, group_affinities

__all__ = ["bump_peaks", "split_merged_instances"]


def bump_peaks(bumps: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """int64 [m]: the flat index of each bump's highest pixel in ``cross`` (float [H, W]);
    ``bumps``: int [H, W] labels 1..m (0 = none). Ties go to the first pixel in raster order."""
    flat = bumps.reshape(-1)
    m = int(flat.max()) if flat.size else 0
    values = np.asarray(cross, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(flat.size)[::-1], values))  # ascending value, first pixel last
    peaks = np.full(m + 1, -1, dtype=np.int64)
    peaks[flat[order]] = order  # the last write per label: its highest (first) pixel
    return peaks[1:]


def _bump_parts(instance: np.ndarray, bumps: np.ndarray, held: np.ndarray) -> np.ndarray:
    """int [H, W]: the pixels of ``instance`` (bool [H, W]) given to the bumps ``held``
    (their label values): a pixel inside one of them keeps its label, any other goes to the
    nearest pixel that does (Euclidean on the grid); 0 off the instance."""
    from scipy.ndimage import distance_transform_edt

    seeded = np.where(instance & np.isin(bumps, held), bumps, 0)
    _, (ri, ci) = distance_transform_edt(seeded == 0, return_indices=True)
    return np.where(instance, seeded[ri, ci], 0)


def split_merged_instances(labels: np.ndarray, bumps: np.ndarray, cross: np.ndarray, self_attn,
                           head: int, ratio: float, *, sample: int = 16, min_size: int = 2
                           ) -> np.ndarray:
    """``labels`` with each instance that holds the peaks of two or more of the map's
    ``bumps`` split where ``head``'s attention keeps the bumps' parts apart (module doc).

    Args:
        labels: int [H, W] instances of one noun (0 = none, 1..n).
        bumps: int [H, W] the noun map's bumps (``layout.map_bumps``; 0 = none).
        cross: float [H, W] the noun's map (the bumps' peaks are its maxima on them).
        self_attn: the frame's ``[heads, N, N]`` map or a source of its entries.
        head: the head whose instances ``labels`` are (its attention is measured).
        ratio: two parts stay apart when their affinity is under ``ratio`` times the smaller
            of their own (both positive); ``partition.link_regions``' ratio.
        sample: members measured per part.
        min_size: a part smaller than this (patches) is no object: the split is not made.

    Returns:
        int32 [H, W], renumbered 1..n' in raster order of their first pixel; ``labels``
        unchanged (as int32) where no instance is split.
    """
    labels = np.asarray(labels)
    H, W = labels.shape
    n = int(labels.max()) if labels.size else 0
    if n == 0 or int(bumps.max()) < 2:
        return labels.astype(np.int32, copy=False)
    peaks = bump_peaks(bumps, cross)
    owner = labels.reshape(-1)[peaks]  # the instance each bump's peak lies in (0 = none)
    out = labels.astype(np.int32, copy=True)
    next_id = n + 1  # the split parts' ids, renumbered at the end
    for inst in np.unique(owner[owner > 0]):
        held = np.nonzero(owner == inst)[0] + 1  # bump labels
        if len(held) < 2:
            continue
        parts = _bump_parts(labels == inst, bumps, held)
        groups = [np.nonzero(parts.reshape(-1) == b)[0] for b in held]
        if min(len(g) for g in groups) < min_size:
            continue
        aff, own = group_affinities(self_attn, head, groups, sample)
        lower = np.minimum(own[:, None], own[None, :])
        apart = (lower > 0) & (aff < ratio * lower)
        a, b = np.nonzero(np.triu(~apart, 1))
        group = _components(len(groups), a, b)
        if group.max() == 0:  # every part joined again: one object
            continue
        for g in range(int(group.max()) + 1):
            for j in np.nonzero(group == g)[0]:
                out.reshape(-1)[groups[j]] = next_id
            next_id += 1
    return _renumbered(out) if next_id > n + 1 else out
