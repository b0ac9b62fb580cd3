"""Exact object counter for toy-world frames: connected components per colour.

Each pixel is assigned to the nearest of the background and category colours (Euclidean
RGB); a pixel farther than ``max_distance`` from all of them is left unassigned. Objects of
one category are the 8-connected components of its pixels with at least ``min_area``
pixels (the smallest sprite, the triangle, has 13; specks from a generated frame are
ignored). On clips from :mod:`numina_hooks.toy.world` this is exact, because the world
keeps same-category objects at least one pixel apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .world import BACKGROUND, CATEGORIES

_EIGHT = np.ones((3, 3), dtype=bool)
_PALETTE = np.array([BACKGROUND] + [c.rgb for c in CATEGORIES], dtype=np.float32)


def classify_pixels(frames: np.ndarray, max_distance: float = 110.0) -> np.ndarray:
    """Category index per pixel: [..., H, W] int8, -1 = background or unassigned.

    ``frames`` is uint8 [..., H, W, 3]; the index refers to ``world.CATEGORIES``.
    """
    frames = np.asarray(frames)
    if frames.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [..., H, W, 3], got shape {frames.shape}")
    d = np.linalg.norm(frames[..., None, :].astype(np.float32) - _PALETTE, axis=-1)
    nearest = d.argmin(axis=-1)
    out = (nearest - 1).astype(np.int8)
    out[d.min(axis=-1) > max_distance] = -1
    return out


def label_objects(frame: np.ndarray, min_area: int = 4, max_distance: float = 110.0
                  ) -> dict[str, np.ndarray]:
    """Instance labels of one frame, per category name.

    ``frame`` is uint8 [H, W, 3]. Returns ``{name: int32 [H, W]}`` with 0 = none and
    1..n = the category's objects (components smaller than ``min_area`` dropped).
    """
    cls = classify_pixels(frame, max_distance)
    out = {}
    for i, cat in enumerate(CATEGORIES):
        labels, n = ndimage.label(cls == i, structure=_EIGHT)
        if n:
            areas = np.bincount(labels.ravel(), minlength=n + 1)
            keep = np.flatnonzero(areas >= min_area)
            keep = keep[keep > 0]
            remap = np.zeros(n + 1, dtype=np.int32)
            remap[keep] = np.arange(1, len(keep) + 1)
            labels = remap[labels]
        out[cat.name] = labels.astype(np.int32)
    return out


def count_objects(frames: np.ndarray, min_area: int = 4, max_distance: float = 110.0
                  ) -> list[dict[str, int]]:
    """Objects per category name in every frame.

    ``frames`` is uint8 [F, H, W, 3] (or one frame [H, W, 3], giving a one-item list).
    Every category appears in each dict, with 0 when absent.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    result = []
    for frame in frames:
        labels = label_objects(frame, min_area, max_distance)
        result.append({name: int(lab.max()) for name, lab in labels.items()})
    return result


def patch_labels(labels: np.ndarray, patch: int = 2, min_pixels: int = 1) -> np.ndarray:
    """Pixel instance labels int [..., H, W] -> patch labels [..., H // patch, W // patch]
    (0 = none).

    A patch takes the object holding most of its pixels (the smaller id on a tie), when that
    object holds at least ``min_pixels`` of them. The default (any pixel) is the toy world's
    own definition of an object's patches (``world.patch_masks``), under which counting is
    exact."""
    *lead, h, w = labels.shape
    blocks = labels.reshape(*lead, h // patch, patch, w // patch, patch)
    blocks = np.moveaxis(blocks, -3, -2).reshape(*lead, h // patch, w // patch, patch * patch)
    out = np.zeros(blocks.shape[:-1], dtype=np.int32)
    best = np.full(blocks.shape[:-1], max(min_pixels, 1) - 1)
    for k in np.unique(blocks[blocks > 0]):
        held = (blocks == k).sum(-1)
        out[held > best] = k
        best = np.maximum(best, held)
    return out
