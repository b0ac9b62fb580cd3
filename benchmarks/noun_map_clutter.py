"""Clutter in the noun's cross-attention: bumps as strong as the objects where no object is.

A real model's cross-attention for "cat" also lights up on things that are not cats: a
similar texture, a cat-coloured cushion, the ground the cats stand on. The scene families
give their noun maps clutter at 0.15-0.6 of the objects' strength; this module adds more and
stronger clutter to any family's frames, in the noun's map only (the self-attention holds no
object there), so that a counter that trusts the map's bumps counts them.

:func:`add_clutter` changes a scene's frames in place: ``k`` spots (``num``: drawn in
``[lo, hi)``), fixed for the scene (clutter does not move with the objects), each at least
``clearance`` patches from every object of every frame, a Gaussian bump (sigma 1.0-1.8
patches) whose peak is ``amp`` (drawn in ``[lo, hi)`` per spot) times the head's range, the
objects' highest value in that head's map above the map's median, added to every head of
the noun's ``[heads, HW]`` map.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, gaussian_filter

__all__ = ["add_clutter", "DEFAULT_CLUTTER"]

#: the ``--clutter`` run's setting: 3-5 spots at 0.5-0.9 of the objects' strength
DEFAULT_CLUTTER = {"amp": (0.5, 0.9), "num": (3, 6), "clearance": 3.0}


def add_clutter(frames: list, grid: tuple[int, int], seed: int, amp: tuple[float, float] = (0.5, 0.9),
                num: tuple[int, int] = (3, 6), clearance: float = 3.0) -> int:
    """Add clutter bumps to the noun map (``frame.cross_attn``, ``[heads, HW]``) of every
    frame of ``frames`` (``SyntheticFrame``s on ``grid`` = (H, W)), in place; returns how many
    spots were placed (fewer than drawn when the objects leave no room ``clearance`` patches
    away). Seeded by ``seed``: the same arguments give the same maps.

    Raises ValueError for an empty frame list or a bad range."""
    if not frames:
        raise ValueError("add_clutter: frames is empty; expected the frames of one scene")
    if not (0 < amp[0] <= amp[1]) or not (1 <= num[0] < num[1]):
        raise ValueError(f"add_clutter: amp={amp!r} and num={num!r}: expected 0 < lo <= hi and 1 <= lo < hi")
    H, W = (int(g) for g in grid)
    rng = np.random.default_rng(seed)
    occupied = np.zeros((H, W), dtype=bool)
    for fr in frames:
        occupied |= np.asarray(fr.labels).reshape(H, W) > 0
    room = np.argwhere(distance_transform_edt(~occupied) >= clearance)
    spots = []
    for _ in range(int(rng.integers(num[0], num[1]))):
        if len(room) == 0:
            break
        y, x = room[int(rng.integers(len(room)))]
        bump = np.zeros((H, W))
        bump[y, x] = 1.0
        bump = gaussian_filter(bump, float(rng.uniform(1.0, 1.8)))
        spots.append(float(rng.uniform(amp[0], amp[1])) * bump / bump.max())
    if not spots:
        return 0
    shape = np.sum(spots, axis=0)
    for fr in frames:
        given = torch.as_tensor(fr.cross_attn)
        cross = given.double().reshape(-1, H, W)
        objects = np.asarray(fr.labels).reshape(H, W) > 0
        out = cross.clone()
        for h in range(cross.shape[0]):
            m = cross[h].numpy()
            top = float(m[objects].max()) if objects.any() else float(m.max())
            # a head whose objects are no brighter than its median gets none (the joint
            # family's weakest heads: a negative amplitude made negative entries)
            out[h] += torch.from_numpy(max(top - float(np.median(m)), 0.0) * shape)
        fr.cross_attn = out.reshape(cross.shape[0], H * W).to(given.dtype)
    return len(spots)
