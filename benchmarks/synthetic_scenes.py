"""Synthetic DiT-like attention scenes with ground-truth instance masks.

Used by the tests and the benchmarks of the identify phase. A scene is a few objects of one
category (irregular blobs, some touching or close together) that drift across frames. For each
frame it gives what a video DiT's attention looks like at an intermediate layer and step:

- self-attention ``[heads, HW, HW]`` (rows sum to 1), as a softmax over logits made of a mix of
  head types: *diffuse* (noise only), *local* (a Gaussian around the query, several widths:
  positional heads), *class* (foreground attends to all of the foreground alike),
  *instance* (a pixel attends to its own instance: the instance-separable heads the method
  looks for) and *mixed* (a weak instance term on top of a class term); plus Gaussian noise on
  the logits;
- cross-attention ``[heads, HW]`` for the noun: blurry bumps on the instances (the blur makes
  neighbouring instances merge into one bump), background clutter (smooth random field and
  a few false bumps), per-head amplitude, some diffuse heads and sometimes an attention-sink
  head with one sharp peak elsewhere.

Everything is seeded: ``make_scene(..., seed=s)`` is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["SyntheticFrame", "SyntheticScene", "make_scene", "random_instance_masks",
           "SELF_HEAD_TYPES", "SHAPES"]

# One entry per head, in head order (12 heads like Wan2.1-1.3B).
SELF_HEAD_TYPES: tuple[str, ...] = (
    "diffuse", "local", "class", "diffuse", "local", "instance", "class", "local",
    "mixed", "diffuse", "instance", "mixed",
)


@dataclass
class SyntheticFrame:
    """One frame: attention maps and the ground truth."""
    self_attn: torch.Tensor  # [heads, HW, HW] float32, rows sum to 1
    cross_attn: torch.Tensor  # [heads, HW] float32, non-negative
    labels: np.ndarray  # [H, W] int32: 0 background, 1..n instances (ground truth)
    # the other nouns of the prompt, where a family has them: noun -> [heads, HW] cross maps
    other_cross: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.labels.max())


@dataclass
class SyntheticScene:
    grid: tuple[int, int]
    noise: float
    head_types: tuple[str, ...]
    frames: list[SyntheticFrame] = field(default_factory=list)

    def tensors(self):
        """Every frame's self-attention, cross-attention and labels (as a tensor), in
        order: what two scenes made from the same seed must share."""
        for f in self.frames:
            yield f.self_attn
            yield f.cross_attn
            yield torch.from_numpy(f.labels)


def _blob(rng: np.random.Generator, grid: tuple[int, int], centre: np.ndarray,
          radius: float) -> np.ndarray:
    """An irregular blob: the union of 2-3 jittered ellipses around ``centre``."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    mask = np.zeros(grid, dtype=bool)
    for _ in range(int(rng.integers(2, 4))):
        c = centre + rng.normal(0.0, radius * 0.35, size=2)
        ry, rx = radius * rng.uniform(0.6, 1.1, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - c[0], xx - c[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        mask |= (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
    return mask


def _bar(rng: np.random.Generator, grid: tuple[int, int], centre: np.ndarray,
         radius: float) -> np.ndarray:
    """An elongated object (a person standing, a bottle, a car seen from the side): one
    ellipse of aspect ratio 2 to 3.5 at a random angle, of the area of a disc of ``radius``."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    aspect = rng.uniform(2.0, 3.5)
    ry, rx = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0


#: object shapes of ``random_instance_masks``: name -> maker ``(rng, grid, centre, radius)``
SHAPES = {"blob": _blob, "bar": _bar}


def moved_labels(masks: list[np.ndarray], velocity: np.ndarray, frame: int, grid: tuple[int, int]) -> np.ndarray:
    """Instance labels int32 [H, W] of frame ``frame``: mask k (bool [H, W]) shifted by
    ``velocity[k] * frame`` patches (wrapping), earlier masks on top, relabelled 1..m so
    that instances hidden by overlap leave no gaps."""
    labels = np.zeros(grid, dtype=np.int32)
    for k, m in enumerate(masks):
        shift = np.round(velocity[k] * frame).astype(int)
        moved = np.roll(m, tuple(shift), axis=(0, 1))
        labels[moved & (labels == 0)] = k + 1
    present = [k for k in range(1, len(masks) + 1) if (labels == k).any()]
    remap = np.zeros(len(masks) + 1, dtype=np.int32)
    remap[present] = np.arange(1, len(present) + 1)
    return remap[labels]


def random_instance_masks(rng: np.random.Generator, grid: tuple[int, int], n: int,
                          radius: tuple[float, float] = (2.0, 4.0), close: float = 0.4,
                          tries: int = 200, shape: str = "blob"
                          ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``n`` non-overlapping objects of ``shape`` (``SHAPES``: irregular blobs or elongated
    bars); with probability ``close`` one is put next to an earlier one (touching or one
    patch apart). Returns (masks, centres [n,2], radii [n])."""
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r}: expected one of {sorted(SHAPES)}")
    make = SHAPES[shape]
    H, W = grid
    occupied = np.zeros(grid, dtype=bool)
    masks: list[np.ndarray] = []
    centres: list[np.ndarray] = []
    radii: list[float] = []
    for _ in range(n):
        for _attempt in range(tries):
            r = float(rng.uniform(*radius))
            if masks and rng.random() < close:
                k = int(rng.integers(len(masks)))
                direction = rng.normal(size=2)
                direction /= np.linalg.norm(direction) + 1e-9
                c = centres[k] + direction * (radii[k] + r + rng.uniform(0.0, 1.5))
            else:
                c = np.array([rng.uniform(r, H - 1 - r), rng.uniform(r, W - 1 - r)])
            m = make(rng, grid, c, r)
            grown = m | np.roll(m, 1, 0) | np.roll(m, -1, 0) | np.roll(m, 1, 1) | np.roll(m, -1, 1)
            if m.sum() < 4 or (grown & occupied).any():
                continue  # touching is allowed only diagonally-free: keep a 1-patch seam
            masks.append(m)
            centres.append(c)
            radii.append(r)
            occupied |= m
            break
    return masks, np.array(centres).reshape(-1, 2), np.array(radii)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(img, sigma, mode="nearest")


def _frame_attention(rng: np.random.Generator, labels: np.ndarray, noise: float,
                     head_types: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    H, W = labels.shape
    N = H * W
    lab = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    fg = lab > 0
    same_inst = (lab[:, None] == lab[None, :]) & fg[:, None]
    same_fg = fg[:, None] & fg[None, :]
    both_bg = (~fg)[:, None] & (~fg)[None, :]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)
    d2 = torch.cdist(pos, pos).square_()
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    heads = []
    for kind in head_types:
        sigma = float(rng.uniform(1.5, 6.0))
        local = torch.exp(-d2 / (2 * sigma * sigma))
        if kind == "diffuse":
            logits = torch.zeros(N, N)
            scale = 0.5
        elif kind == "local":
            logits = 6.0 * local
            scale = 1.0
        elif kind == "class":
            logits = 3.5 * same_fg.float() + 1.0 * both_bg.float() + 2.0 * local
            scale = 1.0
        elif kind == "instance":
            logits = 4.0 * same_inst.float() + 1.5 * both_bg.float() + 2.0 * local
            scale = 1.0
        elif kind == "mixed":
            logits = 2.0 * same_inst.float() + 2.0 * same_fg.float() + 2.0 * local
            scale = 1.0
        else:
            raise ValueError(f"unknown head type {kind!r}; expected one of "
                             "diffuse, local, class, instance, mixed")
        logits += (noise * scale) * torch.randn(N, N, generator=gen)
        heads.append(torch.softmax(logits, dim=-1))
    self_attn = torch.stack(heads)

    # Cross-attention: blurry instance bumps (neighbours merge), clutter, sinks.
    n = int(labels.max())
    cross = []
    clutter = _gaussian_blur(rng.normal(size=(H, W)), 3.0)
    clutter = (clutter - clutter.min()) / (np.ptp(clutter) + 1e-9)
    for h in range(len(head_types)):
        kind = h % 4
        amp = rng.uniform(0.6, 1.4, size=n + 1)
        bumps = np.zeros((H, W))
        for k in range(1, n + 1):
            bumps += amp[k] * (labels == k)
        blur = float(rng.uniform(1.2, 2.2))
        bumps = _gaussian_blur(bumps, blur)
        bumps /= bumps.max() + 1e-9
        if kind == 3:  # a diffuse head: weak, mostly clutter
            m = 0.15 * bumps + 0.3 * clutter
        else:
            m = bumps + 0.25 * clutter
            for _ in range(int(rng.integers(0, 3))):  # false bumps of the clutter
                c = rng.uniform([0, 0], [H, W])
                false = np.zeros((H, W))
                false[int(c[0]) % H, int(c[1]) % W] = 1.0
                false = _gaussian_blur(false, 1.5)
                m += 0.2 * false / (false.max() + 1e-9)
        if kind == 2 and rng.random() < 0.5:  # an attention-sink head: one sharp spike
            m = 0.3 * m
            m[int(rng.integers(H)), int(rng.integers(W))] += 1.5
        m = m + noise * 0.05 * np.abs(rng.normal(size=(H, W)))
        cross.append(np.maximum(m, 0.0) * 0.05)
    cross_attn = torch.from_numpy(np.stack(cross).reshape(len(head_types), N).astype(np.float32))
    return self_attn, cross_attn


def make_scene(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
               noise: float = 1.0, seed: int = 0, drift: float = 0.6,
               radius: tuple[float, float] = (2.0, 4.0), close: float = 0.4,
               head_types: tuple[str, ...] = SELF_HEAD_TYPES, shape: str = "blob") -> SyntheticScene:
    """A seeded scene of ``n_instances`` blobs drifting over ``n_frames`` frames.

    Args:
        n_instances: objects to place (0..~10); fewer are placed if the grid is too crowded
            (the ground truth always says how many are there).
        grid: (H, W) in patches; Wan2.1 at 832x480 is (30, 52).
        noise: standard deviation of the Gaussian noise on the self-attention logits
            (0 clean, 1 typical, 2 hard); it also scales cross-attention speckle.
        drift: patches per frame each blob moves (a random direction per blob).
        head_types: one self-attention head type per head (see module docstring).
        shape: the objects' shape, ``"blob"`` or ``"bar"`` (``SHAPES``).
    """
    rng = np.random.default_rng(seed)
    H, W = grid
    masks, centres, radii = random_instance_masks(rng, grid, n_instances, radius, close, shape=shape)
    velocity = rng.normal(size=(len(masks), 2))
    velocity *= drift / (np.linalg.norm(velocity, axis=1, keepdims=True) + 1e-9)
    scene = SyntheticScene(grid=grid, noise=noise, head_types=tuple(head_types))
    for f in range(n_frames):
        labels = moved_labels(masks, velocity, f, grid)
        self_attn, cross_attn = _frame_attention(rng, labels, noise, tuple(head_types))
        scene.frames.append(SyntheticFrame(self_attn, cross_attn, labels))
    return scene
