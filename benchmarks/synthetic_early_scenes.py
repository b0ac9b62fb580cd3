"""Synthetic attention scenes modelled on a video DiT *early* in denoising.

Why a separate family
---------------------
The counting method reads one frame's attention at an early denoising step. At that point the
latent is still mostly noise, and what a DiT's self-attention shows is dominated by *position*:
with 2D rotary embeddings (RoPE) and the large constant component that hidden states carry, most
heads attend to a neighbourhood of the query whatever the content, some to the query's row or
column, and one or two keys soak up most of the attention in "sink" heads. Semantic structure
(same category, same texture, same object) is already there, but as a weaker additive part of
the logits whose strength differs from head to head; even the head that best separates
instances keeps a strong local component. The objects themselves are what a real frame holds:
a near object several times the area of far ones, standing people and poles (elongated), objects
cut by the frame's border, a thin foreground occluder that splits one object in two, and now and
then two objects of the noun touching.

How a scene is built
--------------------
1. *Layout* (:func:`_make_layout`). A background with a context region of the noun (a ground
   strip below a wavy horizon, or a sofa-like rounded box), sizes drawn with perspective (one
   near object of 40-100% of the maximum area, the others log-uniform down to ~4 patches; the
   maximum is 8% of the frame, areas scale with the grid's area), irregular ellipses of aspect up
   to 1:4, per-object linear motion of up to 2 patches per frame (reflected at the borders), and
   rejection sampling so that in *every* frame each object keeps >= 4 visible patches (>= 30% of
   its area when truncated), is 4-connected (two pieces when occluded), and keeps a one-patch
   gap to the others (one pair may touch, in about a third of the scenes with 4+ objects).
2. *Token features* (:func:`_frame_features`), ``[HW, D]``: a constant "bias" channel (the
   constant part of hidden states), a semantic block (object category, context, background,
   occluder, clutter that looks like the noun), an instance block (a random identity per object,
   with a mild part-to-part drift inside big objects and weaker membership on edge patches), a
   texture block (smooth random field), an edge block (presence and orientation of object
   edges) and a sink flag. ``noise`` adds white Gaussian noise to every channel.
3. *Self-attention* (:func:`_head_attention`): per head, q/k projections of the features into a
   128-dim head (Wan2.1's head size). 64 dims are unrotated (within a frame the temporal RoPE is
   constant) and, with the 9 lowest-frequency rotary pairs of each axis, carry content; the
   7 highest-frequency pairs of each axis carry the projected bias channel, so that after our 2D
   RoPE their dot product is a sum of cosines of the offset: a positional kernel. A smooth local
   bias ``-beta * log1p((dy/sy)^2 + (dx/sx)^2)`` is added, then ``softmax(q k^T / sqrt(d))``.
   The head type only sets the gains (logit units) of each part, see ``_HEAD_SPECS``.
4. *Cross-attention of the noun* (:func:`_cross_maps`): per head, objects at 0.4-1.0 of the
   strongest (independent of size), a leak onto the context region (0.15-0.35), 0-3 clutter
   bumps (0.2-0.5), blurred by 0.5-2 patches, times a head amplitude, over a floor, plus a
   little noise; sink and diffuse heads (and sometimes one more) are nearly uninformative.

Everything is drawn from ``np.random.default_rng(seed)``: the same arguments give bit-identical
tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["EARLY_HEAD_TYPES", "MAX_OBJECTS", "make_early_scene", "early_head_types",
           "instance_separation"]

MAX_OBJECTS = 8
MIN_GRID = 8
REF_AREA = 30 * 52  # sizes are given for Wan2.1-1.3B's 30x52 patch grid, scaled by area

# one entry per head (12 heads like Wan2.1-1.3B); the order is shuffled per scene
EARLY_HEAD_TYPES: tuple[str, ...] = (
    "local_narrow", "local_mid", "local_wide", "instance", "category", "texture",
    "sink", "diffuse", "row", "column", "boundary", "mixed",
)

HEAD_DIM = 128
N_PAIRS = 16  # rotary pairs per spatial axis (32 dims each for y and x)
N_POS_PAIRS = 7  # the highest-frequency pairs of each axis carry the positional kernel
ROPE_BASE = 10000.0
N_TIME = HEAD_DIM - 4 * N_PAIRS  # unrotated dims within one frame

# feature blocks of a token: name -> width
BLOCKS = {"bias": 1, "sem": 16, "inst": 16, "tex": 8, "edge": 3, "sink": 1}
_OFF = {}
_o = 0
for _name, _w in BLOCKS.items():
    _OFF[_name] = slice(_o, _o + _w)
    _o += _w
FEAT_DIM = _o
FEATURE_NOISE = 0.9  # norm of a block's noise at noise=1, against ~1 for its signal
NOISE_SMOOTH = 1.5  # half the noise variance is spatially smooth (patches), half white


@dataclass(frozen=True)
class _HeadSpec:
    """Gains of one head type, in logit units (what a unit-norm feature adds to its own match).

    pos_y/pos_x: peak of the RoPE positional kernel along each axis; width: its scale (patches);
    beta, sy, sx: the smooth local bias; sem/inst/tex/edge: content gains; edge_all: how much any
    query favours edge keys (boundary head); sink: logit of the sink keys over the log of HW.
    """
    pos_y: float
    pos_x: float
    width: float
    beta: float
    sy: float
    sx: float
    sem: float = 0.3
    inst: float = 0.2
    tex: float = 0.2
    edge: float = 0.0
    edge_all: float = 0.0
    sink: float | None = None


_HEAD_SPECS: dict[str, _HeadSpec] = {
    "local_narrow": _HeadSpec(2.0, 2.0, 1.0, 1.0, 1.5, 1.5, sem=0.3, inst=0.2, tex=0.2),
    "local_mid": _HeadSpec(1.6, 1.6, 2.5, 0.8, 3.0, 3.0, sem=0.4, inst=0.3, tex=0.3),
    "local_wide": _HeadSpec(1.2, 1.2, 5.0, 0.6, 6.0, 6.0, sem=0.5, inst=0.3, tex=0.4),
    "instance": _HeadSpec(1.3, 1.3, 2.0, 0.7, 3.0, 3.0, sem=0.6, inst=2.8, tex=0.2),
    "category": _HeadSpec(0.8, 0.8, 5.0, 0.35, 6.0, 6.0, sem=3.0, inst=0.2, tex=0.4),
    "texture": _HeadSpec(1.0, 1.0, 3.0, 0.5, 4.0, 4.0, sem=0.6, inst=0.1, tex=2.0),
    "sink": _HeadSpec(0.8, 0.8, 2.0, 0.4, 2.0, 2.0, sem=0.2, inst=0.1, tex=0.2, sink=1.5),
    "diffuse": _HeadSpec(0.5, 0.5, 5.0, 0.3, 8.0, 8.0, sem=0.2, inst=0.1, tex=0.2),
    "row": _HeadSpec(3.0, 0.2, 1.0, 0.8, 1.0, 30.0, sem=0.3, inst=0.2, tex=0.2),
    "column": _HeadSpec(0.2, 3.0, 1.0, 0.8, 30.0, 1.0, sem=0.3, inst=0.2, tex=0.2),
    "boundary": _HeadSpec(1.2, 1.2, 2.0, 0.6, 3.0, 3.0, sem=0.4, inst=0.4, tex=0.2,
                          edge=2.0, edge_all=0.6),
    "mixed": _HeadSpec(1.2, 1.2, 3.0, 0.6, 3.5, 3.5, sem=1.3, inst=1.3, tex=0.3),
}
assert set(EARLY_HEAD_TYPES) == set(_HEAD_SPECS) and EARLY_HEAD_TYPES.count("instance") == 1

# cross-attention of these head types is nearly flat
_FLAT_CROSS = ("sink", "diffuse")


def early_head_types(n_heads: int = 12) -> tuple[str, ...]:
    """``EARLY_HEAD_TYPES`` followed by its non-instance types, cycled, up to ``n_heads``."""
    if n_heads < len(EARLY_HEAD_TYPES):
        raise ValueError(f"n_heads={n_heads}: expected at least {len(EARLY_HEAD_TYPES)}")
    others = [t for t in EARLY_HEAD_TYPES if t != "instance"]
    extra = [others[i % len(others)] for i in range(n_heads - len(EARLY_HEAD_TYPES))]
    return EARLY_HEAD_TYPES + tuple(extra)


# --------------------------------------------------------------------------------------------
# layout: objects, motion, occluder, context region
# --------------------------------------------------------------------------------------------

@dataclass
class _Shape:
    """An irregular ellipse: semi-axes a (major, along angle theta in (y, x)) and b, with 2nd and
    3rd radial harmonics (amplitudes e2, e3, phases p2, p3)."""
    a: float
    b: float
    theta: float
    e2: float
    e3: float
    p2: float
    p3: float

    def extent(self) -> np.ndarray:
        """Half-extent ``[2]`` (y, x) of the bounding box, in patches."""
        c, s = abs(math.cos(self.theta)), abs(math.sin(self.theta))
        r = 1.0 + self.e2 + self.e3
        return np.array([self.a * c + self.b * s, self.a * s + self.b * c]) * r


def _raster(shape: _Shape, centre: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Rasterise ``shape`` at ``centre`` (y, x) on patch centres.

    Returns the in-frame mask ``[H, W]`` bool (clipped at the border, never wrapped) and the
    number of patches of the whole (unclipped) shape.
    """
    H, W = grid
    ext = shape.extent() + 1.0
    ys = np.arange(math.floor(centre[0] - ext[0]), math.ceil(centre[0] + ext[0]) + 1)
    xs = np.arange(math.floor(centre[1] - ext[1]), math.ceil(centre[1] + ext[1]) + 1)
    dy = ys[:, None] - centre[0]
    dx = xs[None, :] - centre[1]
    c, s = math.cos(shape.theta), math.sin(shape.theta)
    u = (dy * c + dx * s) / shape.a
    v = (-dy * s + dx * c) / shape.b
    phi = np.arctan2(v, u)
    inside = np.hypot(u, v) <= (1.0 + shape.e2 * np.cos(2 * phi + shape.p2)
                                + shape.e3 * np.cos(3 * phi + shape.p3))
    mask = np.zeros(grid, dtype=bool)
    yk = (ys >= 0) & (ys < H)
    xk = (xs >= 0) & (xs < W)
    if yk.any() and xk.any():
        mask[ys[yk][0]:ys[yk][-1] + 1, xs[xk][0]:xs[xk][-1] + 1] = inside[np.ix_(yk, xk)]
    return mask, int(inside.sum())


def _band(grid: tuple[int, int], point: np.ndarray, direction: np.ndarray,
          width: int) -> np.ndarray:
    """A straight occluder ``[H, W]`` bool through ``point`` along unit ``direction`` (y, x),
    crossing the whole frame; thick enough to cut 4-connected paths."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    ny, nx = -direction[1], direction[0]
    d = (yy - point[0]) * ny + (xx - point[1]) * nx
    return np.abs(d) < 0.5 * width * (abs(ny) + abs(nx))


@dataclass
class _Layout:
    """Everything about a scene that is not attention: per-frame labels and the background."""
    labels: np.ndarray  # [T, H, W] int32, 0 background, 1..n
    occluder: np.ndarray  # [H, W] bool (all False without one)
    occluded_id: int  # 0 when no occluder
    context: np.ndarray  # [H, W] bool: the region the objects stand on / in
    background: np.ndarray  # [H, W] int: background class 0 or 1
    clutter: list = field(default_factory=list)  # (y, x, sigma, amplitude)
    sinks: list = field(default_factory=list)  # flat token indices of the sink keys
    touching: tuple | None = None  # ids of the touching pair


FOUR = ndimage.generate_binary_structure(2, 1)
EIGHT = np.ones((3, 3), dtype=bool)


def _sizes(rng: np.random.Generator, n: int, grid: tuple[int, int]) -> np.ndarray:
    """Target areas ``[n]`` (patches), largest first: one near object, the rest farther."""
    hw = grid[0] * grid[1]
    a_min = max(4.6, 4.6 * hw / REF_AREA)
    a_max = max(0.08 * hw, 2 * a_min)
    if n == 0:
        return np.zeros(0)
    areas = np.exp(rng.uniform(np.log(a_min), np.log(max(a_min * 1.01, 0.45 * a_max)), size=n))
    if n == 1 or (n >= 2 and rng.random() < 0.85):
        areas[0] = rng.uniform(0.4, 1.0) * a_max  # the near one
    areas = np.sort(areas)[::-1]
    total_cap = 0.3 * hw
    if areas.sum() > total_cap:
        areas = np.maximum(areas * total_cap / areas.sum(), a_min)
    return areas


def _random_shape(rng: np.random.Generator, area: float) -> _Shape:
    """An irregular ellipse of ``area`` patches; elongated (1:2 to 1:4, upright) 35% of the time
    when big enough, else aspect 1-1.8 at any angle."""
    if area >= 10 and rng.random() < 0.35:
        aspect = rng.uniform(2.0, 4.0)
        theta = rng.normal(0.0, 0.12)  # upright: a standing person, a pole
    else:
        aspect = rng.uniform(1.0, 1.8)
        theta = rng.uniform(0, np.pi)
    b = math.sqrt(area / (math.pi * aspect))
    return _Shape(a=b * aspect, b=b, theta=theta, e2=rng.uniform(0, 0.12), e3=rng.uniform(0, 0.1),
                  p2=rng.uniform(0, 2 * np.pi), p3=rng.uniform(0, 2 * np.pi))


def _trajectory(rng: np.random.Generator, c0: np.ndarray, v: np.ndarray, T: int,
                grid: tuple[int, int], ext: np.ndarray, jitter: float, whole_flip: bool
                ) -> np.ndarray:
    """Centres ``[T, 2]``: constant velocity ``v`` plus jitter, reflected near the borders
    (``whole_flip``: reverse the whole velocity, keeping its direction's line)."""
    lo = -0.4 * ext
    hi = np.array(grid, dtype=np.float64) - 1 + 0.4 * ext
    cs = [np.asarray(c0, dtype=np.float64)]
    v = np.asarray(v, dtype=np.float64).copy()
    for _ in range(1, T):
        c = cs[-1] + v + (rng.normal(0.0, jitter, 2) if jitter > 0 else 0.0)
        out = (c < lo) | (c > hi)
        if out.any():
            if whole_flip:
                v = -v
            else:
                v[out] = -v[out]
            c = cs[-1] + v
        cs.append(c)
    return np.stack(cs)


def _pieces(mask: np.ndarray) -> list[int]:
    """Sizes of the 4-connected pieces of ``mask`` ``[H, W]``."""
    lab, k = ndimage.label(mask, FOUR)
    return list(np.bincount(lab.ravel(), minlength=k + 1)[1:]) if k else []


def _check_object(masks: np.ndarray, full: np.ndarray, cut: np.ndarray | None,
                  avoid: np.ndarray | None) -> np.ndarray | None:
    """Visible masks ``[T, H, W]`` of one object if it is valid in every frame, else None.

    ``masks``: in-frame masks ``[T, H, W]``; ``full``: unclipped areas ``[T]``; ``cut``: the
    occluder band when this object is the occluded one (it must split into exactly two pieces of
    >= 2 patches); ``avoid``: the occluder dilated, which a non-occluded object must not touch.
    """
    vis = masks & ~cut[None] if cut is not None else masks
    for t in range(masks.shape[0]):
        m = vis[t]
        area = int(m.sum())
        if area < 4 or masks[t].sum() < 0.3 * full[t]:
            return None
        if avoid is not None and (masks[t] & avoid).any():
            return None
        p = _pieces(m)
        if cut is None and len(p) != 1:
            return None
        if cut is not None and (len(p) != 2 or min(p) < 2):
            return None
    return vis


def _free_of(masks: np.ndarray, others: list[np.ndarray], touch_ok: set) -> bool:
    """Whether ``masks`` ``[T, H, W]`` keeps a one-patch gap (8-neighbourhood) to every placed
    object in every frame; the objects listed in ``touch_ok`` may touch but not overlap."""
    grown = np.stack([ndimage.binary_dilation(m, EIGHT) for m in masks])
    for j, om in enumerate(others):
        if j in touch_ok:
            if (masks & om).any():
                return False
        elif (grown & om).any():
            return False
    return True


def _context(rng: np.random.Generator, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The context region ``[H, W]`` bool (a ground strip below a wavy horizon, or a sofa-like
    rounded box) and a background class map ``[H, W]`` int (0 above the horizon, 1 below)."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    horizon = H * rng.uniform(0.35, 0.6) + rng.uniform(0.5, 2.0) * np.sin(
        xx / W * 2 * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 2 * np.pi))
    below = yy >= horizon
    if rng.random() < 0.6:
        return below, below.astype(np.int64)
    h, w = H * rng.uniform(0.3, 0.5), W * rng.uniform(0.4, 0.75)
    cy, cx = H * rng.uniform(0.55, 0.75), W * rng.uniform(0.35, 0.65)
    r = min(h, w) * 0.3
    qy = np.maximum(np.abs(yy - cy) - (h / 2 - r), 0)
    qx = np.maximum(np.abs(xx - cx) - (w / 2 - r), 0)
    return np.hypot(qy, qx) <= r, below.astype(np.int64)


def _try_layout(rng: np.random.Generator, n: int, grid: tuple[int, int], T: int,
                areas: np.ndarray) -> _Layout | None:
    """One attempt at a full layout with the given target areas; None when an object could not
    be placed (the caller shrinks the areas and tries again)."""
    H, W = grid
    context, background = _context(rng, grid)
    a_max = max(areas.max(), 1.0) if n else 1.0
    occluded = 0 if (n >= 1 and rng.random() < 0.35) else -1
    if occluded == 0:
        areas = areas.copy()
        areas[0] = max(areas[0], 18.0)
    pair = (1, 2) if (n >= 4 and rng.random() < 1 / 3) else None
    if pair is not None and occluded == -1:
        pair = (0, 1)
    placed: list[np.ndarray] = []  # in-frame masks [T, H, W], before the occluder cut
    visible: list[np.ndarray] = []
    band = np.zeros(grid, dtype=bool)
    avoid = None
    pair_cs = None
    for i in range(n):
        ok = False
        for _ in range(80):
            shape = _random_shape(rng, areas[i])
            ext = shape.extent()
            frac = areas[i] / a_max
            cy = H * rng.uniform(0.2 + 0.35 * frac, 0.65 + 0.3 * frac)
            cx = rng.uniform(0, W - 1)
            if rng.random() < (0.35 if i == 0 else 0.12) and i != occluded:
                side = int(rng.integers(4))  # partly out of the frame
                k = rng.uniform(0.2, 0.6)
                if side == 0:
                    cy = -ext[0] + 2 * ext[0] * (1 - k)
                elif side == 1:
                    cy = H - 1 + ext[0] - 2 * ext[0] * (1 - k)
                elif side == 2:
                    cx = -ext[1] + 2 * ext[1] * (1 - k)
                else:
                    cx = W - 1 + ext[1] - 2 * ext[1] * (1 - k)
            speed = rng.uniform(0.0, 2.0)
            ang = rng.uniform(0, 2 * np.pi)
            v = speed * np.array([math.sin(ang), math.cos(ang)])
            cut = None
            touch_ok: set = set()
            if i == occluded:
                # a pole (vertical, 1-2 wide) or a branch (slanted, 1 wide) through the centre;
                # the object moves along it so that it stays cut in every frame
                if rng.random() < 0.6:
                    width = int(rng.integers(1, 3))
                    cx = round(cx) + (0.5 if width == 2 else 0.0)
                    direction = np.array([1.0, 0.0])
                else:
                    width = 1
                    a = rng.uniform(0.35, 1.2) * rng.choice([-1, 1])
                    direction = np.array([math.sin(a), math.cos(a)])
                c0 = np.array([cy, cx])
                cut = _band(grid, c0, direction, width)
                v = rng.uniform(0.0, 1.5) * direction
                cs = _trajectory(rng, c0, v, T, grid, ext, 0.0, whole_flip=True)
            elif pair is not None and i == pair[1]:
                # side by side with its partner, same integer motion: touching in every frame
                base_cs = pair_cs
                prev = placed[pair[0]][0]
                near = ndimage.binary_dilation(prev, FOUR) & ~prev
                dirv = np.array([math.sin(ang), math.cos(ang)])
                cs = None
                for d in np.arange(1.0, 3 * (ext.max() + 3), 0.5):
                    off = np.round(d * dirv)
                    m0, _ = _raster(shape, base_cs[0] + off, grid)
                    if (m0 & prev).any():
                        continue
                    if (m0 & near).any():
                        cs = base_cs + off
                    break
                if cs is None:
                    continue
                touch_ok = {pair[0]}
            elif pair is not None and i == pair[0]:
                cs = _trajectory(rng, np.array([cy, cx]), np.round(v), T, grid, ext, 0.0,
                                 whole_flip=False)
            else:
                cs = _trajectory(rng, np.array([cy, cx]), v, T, grid, ext, 0.15,
                                 whole_flip=False)
            rs = [_raster(shape, c, grid) for c in cs]
            masks = np.stack([r[0] for r in rs])
            full = np.array([r[1] for r in rs])
            vis = _check_object(masks, full, cut, avoid if i != occluded else None)
            if vis is None or not _free_of(masks, placed, touch_ok):
                continue
            if pair is not None and i == pair[0]:
                pair_cs = cs
            if i == occluded:
                band = cut
                avoid = ndimage.binary_dilation(band, EIGHT)
            placed.append(masks)
            visible.append(vis)
            ok = True
            break
        if not ok:
            return None
    labels = np.zeros((T, H, W), dtype=np.int32)
    order = rng.permutation(n)  # ids not tied to size
    for i in range(n):
        labels[visible[i]] = order[i] + 1
    layout = _Layout(labels=labels, occluder=band,
                     occluded_id=int(order[0] + 1) if occluded == 0 else 0,
                     context=context, background=background,
                     touching=tuple(int(order[k] + 1) for k in pair) if pair else None)
    any_obj = (labels > 0).any(axis=0)
    taken = ndimage.binary_dilation(any_obj, iterations=2) | band
    free = np.flatnonzero(~taken.ravel())
    for _ in range(int(rng.integers(0, 4))):
        if free.size == 0:
            break
        p = int(rng.choice(free))
        layout.clutter.append((p // W, p % W, rng.uniform(0.7, 1.3), rng.uniform(0.2, 0.5)))
    free = np.flatnonzero(~(any_obj | band).ravel())
    k = 1 + int(rng.random() < 0.5)
    layout.sinks = [int(s) for s in rng.choice(free, size=min(k, free.size), replace=False)]
    return layout


def _make_layout(rng: np.random.Generator, n: int, grid: tuple[int, int], T: int) -> _Layout:
    """A valid layout, shrinking the object sizes when one does not fit (crowded small grids)."""
    areas = _sizes(rng, n, grid)
    a_min = max(4.6, 4.6 * grid[0] * grid[1] / REF_AREA)
    for _ in range(60):
        layout = _try_layout(rng, n, grid, T, areas)
        if layout is not None:
            return layout
        areas = np.maximum(areas * 0.85, a_min)
    raise RuntimeError(f"could not place {n} objects on grid {grid} over {T} frames")


# --------------------------------------------------------------------------------------------
# token features
# --------------------------------------------------------------------------------------------

@dataclass
class _Vocab:
    """The scene's fixed feature vectors: semantic classes, identities, textures."""
    sem: dict  # name -> [16]
    inst: np.ndarray  # [n + 1, 16] identity per id (row 0 unused), plus part-drift vectors
    drift: np.ndarray  # [n + 1, 2, 16]
    occ_inst: np.ndarray  # [16]
    tex_field: np.ndarray  # [H, W, 8] smooth background texture
    tex: dict  # name -> [8]


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Random unit vectors ``[..., shape[-1]]``."""
    v = rng.normal(size=shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _vocab(rng: np.random.Generator, n: int, grid: tuple[int, int]) -> _Vocab:
    """Draw the scene's feature vectors (see :class:`_Vocab`)."""
    ds, dt = BLOCKS["sem"], BLOCKS["tex"]
    sem = {k: _unit(rng, ds) for k in ("object", "context", "bg0", "bg1", "occluder")}
    field_ = ndimage.gaussian_filter(rng.normal(size=(*grid, dt)), sigma=(4, 4, 0), mode="reflect")
    field_ /= np.sqrt((field_ ** 2).sum(-1).mean()) + 1e-9
    tex = {k: _unit(rng, dt) for k in ("object", "context", "occluder")}
    return _Vocab(sem=sem, inst=_unit(rng, n + 1, BLOCKS["inst"]),
                  drift=rng.normal(size=(n + 1, 2, BLOCKS["inst"])) / math.sqrt(BLOCKS["inst"]),
                  occ_inst=_unit(rng, BLOCKS["inst"]), tex_field=field_, tex=tex)


def _clutter_map(layout: _Layout, grid: tuple[int, int]) -> np.ndarray:
    """Sum of the clutter bumps ``[H, W]`` (amplitude-weighted Gaussians)."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.zeros(grid)
    for y, x, s, a in layout.clutter:
        out += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return out


def _frame_features(layout: _Layout, vocab: _Vocab, t: int, noise: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Token features ``[HW, FEAT_DIM]`` float32 of frame ``t`` (row-major patches)."""
    lab = layout.labels[t]
    H, W = lab.shape
    obj = lab > 0
    occ = layout.occluder
    X = np.zeros((H, W, FEAT_DIM))
    X[..., _OFF["bias"]] = 1.0
    # semantic: background classes, context, objects, occluder, clutter that looks like the noun
    sem = np.where(layout.background[..., None] == 0, vocab.sem["bg0"], vocab.sem["bg1"])
    sem[layout.context] = vocab.sem["context"]
    clut = _clutter_map(layout, (H, W))
    cw = np.clip(clut / 0.35, 0, 1)[..., None]
    sem = sem * np.sqrt(1 - 0.75 * cw ** 2) + 0.866 * cw * vocab.sem["object"]
    sem[obj] = vocab.sem["object"]
    sem[occ] = vocab.sem["occluder"]
    X[..., _OFF["sem"]] = sem
    # texture: a smooth field, the noun's own texture on objects and (partly) on clutter
    tex = vocab.tex_field.copy()
    tex[layout.context] = 0.8 * vocab.tex["context"] + 0.5 * tex[layout.context]
    tex = tex * (1 - 0.6 * cw) + 0.8 * cw * vocab.tex["object"]
    tex[obj] = 0.8 * vocab.tex["object"] + 0.35 * vocab.tex_field[obj]
    tex[occ] = vocab.tex["occluder"]
    X[..., _OFF["tex"]] = tex
    # instance identity, weaker on edge patches, drifting a little across a big object
    inst = np.zeros((H, W, BLOCKS["inst"]))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    for i in range(1, int(lab.max()) + 1):
        m = lab == i
        inner = ndimage.binary_erosion(m, FOUR, border_value=1)
        ys, xs = yy[m], xx[m]
        span = max(np.ptp(ys), np.ptp(xs), 1.0)
        u = (ys - ys.mean()) / span
        w = (xs - xs.mean()) / span
        vec = (vocab.inst[i][None] + 0.5 * (u[:, None] * vocab.drift[i, 0][None]
                                           + w[:, None] * vocab.drift[i, 1][None]))
        vec *= np.where(inner[m], 1.0, 0.75)[:, None]
        inst[m] = vec
    inst[occ] = vocab.occ_inst
    X[..., _OFF["inst"]] = inst
    # edges of objects (both sides), with their orientation (as a doubled angle)
    smooth = ndimage.gaussian_filter(obj.astype(np.float64), 1.0)
    gy, gx = ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)
    th = np.arctan2(gy, gx)
    grown = ndimage.binary_dilation(obj, FOUR)
    edge = (grown & ~ndimage.binary_erosion(obj, FOUR, border_value=1)).astype(np.float64)
    X[..., _OFF["edge"]] = edge[..., None] * np.stack(
        [np.ones_like(th), np.cos(2 * th), np.sin(2 * th)], -1) / math.sqrt(2)
    sink = np.zeros(H * W)
    sink[layout.sinks] = 1.0
    X = X.reshape(H * W, FEAT_DIM)
    X[:, _OFF["sink"]] = sink[:, None]
    # white noise of the early latent
    if noise > 0:
        white = rng.normal(size=(H * W, FEAT_DIM))
        smooth = ndimage.gaussian_filter(rng.normal(size=(H, W, FEAT_DIM)),
                                         (NOISE_SMOOTH, NOISE_SMOOTH, 0), mode="nearest")
        smooth /= smooth.std() + 1e-12
        eps = math.sqrt(0.5) * (white + smooth.reshape(H * W, FEAT_DIM))
        for name, width in BLOCKS.items():
            scale = 0.05 if name == "bias" else FEATURE_NOISE / math.sqrt(width)
            X[:, _OFF[name]] += noise * scale * eps[:, _OFF[name]]
    return X.astype(np.float32)


# --------------------------------------------------------------------------------------------
# self-attention
# --------------------------------------------------------------------------------------------

def _rope_tables(grid: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """cos/sin tables ``[HW, N_PAIRS]`` for the y and x axes of a 2D RoPE."""
    H, W = grid
    freqs = ROPE_BASE ** (-np.arange(N_PAIRS) / N_PAIRS)
    yy, xx = np.mgrid[0:H, 0:W]
    ay = yy.reshape(-1, 1) * freqs[None]
    ax = xx.reshape(-1, 1) * freqs[None]
    f = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return f(np.cos(ay)), f(np.sin(ay)), f(np.cos(ax)), f(np.sin(ax))


def _rope(q: torch.Tensor, tables) -> torch.Tensor:
    """Apply the 2D RoPE to ``q`` ``[HW, HEAD_DIM]``: dims ``[:N_TIME]`` are left as they are
    (the temporal part, constant within a frame), then 16 pairs for y and 16 for x (each pair is
    (first half, second half) of its axis' 32 dims)."""
    cy, sy, cx, sx = tables
    out = q.clone()
    for k, (c, s) in enumerate(((cy, sy), (cx, sx))):
        o = N_TIME + 2 * N_PAIRS * k
        a, b = q[:, o:o + N_PAIRS], q[:, o + N_PAIRS:o + 2 * N_PAIRS]
        out[:, o:o + N_PAIRS] = a * c - b * s
        out[:, o + N_PAIRS:o + 2 * N_PAIRS] = a * s + b * c
    return out


def _content_dims() -> np.ndarray:
    """Indices of the head dims that carry content: the unrotated ones and the lowest-frequency
    rotary pairs (both halves) of each axis."""
    dims = list(range(N_TIME))
    for k in range(2):
        o = N_TIME + 2 * N_PAIRS * k
        for p in range(N_POS_PAIRS, N_PAIRS):
            dims += [o + p, o + N_PAIRS + p]
    return np.array(dims)


CONTENT_DIMS = _content_dims()


@dataclass
class _HeadParams:
    """One head's projections ``[FEAT_DIM, HEAD_DIM]`` (float32) and local bias parameters."""
    wq: torch.Tensor
    wk: torch.Tensor
    beta: float
    sy: float
    sx: float


def _head_params(rng: np.random.Generator, kind: str, hw: int) -> _HeadParams:
    """Draw the q/k projections of a head of type ``kind`` (gains of ``_HEAD_SPECS`` jittered by
    +-25%, random directions), see the module docstring."""
    sp = _HEAD_SPECS[kind]
    j = lambda: rng.uniform(0.75, 1.25)  # noqa: E731
    root_d = math.sqrt(HEAD_DIM)
    nc = len(CONTENT_DIMS)
    wq = np.zeros((FEAT_DIM, HEAD_DIM))
    wk = np.zeros((FEAT_DIM, HEAD_DIM))
    # positional kernel: the bias channel into the highest-frequency pairs' first halves
    freqs = ROPE_BASE ** (-np.arange(N_POS_PAIRS) / N_PAIRS)
    for k, amp in enumerate((sp.pos_y * j(), sp.pos_x * j())):
        width = sp.width * j()
        w = freqs * np.exp(-0.5 * (freqs * width) ** 2)
        a = np.sqrt(root_d * amp * w / w.sum())
        o = N_TIME + 2 * N_PAIRS * k
        wq[_OFF["bias"].start, o:o + N_POS_PAIRS] = a
        wk[_OFF["bias"].start, o:o + N_POS_PAIRS] = a
    # content: each block through a random near-isometry into the content dims
    for name, gain in (("sem", sp.sem), ("inst", sp.inst), ("tex", sp.tex), ("edge", sp.edge)):
        if gain <= 0:
            continue
        g = math.sqrt(root_d * gain * j())
        proj = rng.normal(size=(BLOCKS[name], nc)) / math.sqrt(nc)
        wq[_OFF[name], CONTENT_DIMS] = g * proj
        mismatch = 0.15 * rng.normal(size=proj.shape) / math.sqrt(nc)  # q and k differ a little
        wk[_OFF[name], CONTENT_DIMS] = g * (proj + mismatch)
        if name == "edge" and sp.edge_all > 0:
            # every query leans towards edge keys (the presence channel's direction)
            wq[_OFF["bias"].start, CONTENT_DIMS] += (sp.edge_all / math.sqrt(2)) * g * proj[0]
    if sp.sink is not None:
        # every query has a constant component that the sink keys' flag matches
        u = rng.normal(size=nc)
        u /= np.linalg.norm(u)
        s = math.sqrt(root_d * (math.log(hw) + sp.sink * j()))
        wq[_OFF["bias"].start, CONTENT_DIMS] += s * u
        wk[_OFF["sink"].start, CONTENT_DIMS] += s * u
    f = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return _HeadParams(f(wq), f(wk), beta=sp.beta * j(), sy=sp.sy * j(), sx=sp.sx * j())


def _offsets2(grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared offsets ``[HW, HW]`` float32 along y and along x between every pair of patches."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W]
    y = torch.from_numpy(yy.reshape(-1).astype(np.float32))
    x = torch.from_numpy(xx.reshape(-1).astype(np.float32))
    return (y[:, None] - y[None]) ** 2, (x[:, None] - x[None]) ** 2


def _local_bias(hp: _HeadParams, dy2: torch.Tensor, dx2: torch.Tensor) -> torch.Tensor:
    """The smooth local bias ``[HW, HW]``: ``-beta * log1p((dy/sy)^2 + (dx/sx)^2)``."""
    b = dy2 * (1.0 / hp.sy ** 2)
    b.add_(dx2, alpha=1.0 / hp.sx ** 2).log1p_().mul_(-hp.beta)
    return b


def _head_attention(X: torch.Tensor, hp: _HeadParams, bias: torch.Tensor, tables,
                    out: torch.Tensor) -> None:
    """Write ``softmax(rope(X Wq) rope(X Wk)^T / sqrt(d) + bias)`` into ``out`` ``[HW, HW]``;
    ``X`` is ``[HW, FEAT_DIM]``."""
    q = _rope(X @ hp.wq, tables)
    k = _rope(X @ hp.wk, tables)
    torch.addmm(bias, q, k.T, alpha=1.0 / math.sqrt(HEAD_DIM), out=out)
    out.sub_(out.amax(dim=1, keepdim=True)).exp_()
    out.div_(out.sum(dim=1, keepdim=True))


# --------------------------------------------------------------------------------------------
# cross-attention of the noun
# --------------------------------------------------------------------------------------------

@dataclass
class _CrossHead:
    """One head's cross-attention parameters."""
    flat: bool
    amp: float  # share of attention that goes to the noun at the strongest object
    floor: float  # background floor, relative to amp
    blur: float  # patches
    leak: float  # context leak, relative to the strongest object
    obj_gain: np.ndarray  # [n + 1] per-id multiplier (~1)


def _cross_heads(rng: np.random.Generator, head_types: tuple[str, ...], n: int) -> list[_CrossHead]:
    """Per-head cross parameters; sink/diffuse heads, and half the time one more non-instance
    head, are nearly flat."""
    extra = -1
    cands = [h for h, t in enumerate(head_types) if t not in _FLAT_CROSS and t != "instance"]
    if cands and rng.random() < 0.5:
        extra = int(rng.choice(cands))
    leak0 = rng.uniform(0.15, 0.35)
    heads = []
    for h, t in enumerate(head_types):
        heads.append(_CrossHead(
            flat=t in _FLAT_CROSS or h == extra, amp=rng.uniform(0.08, 0.35),
            floor=rng.uniform(0.02, 0.08), blur=rng.uniform(0.5, 2.0),
            leak=float(np.clip(leak0 * rng.uniform(0.85, 1.15), 0.15, 0.35)),
            obj_gain=rng.uniform(0.9, 1.1, size=n + 1)))
    return heads


def _cross_maps(layout: _Layout, t: int, strength: np.ndarray, heads: list[_CrossHead],
                noise: float, rng: np.random.Generator) -> np.ndarray:
    """Cross-attention ``[heads, HW]`` float32 of frame ``t``; ``strength`` ``[n + 1]`` is each
    id's strength (max 1)."""
    lab = layout.labels[t]
    H, W = lab.shape
    obj = lab > 0
    base = np.zeros((H, W))
    clutter = _clutter_map(layout, (H, W))
    for i in range(1, int(lab.max()) + 1):
        m = lab == i
        dt = ndimage.distance_transform_edt(m)
        base[m] = 0.8 + 0.2 * np.minimum(dt[m] / 2.0, 1.0)
    jit = strength * rng.uniform(0.95, 1.05, size=strength.shape)
    out = np.empty((len(heads), H * W))
    ctx = layout.context & ~obj & ~layout.occluder
    for h, ch in enumerate(heads):
        if ch.flat:
            smooth = ndimage.gaussian_filter(rng.normal(size=(H, W)), 2.0)
            m = rng.uniform(0.2, 0.4) + 0.3 * smooth + 0.05 * rng.normal(size=(H, W))
            m = m + 0.05 * ndimage.gaussian_filter(base, 1.5)
        else:
            g = np.minimum(jit * ch.obj_gain, 1.0)[lab] * base
            g[ctx] = ch.leak
            g = np.maximum(g, clutter)
            m = ndimage.gaussian_filter(g, ch.blur, mode="nearest") + ch.floor
            m = m + 0.03 * (0.5 + noise) * rng.normal(size=(H, W))
        out[h] = ch.amp * np.clip(m, 0, None).reshape(-1)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# the scene
# --------------------------------------------------------------------------------------------

def _check_args(n, grid, n_frames, noise, head_types) -> tuple[int, int, tuple[str, ...]]:
    """Validate the arguments of :func:`make_early_scene`; returns (H, W, head types)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n={n!r}: expected an integer count in 0..{MAX_OBJECTS}")
    if n < 0 or n > MAX_OBJECTS:
        raise ValueError(f"n={n}: expected 0..{MAX_OBJECTS} objects (the limit is {MAX_OBJECTS})")
    try:
        H, W = (int(g) for g in grid)
        if any(isinstance(g, bool) or int(g) != g for g in grid):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"grid={grid!r}: expected a pair of integers (H, W)") from None
    if H < MIN_GRID or W < MIN_GRID:
        raise ValueError(f"grid={grid!r}: expected at least {MIN_GRID}x{MIN_GRID} patches")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames={n_frames!r}: expected an integer >= 1")
    try:
        ok = math.isfinite(float(noise)) and float(noise) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"noise={noise!r}: expected a finite number >= 0")
    types = EARLY_HEAD_TYPES if head_types is None else head_types
    if isinstance(types, str) or len(types) == 0:
        raise ValueError(f"head_types={head_types!r}: expected a non-empty sequence of head type "
                         f"names from {sorted(_HEAD_SPECS)}")
    for t in types:
        if t not in _HEAD_SPECS:
            raise ValueError(f"head type {t!r} is unknown: expected one of {sorted(_HEAD_SPECS)}")
    return H, W, tuple(types)


def make_early_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5,
                     seed: int = 0, head_types: tuple[str, ...] | None = None) -> SyntheticScene:
    """A scene of ``n`` objects of one noun as an early-step video DiT attends to it.

    ``grid``: patch grid (H, W), at least 8x8; ``noise``: 0.25 mild, 0.5 moderate, 1.0 hard;
    ``head_types``: names from ``EARLY_HEAD_TYPES`` (default: those 12), in any number; their
    order is shuffled by ``seed`` and the order used is ``scene.head_types``.
    Each frame: ``self_attn`` ``[heads, HW, HW]`` float32 (rows sum to 1), ``cross_attn``
    ``[heads, HW]`` float32 (non-negative), ``labels`` ``[H, W]`` int32 (ids 1..n, each present).
    """
    H, W, types = _check_args(n, grid, n_frames, noise, head_types)
    n, n_frames, noise = int(n), int(n_frames), float(noise)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(types))
    types = tuple(types[i] for i in order)
    grid = (H, W)
    hw = H * W
    layout = _make_layout(rng, n, grid, n_frames)
    vocab = _vocab(rng, n, grid)
    heads = [_head_params(rng, t, hw) for t in types]
    cross_heads = _cross_heads(rng, types, n)
    strength = np.zeros(n + 1)
    strength[1:] = rng.uniform(0.4, 1.0, size=n)
    if n:
        strength[1 + int(rng.integers(n))] = 1.0
    feats = [torch.from_numpy(_frame_features(layout, vocab, t, noise, rng))
             for t in range(n_frames)]
    crosses = [_cross_maps(layout, t, strength, cross_heads, noise, rng) for t in range(n_frames)]
    tables = _rope_tables(grid)
    dy2, dx2 = _offsets2(grid)
    selfs = [torch.empty((len(types), hw, hw), dtype=torch.float32) for _ in range(n_frames)]
    for h, hp in enumerate(heads):
        bias = _local_bias(hp, dy2, dx2)
        for t in range(n_frames):
            _head_attention(feats[t], hp, bias, tables, selfs[t][h])
        del bias
    frames = [SyntheticFrame(self_attn=selfs[t], cross_attn=torch.from_numpy(crosses[t]),
                             labels=np.ascontiguousarray(layout.labels[t], dtype=np.int32))
              for t in range(n_frames)]
    return SyntheticScene(grid=grid, noise=noise, head_types=types, frames=frames)


def instance_separation(frame: SyntheticFrame, head: int) -> float:
    """How well ``head`` separates the frame's instances: over the objects, the mean attention
    from an object's patches to its other patches minus the mean attention to other objects'
    patches (NaN with fewer than two objects)."""
    A = frame.self_attn[head].numpy()
    lab = frame.labels.reshape(-1)
    vals = []
    for i in range(1, frame.count + 1):
        own = np.flatnonzero(lab == i)
        oth = np.flatnonzero((lab > 0) & (lab != i))
        if own.size < 2 or oth.size == 0:
            continue
        block = A[np.ix_(own, own)]
        same = (block.sum() - np.trace(block)) / (own.size * (own.size - 1))
        vals.append(same - A[np.ix_(own, oth)].mean())
    return float(np.mean(vals)) if vals else float("nan")
