"""Synthetic multi-category attention scenes ("multi" family).

What this family models and why
-------------------------------
Earlier synthetic families put only the counted noun's objects into a frame. Real prompts are
messier, and this family reproduces the messy parts a counter has to survive:

* **several categories in one frame** - the counted noun's ``n`` objects plus 0-4 distractor
  objects of one or two other categories (frames with ``n_instances=0`` hold distractors only);
* **one distractor category is semantically similar** to the noun (its category direction shares
  part of the noun's), so the noun token's cross-attention *leaks* onto it at roughly 0.3-0.6 of
  the noun objects' strength, while a dissimilar category gets little;
* **very different object sizes in one frame** - each object's area is drawn over a 4x range and
  grows towards the bottom of the frame (perspective: near objects big, far ones small);
* **objects cut by the frame edge** - about 1 noun object in 6 sits partly outside the grid
  (at least ``min_size`` patches, never fewer than 3, stay inside);
* **heads that split an object into parts** ("part" heads) and the usual zoo of other heads;
* slow motion (0-1 patch per frame) across frames, with every invariant kept in every frame.

The maps are computed the way a transformer computes them, not drawn by hand:

1. Every patch token carries a feature vector made of parts (each part its own 48-d subspace):
   ``mean`` (one direction shared by every token), ``cat`` (its category: the noun, a distractor
   category, the sky or ground background, all object categories sharing a "thing" direction),
   ``inst`` (a per-object direction, stable across frames), ``part`` (a per-object-part
   direction), ``tex`` (a per-category material plus a smooth random field), ``jit`` (i.i.d.
   per-token texture noise, its size set by ``noise``) and ``sink`` (a massive activation on 1-2
   background "sink" tokens). Object coverages are supersampled and blurred, so boundary patches
   mix the features of what they overlap. A few small background "clutter" bumps carry a bit of
   the noun's category.
2. Each head has random projections ``W_q``, ``W_k`` (``W_k`` correlated with ``W_q``, as learned
   heads are), with a gain per feature part chosen by the head's type; ``q`` and ``k`` are
   RMS-normalised (with a per-channel norm weight), rotated by a 3-axis rotary embedding over
   (frame, row, column) exactly as Wan2.1 splits its head dim (44 time / 42 height / 42 width
   channels for ``d=128``), and ``softmax(tau * q.k / sqrt(d) + logit noise)`` over the frame's
   own ``H*W`` keys gives the self-attention.
3. Cross-attention: each patch query (the same parts, mixed a little more over space) attends to
   real text keys - filler words, the count word, the noun, a similar and a dissimilar other noun,
   a background noun, an end token and padding - and the returned map is the noun token's
   column of that softmax (non-negative, with a background floor, leak and clutter that follow
   from the features, plus logit noise).

Head types (``head_types`` gives one per head; the number of heads is its length)
--------------------------------------------------------------------------------
``instance``    high gain on the per-object part: a query keeps its mass in its own object.
``category``    high gain on the category part: a query spreads over every object of its
                category (and partly over the similar category), not one instance.
``positional``  mostly the shared mean direction plus a norm weight that favours the
                high-frequency rotary channels: attention is a local window around the query.
``texture``     high gain on the texture part: attends to patches of similar material / field.
``sink``        queries carry the mean direction and the sink tokens' keys align with it: most
                mass lands on the 1-2 sink tokens.
``diffuse``     low temperature, small gains: nearly uniform attention.
``part``        high gain on the per-part direction: attention stays within one part (half or
                third) of an object, so one object looks like 2-3 regions.
``mixed``       moderate gains on everything: a blend of instance, category, texture and
                positional behaviour.
``MULTI_HEAD_TYPES`` is the default 12-head set (exactly one ``instance`` head).

Noise calibration (instance head, no counting algorithm involved)
----------------------------------------------------------------
Statistic: for every query patch inside a noun object, the attention mass it keeps inside its
own object divided by the largest mass it gives any other single object (noun or distractor),
that object's mass rescaled to the query's object size (``mass * |own| / |other|``); reported as
the ratio of the means over all such queries of scenes with 3-5 noun objects at 30x52 (seeds
0-5), and the fraction of queries whose own mass beats every other object's:

=======  ==========  ===========  ======================  ======================
noise    own mass    best other   mean ratio (own/other)  queries own > other
=======  ==========  ===========  ======================  ======================
0.25     0.213       0.038        5.6  (clear)            99.8 %
0.5      0.058       0.029        2.0  (modest)           90.5 %
1.0      0.030       0.027        1.12 (thin, positive)   53.4 %
=======  ==========  ===========  ======================  ======================

Measured with ``instance_margin`` on ``make_multi_scene(3 + seed % 3, (30, 52), seed=seed,
noise=noise)`` for seeds 0-5 (default 12 heads). The noun's cross-attention (head mean, noise
0.25/0.5/1.0) is about 21/17/9 times the background median on noun objects, leaks onto the
similar category at about 0.37/0.39/0.44 of the noun objects' strength (above the background)
and onto the dissimilar one at about 0.05. One 30x52 frame with 12 heads takes about 0.5-0.7 s on
one CPU thread.

(``noise`` scales the per-token texture noise and the Gaussian logit noise.)

Ground truth: ``labels`` is 1..n on the counted noun's objects only (0 on background *and*
distractors). The full layout (all objects with their categories, per frame) is also attached to
the returned scene as ``scene.layout`` (a :class:`MultiLayout`), and :func:`multi_scene_layout`
computes it alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["MULTI_HEAD_TYPES", "HEAD_TYPES", "MultiLayout", "make_multi_scene",
           "multi_scene_layout", "instance_margin"]

MULTI_HEAD_TYPES: tuple[str, ...] = (
    "category", "positional", "instance", "texture", "part", "sink",
    "mixed", "diffuse", "category", "part", "positional", "mixed",
)

MAX_INSTANCES = 8
HEAD_DIM = 128
PART_DIM = 48
PARTS = ("mean", "cat", "inst", "part", "tex", "jit", "sink")
_P = {name: i for i, name in enumerate(PARTS)}

# per type: (query gains, key gains, temperature) over PARTS
_HEAD_GAINS: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    #                 mean  cat   inst  part  tex   jit   sink
    "instance":   ((0.20, 0.50, 0.65, 0.25, 0.40, 1.0, 0.00),
                   (0.20, 0.50, 0.65, 0.25, 0.40, 1.0, 0.03), 0.75),
    "category":   ((0.20, 0.80, 0.00, 0.05, 0.25, 1.0, 0.00),
                   (0.20, 0.80, 0.00, 0.05, 0.25, 1.0, 0.03), 0.8),
    "positional": ((1.20, 0.30, 0.15, 0.05, 0.30, 1.0, 0.00),
                   (1.20, 0.30, 0.15, 0.05, 0.30, 1.0, 0.03), 1.8),
    "texture":    ((0.60, 0.20, 0.15, 0.10, 1.00, 1.0, 0.00),
                   (0.60, 0.20, 0.15, 0.10, 1.00, 1.0, 0.03), 1.1),
    "sink":       ((2.50, 0.30, 0.20, 0.10, 0.20, 1.0, 0.00),
                   (0.30, 0.30, 0.20, 0.10, 0.20, 1.0, 1.00), 1.6),
    "diffuse":    ((0.60, 0.30, 0.30, 0.10, 0.30, 1.0, 0.00),
                   (0.60, 0.30, 0.30, 0.10, 0.30, 1.0, 0.03), 0.3),
    "part":       ((0.70, 0.40, 0.40, 0.85, 0.30, 1.0, 0.00),
                   (0.70, 0.40, 0.40, 0.85, 0.30, 1.0, 0.03), 1.2),
    "mixed":      ((0.80, 0.60, 0.50, 0.25, 0.50, 1.0, 0.00),
                   (0.80, 0.60, 0.50, 0.25, 0.50, 1.0, 0.03), 1.0),
}

HEAD_TYPES: tuple[str, ...] = tuple(_HEAD_GAINS)

# calibration constants
_JIT_AMP = 4.0          # per-token texture noise amplitude at noise=1
_JIT_SMOOTH = 0.3      # share of the smooth field in the texture noise
_LOGIT_NOISE = 1.0      # std of Gaussian self-attention logit noise at noise=1
_CROSS_LOGIT_NOISE = 0.5
_CROSS_TAU = (0.35, 0.6)  # cross-attention temperature range per head
_SIMILAR_SHARE = 0.65   # share of the noun's own category direction in the similar category
_SINK_MAG = 20.0        # massive activation size
_JIT_CORR = 0.3        # W_k/W_q correlation for the texture-noise part
_KQ_CORR = 0.9          # correlation of W_k with W_q for content parts
_SEED_TAG = 0x6D756C74  # "mult"


@dataclass
class MultiLayout:
    """Where every object is, per frame.

    masks:      bool [T, K, H, W], object k's patches in frame t (coverage >= 0.5, inside grid)
    coverage:   float32 [T, K, H, W], fraction of each patch the object covers
    parts:      float32 [T, K, 3, H, W], coverage split into up to 3 parts (unused parts 0)
    categories: K entries, "noun", "similar" or "dissimilar"; noun objects come first
    cut:        K bools, the object was placed across the frame edge
    horizon:    float [W], row of the sky/ground boundary per column
    sinks:      list of (row, col) sink tokens (background in every frame)
    clutter:    float32 [H, W], clutter bump strength (background only)
    """
    grid: tuple[int, int]
    masks: np.ndarray
    coverage: np.ndarray
    parts: np.ndarray
    categories: tuple[str, ...]
    cut: tuple[bool, ...]
    horizon: np.ndarray
    sinks: list[tuple[int, int]]
    clutter: np.ndarray

    @property
    def n_noun(self) -> int:
        return sum(c == "noun" for c in self.categories)

    def labels(self, t: int) -> np.ndarray:
        """int32 [H, W]: 1..n on noun objects in frame ``t``, 0 elsewhere."""
        lab = np.zeros(self.grid, dtype=np.int32)
        for k in range(self.n_noun):
            lab[self.masks[t, k]] = k + 1
        return lab


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

_SUB = 3  # supersampling per patch side
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class _Shape:
    centre: np.ndarray        # (2,) row, col at frame 0 (continuous, patch units)
    velocity: np.ndarray      # (2,) patches per frame
    ellipses: np.ndarray      # [E, 5]: dy, dx, ry, rx, angle (relative to centre)
    axis: np.ndarray          # (2,) unit vector along which parts are cut
    n_parts: int
    extent: float             # max distance of any shape point from the centre


def _min_size(grid: tuple[int, int]) -> int:
    return max(3, int(round(3.0 * math.sqrt(grid[0] * grid[1] / 390.0))))


def _render(shape: _Shape, t: int, grid: tuple[int, int]):
    """Coverage of ``shape`` in frame ``t``: (coverage [H,W], part coverage [3,H,W], outside)."""
    H, W = grid
    c = shape.centre + shape.velocity * t
    y0, y1 = int(math.floor(c[0] - shape.extent)) - 1, int(math.ceil(c[0] + shape.extent)) + 1
    x0, x1 = int(math.floor(c[1] - shape.extent)) - 1, int(math.ceil(c[1] + shape.extent)) + 1
    sub = (np.arange(_SUB) + 0.5) / _SUB
    ys = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel()
    xs = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel()
    py, px = np.meshgrid(ys - c[0], xs - c[1], indexing="ij")
    inside = np.zeros(py.shape, dtype=bool)
    for dy, dx, ry, rx, ang in shape.ellipses:
        u = (py - dy) * math.cos(ang) + (px - dx) * math.sin(ang)
        v = -(py - dy) * math.sin(ang) + (px - dx) * math.cos(ang)
        inside |= (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
    proj = py * shape.axis[0] + px * shape.axis[1]
    if shape.n_parts == 2:
        pid = (proj > 0).astype(np.int64)
    else:
        pid = np.digitize(proj, [-shape.extent / 3.0, shape.extent / 3.0])
    hy, hx = y1 - y0, x1 - x0
    part_cov = np.zeros((3, hy, hx))
    for p in range(shape.n_parts):
        m = (inside & (pid == p)).reshape(hy, _SUB, hx, _SUB)
        part_cov[p] = m.mean(axis=(1, 3))
    # crop into the grid
    full = np.zeros((3, H, W))
    gy0, gy1 = max(y0, 0), min(y1, H)
    gx0, gx1 = max(x0, 0), min(x1, W)
    if gy0 < gy1 and gx0 < gx1:
        full[:, gy0:gy1, gx0:gx1] = part_cov[:, gy0 - y0:gy1 - y0, gx0 - x0:gx1 - x0]
    total = part_cov.sum()
    outside = float(total - full.sum())
    return full.sum(0), full, outside, float(total)


def _make_shape(rng: np.random.Generator, centre: np.ndarray, area: float, speed_max: float
                ) -> _Shape:
    r = math.sqrt(area / math.pi)
    n_ell = int(rng.integers(2, 4))
    ell = np.zeros((n_ell, 5))
    for e in range(n_ell):
        ell[e, :2] = rng.normal(0.0, 0.3 * r, size=2) if e else 0.0
        ell[e, 2:4] = r * rng.uniform(0.6, 1.1, size=2)
        ell[e, 4] = rng.uniform(0, np.pi)
    ang = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.0, speed_max)
    vel = speed * np.array([math.sin(ang), math.cos(ang)])
    a2 = rng.uniform(0, np.pi)
    shape = _Shape(centre=np.asarray(centre, float), velocity=vel, ellipses=ell,
                   axis=np.array([math.sin(a2), math.cos(a2)]), n_parts=2, extent=0.0)
    shape.extent = float(np.max(np.hypot(ell[:, 0], ell[:, 1]) + ell[:, 2:4].max(1)))
    # rescale to the target area (measured on a large canvas, so nothing is cut)
    probe = _Shape(np.array([shape.extent + 2, shape.extent + 2]), np.zeros(2), ell,
                   shape.axis, 2, shape.extent)
    side = int(2 * shape.extent + 5)
    got = _render(probe, 0, (side, side))[3]
    s = math.sqrt(area / max(got, 1e-6))
    shape.ellipses[:, :4] *= s
    shape.extent *= s
    shape.n_parts = 3 if area >= 30 else 2
    return shape


def _connected(mask: np.ndarray) -> bool:
    return ndimage.label(mask)[1] == 1


def _place(rng, grid, T, area_scale, n_noun, n_dis, min_size):
    """Try to place all objects; returns (shapes, categories, cut, covs, parts) or None."""
    H, W = grid
    a_lo = 2.0 * min_size * area_scale
    a_lo = max(a_lo, 1.7 * min_size)
    speed_max = 1.0 if T > 1 else 0.0
    shapes, cats, cuts, covs, parts = [], [], [], [], []
    n_cat = 1 if n_dis <= 1 else int(rng.integers(1, 3))
    dis_cats = ["similar"] + (["dissimilar"] if n_cat == 2 else [])
    # make sure a 2-category scene holds both
    dcat = [dis_cats[i % len(dis_cats)] for i in range(n_dis)]
    rng.shuffle(dcat)
    plan = [("noun", rng.random() < 0.22) for _ in range(n_noun)]
    plan += [(c, rng.random() < 1.0 / 6.0) for c in dcat]
    masks_all: list[np.ndarray] = []   # [T,H,W] per placed object
    for cat, want_cut in plan:
        ok = False
        for attempt in range(250):
            cut = want_cut and attempt < 150
            # perspective: bigger towards the bottom
            if cut:
                edge = int(rng.integers(4))
                yf = rng.uniform(0.1, 0.9)
            else:
                yf = rng.uniform(0.05, 0.95)
            u = 0.5 * rng.random() + 0.5 * yf
            area = a_lo * 4.0 ** u
            r = math.sqrt(area / math.pi)
            if cut:
                off = rng.uniform(-0.1, 0.5) * r
                if edge == 0:
                    c = (off, rng.uniform(0, W))
                elif edge == 1:
                    c = (H - off, rng.uniform(0, W))
                elif edge == 2:
                    c = (yf * H, off)
                else:
                    c = (yf * H, W - off)
            else:
                c = (yf * H, rng.uniform(r, W - r))
            shape = _make_shape(rng, np.array(c), area, speed_max)
            cov_t, part_t, mask_t = [], [], []
            good = True
            for t in range(T):
                cov, pc, outside, total = _render(shape, t, grid)
                m = cov >= 0.5
                if m.sum() < min_size or not _connected(m):
                    good = False
                    break
                if not cut and outside > 1e-9:
                    good = False
                    break
                if cut and t == 0 and outside < 0.15 * total:
                    good = False
                    break
                for k, other in enumerate(masks_all):
                    if cat == "noun" and cats[k] == "noun":
                        if (ndimage.binary_dilation(other[t], _EIGHT) & m).any():
                            good = False
                            break
                    elif (other[t] & m).any():
                        good = False
                        break
                if not good:
                    break
                cov_t.append(cov)
                part_t.append(pc)
                mask_t.append(m)
            if good:
                shapes.append(shape)
                cats.append(cat)
                cuts.append(bool(cut))
                covs.append(np.stack(cov_t))
                parts.append(np.stack(part_t))
                masks_all.append(np.stack(mask_t))
                ok = True
                break
        if not ok:
            return None
    return shapes, cats, cuts, covs, parts, masks_all


def _check_args(n_instances, grid, n_frames, noise=0.0):
    if not isinstance(n_instances, (int, np.integer)) or n_instances < 0 \
            or n_instances > MAX_INSTANCES:
        raise ValueError(f"n_instances={n_instances!r}: expected an integer in 0..{MAX_INSTANCES}; "
                         f"pass a count between 0 and {MAX_INSTANCES}")
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(g, (int, np.integer)) for g in grid)):
        raise ValueError(f"grid={grid!r}: expected a (rows, cols) tuple of two ints, e.g. (30, 52)")
    if min(grid) < 8:
        raise ValueError(f"grid={tuple(grid)!r} is too small: both sides must be >= 8 patches "
                         "to fit objects with a background gap; use e.g. (15, 26) or (30, 52)")
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames={n_frames!r}: expected an integer >= 1")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise={noise!r}: expected a finite number >= 0 "
                         "(0.25 clear, 0.5 moderate, 1.0 hard)")


def multi_scene_layout(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
                       seed: int = 0) -> MultiLayout:
    """The object layout of ``make_multi_scene(n_instances, grid, n_frames=..., seed=...)``.

    Depends only on (n_instances, grid, n_frames, seed), not on noise or head types.
    Raises ValueError when the arguments are invalid or ``n_instances`` objects do not fit.
    """
    _check_args(n_instances, grid, n_frames)
    grid = (int(grid[0]), int(grid[1]))
    H, W = grid
    T = int(n_frames)
    ss = np.random.SeedSequence([int(seed), _SEED_TAG])
    rng = np.random.default_rng(ss.spawn(1)[0])
    min_size = _min_size(grid)
    n_dis = int(rng.integers(1 if n_instances == 0 else 0, 5))
    # crowding: keep the objects' total area at most ~22% of the frame
    mean_area = 2.0 * min_size * 2.16
    scale = min(1.0, 0.22 * H * W / (max(n_instances + n_dis, 1) * mean_area))
    placed = None
    for _ in range(8):
        placed = _place(rng, grid, T, scale, n_instances, n_dis, min_size)
        if placed is not None:
            break
        scale *= 0.85
        if n_dis > (1 if n_instances == 0 else 0):
            n_dis -= 1
    if placed is None:
        raise ValueError(f"n_instances={n_instances} noun objects (min {min_size} patches each, "
                         f"one background patch apart) do not fit a {H}x{W} grid over {T} "
                         "frames; use a larger grid or fewer instances")
    shapes, cats, cuts, covs, parts, masks = placed
    K = len(shapes)
    occupied = np.zeros((T, H, W), dtype=bool)
    for m in masks:
        occupied |= ndimage.binary_dilation(m, np.ones((1, 3, 3), bool))
    free = ~occupied.any(0)
    # background: sky above a gently sloping horizon, ground below
    h0 = rng.uniform(0.25, 0.45) * H
    horizon = h0 + rng.uniform(-0.08, 0.08) * H * np.linspace(-1, 1, W)
    # sinks: 1-2 background tokens, fixed across frames
    cand = np.argwhere(free)
    n_sink = int(rng.integers(1, 3))
    sinks = [tuple(int(v) for v in cand[i]) for i in
             rng.choice(len(cand), size=min(n_sink, len(cand)), replace=False)]
    # clutter: a few small soft bumps in the background
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    clutter = np.zeros(grid)
    for _ in range(int(rng.integers(2, 5))):
        y, x = cand[int(rng.integers(len(cand)))]
        s = rng.uniform(0.6, 1.2) * math.sqrt(min_size / 3.0)
        clutter += rng.uniform(0.25, 0.5) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    clutter = np.where(free, np.clip(clutter, 0, 0.6), 0.0)
    return MultiLayout(
        grid=grid,
        masks=np.stack(masks, 1) if K else np.zeros((T, 0, H, W), bool),
        coverage=(np.stack(covs, 1) if K else np.zeros((T, 0, H, W))).astype(np.float32),
        parts=(np.stack(parts, 1) if K else np.zeros((T, 0, 3, H, W))).astype(np.float32),
        categories=tuple(cats), cut=tuple(cuts), horizon=horizon, sinks=sinks,
        clutter=clutter.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# features and attention
# ---------------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rope_tables(grid, t, d):
    """cos, sin [HW, d/2] for Wan-style 3-axis rotary embedding at frame ``t``."""
    H, W = grid
    d_hw = 2 * (d // 6)
    d_t = d - 2 * d_hw
    def freqs(dim):
        return 1.0 / (10000.0 ** (np.arange(0, dim, 2) / dim))
    yy, xx = np.mgrid[0:H, 0:W]
    ang = np.concatenate([
        np.full((H * W, d_t // 2), float(t)) * freqs(d_t)[None],
        yy.reshape(-1, 1) * freqs(d_hw)[None],
        xx.reshape(-1, 1) * freqs(d_hw)[None]], axis=1)
    return (torch.from_numpy(np.cos(ang)).float(), torch.from_numpy(np.sin(ang)).float(),
            np.concatenate([freqs(d_t), freqs(d_hw), freqs(d_hw)]))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x [..., N, d] by the angles in cos/sin [N, d/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class _World:
    """Scene-wide random vectors (directions of every feature part, text tokens, heads)."""

    def __init__(self, rng: np.random.Generator, layout: MultiLayout):
        D = PART_DIM
        basis = np.linalg.qr(rng.normal(size=(D, D)))[0].T  # orthonormal rows
        thing, own_n, own_s, own_d, sky, ground = basis[:6]
        self.mean = _unit(rng.normal(size=D))
        share = _SIMILAR_SHARE
        self.cat = {
            "thing": thing,
            "noun": _unit(0.5 * thing + own_n),
            "similar": _unit(0.5 * thing + share * own_n + math.sqrt(1 - share ** 2) * own_s),
            "dissimilar": _unit(0.5 * thing + own_d),
            "sky": sky, "ground": ground,
        }
        K = len(layout.categories)
        self.inst = _unit(rng.normal(size=(K, D))) if K else np.zeros((0, D))
        self.inst_bg = _unit(rng.normal(size=(2, D)))
        self.part = _unit(rng.normal(size=(K, 3, D))) if K else np.zeros((0, 3, D))
        self.material = {c: _unit(rng.normal(size=D))
                         for c in ("noun", "similar", "dissimilar", "sky", "ground")}
        H, W = layout.grid
        field = ndimage.gaussian_filter(rng.normal(size=(H, W, D)), sigma=(1.5, 1.5, 0))
        self.field = _unit(field)
        self.sink_dir = _unit(rng.normal(size=D))


def _patch_features(world: _World, layout: MultiLayout, t: int, jit: np.ndarray,
                    blur: float) -> np.ndarray:
    """Token features [HW, len(PARTS)*PART_DIM] of frame ``t``."""
    H, W = layout.grid
    D = PART_DIM
    K = len(layout.categories)
    cov = layout.coverage[t].astype(np.float64)       # [K,H,W]
    parts = layout.parts[t].astype(np.float64)        # [K,3,H,W]
    if blur > 0:
        cov = ndimage.gaussian_filter(cov, sigma=(0, blur, blur))
        parts = ndimage.gaussian_filter(parts, sigma=(0, 0, blur, blur))
    tot = cov.sum(0)
    scale = np.where(tot > 1.0, 1.0 / np.maximum(tot, 1e-9), 1.0)
    cov = cov * scale
    parts = parts * scale
    w_bg = np.clip(1.0 - cov.sum(0), 0.0, 1.0)
    rows = np.arange(H)[:, None] + 0.5
    sky = (rows < layout.horizon[None, :]).astype(np.float64)
    if blur > 0:
        sky = ndimage.gaussian_filter(sky, blur)
    X = np.zeros((H, W, len(PARTS), D))
    X[:, :, _P["mean"]] = world.mean
    # category
    cat = (w_bg * sky)[..., None] * world.cat["sky"] + (w_bg * (1 - sky))[..., None] * world.cat["ground"]
    for k, c in enumerate(layout.categories):
        cat += cov[k][..., None] * world.cat[c]
    clutter = layout.clutter.astype(np.float64)[..., None]
    cat = cat * (1 - clutter) + clutter * world.cat["noun"] * w_bg[..., None]
    X[:, :, _P["cat"]] = cat
    # instance: objects, plus a weak per-region background identity
    inst = 0.5 * ((w_bg * sky)[..., None] * world.inst_bg[0]
                  + (w_bg * (1 - sky))[..., None] * world.inst_bg[1])
    if K:
        inst += np.einsum("khw,kd->hwd", cov, world.inst)
        X[:, :, _P["part"]] = np.einsum("kphw,kpd->hwd", parts, world.part)
    X[:, :, _P["inst"]] = inst
    # texture: material of what is there + a smooth field
    tex = 0.8 * world.field
    tex += (w_bg * sky)[..., None] * world.material["sky"]
    tex += (w_bg * (1 - sky))[..., None] * world.material["ground"]
    for k, c in enumerate(layout.categories):
        tex += cov[k][..., None] * world.material[c]
    X[:, :, _P["tex"]] = tex
    X[:, :, _P["jit"]] = jit
    for (y, x) in layout.sinks:
        X[y, x, _P["sink"]] = _SINK_MAG * world.sink_dir
    return X.reshape(H * W, len(PARTS) * D)


def _jitter(rng: np.random.Generator, grid, noise: float) -> np.ndarray:
    """Per-token texture noise [H, W, PART_DIM]: i.i.d. plus a smooth random field."""
    H, W = grid
    iid = rng.normal(size=(H, W, PART_DIM))
    smooth = ndimage.gaussian_filter(rng.normal(size=(H, W, PART_DIM)), sigma=(1.0, 1.0, 0))
    smooth /= smooth.std() + 1e-12
    return _JIT_AMP * noise * (_JIT_SMOOTH * smooth + math.sqrt(1 - _JIT_SMOOTH ** 2) * iid) \
        / math.sqrt(PART_DIM)


def _head_projections(rng: np.random.Generator, world: _World, head_types, d: int,
                      rope_freqs: np.ndarray):
    """Per-head W_q, W_k [h, P*D, d] (gains folded in), norm weights [h, d], temperatures [h]."""
    D = PART_DIM
    n = len(head_types)
    P = len(PARTS)
    Wq = np.zeros((n, P * D, d))
    Wk = np.zeros((n, P * D, d))
    nw = np.ones((n, d))
    tau = np.zeros(n)
    hi_freq = (rope_freqs > 0.15).astype(float)
    hi_freq[: d // 2 - 2 * (d // 6)] = 0  # time channels do not matter within a frame
    for h, ht in enumerate(head_types):
        gq, gk, t0 = _HEAD_GAINS[ht]
        jitter = rng.uniform(0.85, 1.15, size=P)
        for p in range(P):
            A = rng.normal(size=(D, d)) / math.sqrt(D)
            rho = _JIT_CORR if PARTS[p] == "jit" else _KQ_CORR
            B = rho * A + math.sqrt(1 - rho ** 2) * rng.normal(size=(D, d)) / math.sqrt(D)
            Wq[h, p * D:(p + 1) * D] = gq[p] * jitter[p] * A
            Wk[h, p * D:(p + 1) * D] = gk[p] * jitter[p] * B
        # sink key: the sink direction maps onto the queries' mean component
        m = _P["mean"]
        qmean = world.mean @ Wq[h, m * D:(m + 1) * D]
        s = _P["sink"]
        Wk[h, s * D:(s + 1) * D] = gk[s] * np.outer(world.sink_dir, qmean / np.linalg.norm(qmean))
        w = np.ones(d // 2)
        if ht == "positional":
            w = 1.0 + 2.0 * hi_freq
        nw[h] = np.repeat(w, 2)
        tau[h] = t0 * rng.uniform(0.9, 1.1)
    return Wq, Wk, nw, tau


_TEXT_WORDS = ("a", "video", "of", "<count>", "<noun>", "and", "<similar>", "and", "<dissimilar>",
               "on", "the", "<ground>", "</s>") + ("<pad>",) * 7


def _text_tokens(rng: np.random.Generator, world: _World):
    """Text token features [L, P*D] and the index of the noun token."""
    D = PART_DIM
    words = list(_TEXT_WORDS)
    T = np.zeros((len(words), len(PARTS), D))
    ident = _unit(rng.normal(size=(len(words), D)))
    for j, wd in enumerate(words):
        if wd == "<count>":
            T[j, _P["cat"]] = world.cat["thing"]
            T[j, _P["mean"]] = 0.5 * world.mean
        elif wd in ("<noun>", "<similar>", "<dissimilar>", "<ground>"):
            T[j, _P["cat"]] = world.cat[wd[1:-1]]
            T[j, _P["mean"]] = 0.4 * world.mean
        elif wd == "</s>":
            T[j, _P["mean"]] = 1.5 * world.mean
        elif wd == "<pad>":
            T[j, _P["mean"]] = 1.1 * world.mean
        else:
            T[j, _P["mean"]] = 0.9 * world.mean
        # the token's own identity lives in the texture-part slot of the key (patch queries
        # have no counterpart for it, so it acts as a random key offset)
        T[j, _P["tex"]] = (0.3 if wd.startswith("<") and wd != "<pad>" else 0.6) * ident[j]
    return T.reshape(len(words), -1), words.index("<noun>")


#: the prompt's other object nouns (``SyntheticFrame.other_cross``: their token's column of
#: the same text softmax): name -> their word in the text
OTHER_NOUNS = {"similar": "<similar>", "dissimilar": "<dissimilar>"}


def _cross_projections(rng: np.random.Generator, n_heads: int, d: int):
    D = PART_DIM
    P = len(PARTS)
    Wq = np.zeros((n_heads, P * D, d))
    Wk = np.zeros((n_heads, P * D, d))
    tau = np.zeros(n_heads)
    for h in range(n_heads):
        gq = np.array([rng.uniform(0.4, 0.8), rng.uniform(0.9, 1.5), 0.2, 0.1, 0.3, 0.25, 0.0])
        gk = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
        for p in range(P):
            A = rng.normal(size=(D, d)) / math.sqrt(D)
            if PARTS[p] == "tex":   # the key's tex slot holds text identity: independent
                B = rng.normal(size=(D, d)) / math.sqrt(D)
            else:
                B = _KQ_CORR * A + math.sqrt(1 - _KQ_CORR ** 2) * rng.normal(size=(D, d)) / math.sqrt(D)
            Wq[h, p * D:(p + 1) * D] = gq[p] * A
            Wk[h, p * D:(p + 1) * D] = gk[p] * B
        tau[h] = rng.uniform(_CROSS_TAU[0], _CROSS_TAU[1])
    return Wq, Wk, tau


def make_multi_scene(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
                     noise: float = 0.5, seed: int = 0, head_types: tuple[str, ...] | None = None,
                     shuffle_heads: bool = True) -> SyntheticScene:
    """A multi-category synthetic attention scene.

    Args:
        n_instances: objects of the counted noun per frame, 0..8.
        grid: (H, W) latent patch grid, both sides >= 8.
        n_frames: frames T (objects move 0-1 patch per frame).
        noise: 0.25 clear, 0.5 moderate, 1.0 hard (scales texture and logit noise).
        seed: everything is deterministic from it.
        head_types: one type per head (default ``MULTI_HEAD_TYPES``); see ``HEAD_TYPES``.
        shuffle_heads: permute the head order (deterministically from ``seed``).

    Returns:
        SyntheticScene with ``head_types`` in head order (after shuffling) and T frames, each
        ``self_attn`` float32 [heads, H*W, H*W] (rows sum to 1, row-major index y*W+x),
        ``cross_attn`` float32 [heads, H*W] (the noun token's column of the text softmax),
        ``other_cross`` (``OTHER_NOUNS`` -> their tokens' columns of the same softmax, each
        [heads, H*W]) and ``labels`` int32 [H, W] (1..n on noun objects). ``scene.layout`` is the MultiLayout.
    """
    _check_args(n_instances, grid, n_frames, noise)
    types = MULTI_HEAD_TYPES if head_types is None else tuple(head_types)
    if len(types) == 0:
        raise ValueError("head_types=(): expected at least one head type; "
                         f"use types from {HEAD_TYPES}")
    bad = [t for t in types if t not in _HEAD_GAINS]
    if bad:
        raise ValueError(f"unknown head type(s) {bad!r}: expected each of {HEAD_TYPES}; "
                         "fix the head_types argument")
    layout = multi_scene_layout(n_instances, grid, n_frames=n_frames, seed=seed)
    grid = layout.grid
    H, W = grid
    d = HEAD_DIM
    ss = np.random.SeedSequence([int(seed), _SEED_TAG]).spawn(4)
    rng_world = np.random.default_rng(ss[1])
    rng_heads = np.random.default_rng(ss[2])
    if shuffle_heads:
        types = tuple(types[i] for i in rng_heads.permutation(len(types)))
    world = _World(rng_world, layout)
    _, _, freqs = _rope_tables(grid, 0, d)
    Wq, Wk, nw, tau = _head_projections(rng_heads, world, types, d, freqs)
    txt, noun_idx = _text_tokens(rng_world, world)
    cWq, cWk, ctau = _cross_projections(rng_world, len(types), d)
    rng_noise = np.random.default_rng(ss[3])
    gen = torch.Generator().manual_seed(int(rng_noise.integers(2 ** 62)))

    Wq_t = torch.from_numpy(Wq).float()
    Wk_t = torch.from_numpy(Wk).float()
    nw_t = torch.from_numpy(nw).float()[:, None, :]
    tau_t = torch.from_numpy(tau).float()[:, None, None]
    ck = torch.from_numpy(np.einsum("lf,hfd->hld", txt, cWk)).float()
    ck = _rms(ck)  # [h, L, d]
    cWq_t = torch.from_numpy(cWq).float()
    ctau_t = torch.from_numpy(ctau).float()[:, None, None]
    frames = []
    for t in range(layout.masks.shape[0]):
        jit = _jitter(rng_noise, (H, W), noise)
        X = torch.from_numpy(_patch_features(world, layout, t, jit, blur=0.5)).float()
        q = _rms(torch.einsum("nf,hfd->hnd", X, Wq_t)) * nw_t
        k = _rms(torch.einsum("nf,hfd->hnd", X, Wk_t)) * nw_t
        cos, sin, _ = _rope_tables(grid, t, d)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        logits = torch.bmm(q, k.transpose(1, 2)).mul_(tau_t / math.sqrt(d))
        if noise > 0:
            logits.add_(torch.randn(logits.shape, generator=gen).mul_(_LOGIT_NOISE * noise))
        self_attn = torch.softmax(logits, dim=-1)
        del logits
        # cross-attention: queries from features mixed a little more over space
        Xc = torch.from_numpy(_patch_features(world, layout, t, jit, blur=1.0)).float()
        cq = _rms(torch.einsum("nf,hfd->hnd", Xc, cWq_t))
        cl = torch.bmm(cq, ck.transpose(1, 2)) * (ctau_t / math.sqrt(d))
        if noise > 0:
            cl = cl + torch.randn(cl.shape, generator=gen) * (_CROSS_LOGIT_NOISE * noise)
        text = torch.softmax(cl, dim=-1)
        cross = text[:, :, noun_idx].contiguous()
        others = {name: text[:, :, _TEXT_WORDS.index(word)].contiguous()
                  for name, word in OTHER_NOUNS.items()}
        frames.append(SyntheticFrame(self_attn=self_attn.contiguous(), cross_attn=cross,
                                     labels=layout.labels(t), other_cross=others))
    scene = SyntheticScene(grid=grid, noise=float(noise), head_types=types, frames=frames)
    scene.layout = layout  # type: ignore[attr-defined]
    return scene


# ---------------------------------------------------------------------------------------------
# calibration statistic
# ---------------------------------------------------------------------------------------------

def instance_margin(scene: SyntheticScene, head: int | None = None, frame: int = 0
                    ) -> tuple[float, float, float]:
    """Own-object mass vs the best other object (size-rescaled) for noun-object queries.

    Returns (mean own mass, mean best-other mass rescaled to the own size, fraction of queries
    whose own mass beats every other object's). ``head`` defaults to the first instance head.
    """
    layout = scene.layout  # type: ignore[attr-defined]
    if head is None:
        head = scene.head_types.index("instance")
    A = scene.frames[frame].self_attn[head].numpy()
    masks = layout.masks[frame].reshape(len(layout.categories), -1)
    sizes = masks.sum(1).astype(float)
    mass = A @ masks.T.astype(np.float32)  # [N, K]
    own, other, wins = [], [], []
    for k in range(layout.n_noun):
        rows = np.flatnonzero(masks[k])
        m = mass[rows] * (sizes[k] / sizes)[None, :]
        o = m[:, k].copy()
        m[:, k] = -1
        b = m.max(1)
        own.append(mass[rows, k])
        other.append(b)
        wins.append(o > b)
    own_c, oth_c = np.concatenate(own), np.concatenate(other)
    return float(own_c.mean()), float(oth_c.mean()), float(np.concatenate(wins).mean())
