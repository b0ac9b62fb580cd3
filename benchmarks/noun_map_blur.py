"""Blurrier noun maps: every head's cross-attention smoothed further, over a background floor.

The scene families draw each object's bump in the noun's cross-attention 0.5-2 patches wide.
A real model's map can be blurrier: the noun's attention spread over several patches around
each object, with a background level that never reaches zero. This module makes any family's
noun maps blurrier in place, leaving the self-attention as it was, so that a counter reading
the map's bumps meets objects whose bumps merge and a floor under them.

:func:`blur_noun_maps` smooths each head's ``[H, W]`` map with a Gaussian of ``sigma`` patches
at 30 rows (scaled by ``H / 30``: the same blur relative to the frame on every grid), adds
``floor`` times the smoothed map's peak everywhere, and rescales the head's map to the total
it had (the attention the noun token received in that head is unchanged).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

__all__ = ["blur_noun_maps", "REFERENCE_ROWS"]

#: ``sigma`` is given in patches of a grid of this many rows (Wan2.1-1.3B's 30x52)
REFERENCE_ROWS = 30


def blur_noun_maps(frames: list, grid: tuple[int, int], sigma: float, floor: float = 0.05) -> float:
    """Blur the noun map (``frame.cross_attn``, ``[heads, HW]``) of every frame of ``frames``
    (``SyntheticFrame``s on ``grid`` = (H, W)) in place; returns the sigma used on this grid
    (``sigma * H / REFERENCE_ROWS`` patches).

    Raises ValueError for an empty frame list, a sigma that is not positive or a negative floor."""
    if not frames:
        raise ValueError("blur_noun_maps: frames is empty; expected the frames of one scene")
    if not sigma > 0 or not floor >= 0:
        raise ValueError(f"blur_noun_maps: sigma={sigma!r} and floor={floor!r}: expected "
                         "sigma > 0 (patches at 30 rows) and floor >= 0 (a share of the peak)")
    H, W = (int(g) for g in grid)
    used = float(sigma) * H / REFERENCE_ROWS
    for fr in frames:
        given = torch.as_tensor(fr.cross_attn)
        maps = given.double().reshape(-1, H, W).numpy()
        out = np.empty_like(maps)
        for h, m in enumerate(maps):
            smooth = gaussian_filter(m, used, mode="nearest")
            smooth = smooth + floor * float(smooth.max())
            total = float(smooth.sum())
            out[h] = smooth * (float(m.sum()) / total) if total > 0 else smooth
        fr.cross_attn = torch.from_numpy(out.reshape(len(maps), H * W)).to(given.dtype)
    return used
