"""A second family of synthetic attention scenes: every head dominated by a shared component.

Built to the failure that the first family (``synthetic_scenes.py``) did not show: in a real video
DiT most of every self-attention row is the same for all heads (a diffuse floor plus a
positional bump around the query), and the structure that separates instances is a minority
share of one head. Per frame:

- self-attention ``[heads, HW, HW]`` (rows sum to 1): each head is
  ``(1 - w) * shared + w * own`` where ``shared`` = ``0.3 * uniform + 0.7 * Gaussian(query,
  sigma 2-4 patches)`` (sigma drawn per head) and ``w`` is the head's own share (0.25-0.45).
  ``own`` by head type: *instance* (a foreground row spreads over its own instance; exactly
  one head), *class* (a foreground row spreads over all of the foreground), *positional*
  (a narrower Gaussian), *noisy* (random rows), *sink* (every row on one or two fixed keys),
  *diffuse* (uniform). Background rows of the instance and class heads are the shared
  component only. Then per-entry log-normal noise ``exp(noise * N(0, 1))`` and the rows are
  renormalised. The head order is shuffled per scene (``SyntheticScene.head_types`` says
  which is which);
- cross-attention ``[heads, HW]``: the instances blurred over several patches (Gaussian
  sigma 1.5-2.5), a background floor of 5% of the peak, two or three clutter bumps (30-60%
  of the peak) where no instance is, per-head amplitude, one attention-sink head with a sharp
  spike, and speckle that grows with ``noise``.

Instances never touch (one background patch at least between two) unless ``close`` asks for
neighbours. Seeded: ``make_shared_scene(..., seed=s)`` is reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from synthetic_scenes import SyntheticFrame, SyntheticScene, _gaussian_blur, moved_labels, random_instance_masks

__all__ = ["make_shared_scene", "SHARED_HEAD_TYPES"]

# 12 heads like Wan2.1-1.3B: exactly one instance-separating head.
SHARED_HEAD_TYPES: tuple[str, ...] = (
    "instance", "class", "class", "positional", "positional", "positional",
    "noisy", "noisy", "sink", "sink", "diffuse", "diffuse",
)


def _row_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def _self_attention(rng: np.random.Generator, labels: np.ndarray, noise: float,
                    head_types: tuple[str, ...], gen: torch.Generator,
                    instance_share: float = 1.0) -> torch.Tensor:
    H, W = labels.shape
    N = H * W
    lab = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    fg = lab > 0
    same_inst = ((lab[:, None] == lab[None, :]) & fg[:, None]).float()
    all_fg = (fg[:, None] & fg[None, :]).float()
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)
    d2 = torch.cdist(pos, pos).square_()
    uniform = torch.full((N, N), 1.0 / N)
    heads = []
    for kind in head_types:
        sigma = float(rng.uniform(5.0, 9.0))
        shared = 0.3 * uniform + 0.7 * _row_normalise(torch.exp(-d2 / (2 * sigma * sigma)))
        w = float(rng.uniform(0.3, 0.5))
        if kind == "instance":
            w *= instance_share
            own = torch.where(fg[:, None], _row_normalise(same_inst), shared)
        elif kind == "class":
            own = torch.where(fg[:, None], _row_normalise(all_fg), shared)
        elif kind == "positional":
            s = float(rng.uniform(0.8, 1.6))
            own = _row_normalise(torch.exp(-d2 / (2 * s * s)))
        elif kind == "noisy":
            own = torch.softmax(2.0 * torch.randn(N, N, generator=gen), dim=-1)
        elif kind == "sink":
            own = torch.zeros(N, N)
            for key in rng.choice(N, size=int(rng.integers(1, 3)), replace=False):
                own[:, int(key)] = 1.0
            own = _row_normalise(own)
        elif kind == "diffuse":
            own = uniform
        else:
            raise ValueError(f"unknown head type {kind!r}; expected one of "
                             f"{sorted(set(SHARED_HEAD_TYPES))}")
        a = (1.0 - w) * shared + w * own
        if noise > 0:
            a = a * torch.exp(noise * torch.randn(N, N, generator=gen))
        heads.append(_row_normalise(a))
    return torch.stack(heads).float()


def _cross_attention(rng: np.random.Generator, labels: np.ndarray, noise: float,
                     n_heads: int, clutter_centres: np.ndarray) -> torch.Tensor:
    H, W = labels.shape
    n = int(labels.max())
    fg = labels > 0
    clutter = np.zeros((H, W))
    for (cy, cx), amp in clutter_centres:
        spot = np.zeros((H, W))
        spot[int(cy) % H, int(cx) % W] = 1.0
        spot = _gaussian_blur(spot, float(rng.uniform(1.2, 2.0)))
        clutter += amp * spot / (spot.max() + 1e-12)
    sink_head = int(rng.integers(n_heads))
    maps = []
    for h in range(n_heads):
        amp = rng.uniform(0.7, 1.3, size=n + 1)
        inst = np.zeros((H, W))
        for k in range(1, n + 1):
            inst += amp[k] * (labels == k)
        inst = _gaussian_blur(inst, float(rng.uniform(1.5, 2.5)))
        inst = inst / (inst.max() + 1e-12) if n else inst
        m = inst + clutter * float(rng.uniform(0.8, 1.2)) + 0.05
        m = m + noise * 0.05 * np.abs(rng.normal(size=(H, W)))
        if h == sink_head:
            m = 0.3 * m
            m[int(rng.integers(H)), int(rng.integers(W))] += 2.0
        maps.append(m * float(rng.uniform(0.5, 1.5)) * 0.02)
    del fg
    return torch.from_numpy(np.stack(maps).reshape(n_heads, H * W).astype(np.float32))


def drifting_scene(rng: np.random.Generator, n_instances: int, grid: tuple[int, int], *,
                   noise: float, drift: float, radius: tuple[float, float] | None, close: float,
                   head_types: tuple[str, ...], shuffle_heads: bool, shape: str = "blob"
                   ) -> tuple[list, np.ndarray, SyntheticScene, torch.Generator]:
    """The set-up shared by the scene families drawn from ``rng``: ``n_instances`` objects of
    ``shape`` (``synthetic_scenes.SHAPES``; radius by default (2, 4) scaled by H / 30, at least (1.4, 2.4)), their velocities
    (``drift`` patches per frame), the empty scene with the head order (shuffled when
    asked) and a torch generator. Returns (masks, velocity [n, 2], scene, generator)."""
    if n_instances < 0:
        raise ValueError(f"n_instances={n_instances!r}: expected an int >= 0")
    if radius is None:
        s = grid[0] / 30.0
        radius = (max(2.0 * s, 1.4), max(4.0 * s, 2.4))
    masks, _, _ = random_instance_masks(rng, grid, n_instances, radius, close, shape=shape)
    velocity = rng.normal(size=(len(masks), 2))
    velocity *= drift / (np.linalg.norm(velocity, axis=1, keepdims=True) + 1e-9)
    types = list(head_types)
    if shuffle_heads:
        types = [types[i] for i in rng.permutation(len(types))]
    scene = SyntheticScene(grid=tuple(grid), noise=noise, head_types=tuple(types))
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return masks, velocity, scene, gen


def make_shared_scene(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
                      noise: float = 0.5, seed: int = 0, drift: float = 0.5,
                      radius: tuple[float, float] | None = None, close: float = 0.0,
                      head_types: tuple[str, ...] = SHARED_HEAD_TYPES,
                      shuffle_heads: bool = True, shape: str = "blob",
                      instance_share: float = 1.0) -> SyntheticScene:
    """A seeded scene of the shared-component family (see the module docstring).

    Args:
        n_instances: objects to place (1..~10); fewer are placed if the grid is too crowded
            (``frame.count`` is always the truth).
        grid: (H, W) in patches: (30, 52) for Wan2.1 at 832x480, (15, 26) for a smaller one.
        noise: std of the per-entry log-normal noise on the self-attention (0 clean, 0.5
            moderate, 1.0 hard); it also scales the cross-attention speckle.
        radius: blob radius range in patches; default (2, 4) scaled by H / 30 (at least
            (1.4, 2.4)).
        close: probability that a blob is placed next to an earlier one (0 = never touching,
            as in the failure this family reproduces).
        shuffle_heads: shuffle the head order per scene (the truth is in ``head_types``).
        shape: the objects' shape, ``"blob"`` or ``"bar"`` (``synthetic_scenes.SHAPES``).
        instance_share: scales the instance head's own share ``w`` (1 = 0.3-0.5 of every
            row; 0.5 = 0.15-0.25): how weak the one instance-separating structure is.
    """
    if not instance_share > 0:
        raise ValueError(f"instance_share={instance_share!r}: expected a number > 0")
    rng = np.random.default_rng(seed)
    masks, velocity, scene, gen = drifting_scene(rng, n_instances, grid, noise=noise, drift=drift,
                                                 radius=radius, close=close, head_types=head_types,
                                                 shuffle_heads=shuffle_heads, shape=shape)
    types = scene.head_types
    occupied = np.zeros(grid, dtype=bool)
    for m in masks:
        occupied |= m
    far = np.argwhere(_gaussian_blur(occupied.astype(float), 2.0) < 0.05)
    clutter = []
    for _ in range(int(rng.integers(2, 4))):
        if len(far):
            clutter.append((far[int(rng.integers(len(far)))], float(rng.uniform(0.3, 0.6))))
    for f in range(n_frames):
        labels = moved_labels(masks, velocity, f, grid)
        self_attn = _self_attention(rng, labels, noise, scene.head_types, gen, instance_share)
        cross_attn = _cross_attention(rng, labels, noise, len(types), clutter)
        scene.frames.append(SyntheticFrame(self_attn, cross_attn, labels))
    return scene
