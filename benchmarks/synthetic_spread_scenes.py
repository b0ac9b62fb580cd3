"""Synthetic "spread" scenes: instance identity spread over several attention heads.

In a real video DiT (Wan2.1-like), no single self-attention head is a perfect instance
segmenter. A head that tells most objects of a category apart still lumps a few of them
together, and other heads tell apart *different* pairs. Identity is spread over heads, and only
the heads taken together separate every object from every other. This family models that, so
that a counting method cannot pass by finding one perfect head.

How a scene is built
--------------------
- **Objects.** ``n`` irregular blobs of one category (areas about 6-60 patches at a 30x52 grid,
  scaled with the grid area), placed without overlap. Most do not touch; in about one scene in
  three with four or more objects one pair touches. Each object drifts slowly (at most one
  patch per frame along each axis); the count never changes across frames. ``labels`` are the
  true instance masks of each frame (0 background, 1..n, each one 4-connected).
- **Token features** (34 dims per token): a constant bias, an attention-sink indicator, a
  *category* part shared by every object of the noun, a *texture* part (a smooth random field
  on the background, weak on objects) and an *identity* part per object. Every token gets
  Gaussian noise on all its features, scaled by ``noise`` (0.25 mild, 0.5 moderate, 1.0 hard).
- **Heads.** Each head projects the features to queries and keys (structured weights plus a
  little random leakage), applies a 2D rotary position embedding (RoPE) to the first 16 dims of
  q and k (rows and columns each get 4 frequency pairs), and takes
  ``softmax(q k^T / sqrt(d))``, so rows sum to 1.
- **Identity spread.** The identity part is 16 dims: an 8-dim *instance* block and four 2-dim
  *partial* blocks. In the instance block objects are grouped: objects in one group share one
  identity vector, so the ``"instance"`` head (which reads this block) sees them as one object.
  The grouping is drawn so that the instance head separates roughly 60-85% of the object pairs
  (all of them when there are too few objects for a merge to keep it ahead), and always strictly
  more pairs than any partial head. Each ``"partial"`` head reads one partial block, where every
  object carries one of two vectors: one bit of a 4-bit code, with all objects' codes distinct.
  So each partial head separates only the pairs that differ in its bit (about half of them),
  while the four partial heads together separate every pair, including the ones the instance
  head merges.
- **Other heads.** ``positional`` (a local bump from RoPE only, two widths), ``category`` (all
  objects of the noun attend to one another), ``texture`` (background tokens of a similar
  texture attend to one another), ``sink`` (most queries put most of their attention on one or
  two fixed background keys), ``diffuse`` (near uniform) and ``mixed`` (category plus local).
- **Cross-attention** for the counted noun, ``[heads, HW]``: per head a map that is high on the
  objects (each object a fixed strength between 0.4 and 1.0 of the strongest, blurred by
  0.5-1.5 patches, the width varying by head), a low background floor, 1-3 small clutter bumps
  off the objects at 0.2-0.5 of the object strength, and noise scaled by ``noise``; clipped at
  zero.

Head order is shuffled per scene (from the seed); ``SyntheticScene.head_types`` gives the order
of the heads in the tensors. Everything is drawn from ``numpy.random.default_rng(seed)``, so the
same arguments give bit-identical tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["SPREAD_HEAD_TYPES", "spread_head_types", "make_spread_scene", "KNOWN_TYPES",
           "N_PARTIAL_BLOCKS"]

# One entry per head (12 heads like Wan2.1-1.3B), exactly one "instance".
SPREAD_HEAD_TYPES: tuple[str, ...] = (
    "instance", "partial", "partial", "partial", "partial", "positional", "positional",
    "category", "texture", "sink", "diffuse", "mixed",
)
KNOWN_TYPES = frozenset(SPREAD_HEAD_TYPES)
N_PARTIAL_BLOCKS = 4  # partial identity blocks: a 4-bit code per object (so n <= 16)
MAX_OBJECTS = 2 ** N_PARTIAL_BLOCKS

# ---- feature layout (columns of the per-token feature matrix) ----
_BIAS = 0
_SINK = 1
_CAT = slice(2, 10)  # category, 8 dims
_TEX = slice(10, 18)  # texture, 8 dims
_ID_INST = slice(18, 26)  # instance identity block, 8 dims
_ID_PART0 = 26  # four partial blocks of 2 dims: 26-27, 28-29, 30-31, 32-33
_N_FEAT = 34

# ---- head layout: 16 rotary dims (4 pairs for rows, 4 for columns) + semantic dims ----
_ROPE_DIMS = 16
_ROPE_FREQS = np.array([1.0, 0.55, 0.3, 0.16])  # radians per patch, high to low
_SEM_DIMS = 8 + 8 + 8 + 8 + 1  # category, texture, instance id, partial ids, sink
_HEAD_DIM = _ROPE_DIMS + _SEM_DIMS
_FEATURE_NOISE = 0.4  # per-unit-of-noise std of the feature noise


def spread_head_types(n_heads: int) -> tuple[str, ...]:
    """Head types for ``n_heads`` heads: the 12 of :data:`SPREAD_HEAD_TYPES`, then the
    non-instance types repeated in order (e.g. 40 heads for Wan2.1-14B). Still one instance
    head; the extra partial heads read the partial blocks in turn."""
    if not isinstance(n_heads, (int, np.integer)) or n_heads < len(SPREAD_HEAD_TYPES):
        raise ValueError(f"n_heads must be an int >= {len(SPREAD_HEAD_TYPES)}, got {n_heads!r}")
    rest = [t for t in SPREAD_HEAD_TYPES if t != "instance"]
    extra = [rest[i % len(rest)] for i in range(n_heads - len(SPREAD_HEAD_TYPES))]
    return SPREAD_HEAD_TYPES + tuple(extra)


# --------------------------------------------------------------------------- objects

def _blob(rng: np.random.Generator, area: float) -> np.ndarray:
    """An irregular 4-connected blob of about ``area`` patches, as a tight bool mask [h, w]."""
    r0 = math.sqrt(area / math.pi)
    elong = rng.uniform(1.0, 1.6)
    tilt = rng.uniform(0, math.pi)
    amps = rng.uniform(0.0, 0.22, size=3)
    phases = rng.uniform(0, 2 * math.pi, size=3)
    rad = int(math.ceil(r0 * elong * 1.7)) + 1
    yy, xx = np.mgrid[-rad:rad + 1, -rad:rad + 1].astype(np.float64)
    yy += rng.uniform(-0.5, 0.5)
    xx += rng.uniform(-0.5, 0.5)
    # stretch along a random axis
    u = xx * math.cos(tilt) + yy * math.sin(tilt)
    v = -xx * math.sin(tilt) + yy * math.cos(tilt)
    dist = np.hypot(u / math.sqrt(elong), v * math.sqrt(elong))
    ang = np.arctan2(v, u)
    edge = r0 * (1 + sum(a * np.cos(k * ang + p) for a, k, p in zip(amps, (2, 3, 5), phases)))
    mask = dist <= edge
    if not mask.any():
        mask[rad, rad] = True
    lab, k = ndimage.label(mask)  # default structure: 4-connectivity
    if k > 1:
        sizes = ndimage.sum(mask, lab, index=np.arange(1, k + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


_CROSS = ndimage.generate_binary_structure(2, 1)


def _stamp(H: int, W: int, shape: np.ndarray, y: int, x: int) -> np.ndarray | None:
    """``shape`` placed with its top-left at (y, x) on an [H, W] canvas; None if it leaves."""
    h, w = shape.shape
    if y < 0 or x < 0 or y + h > H or x + w > W:
        return None
    out = np.zeros((H, W), dtype=bool)
    out[y:y + h, x:x + w] = shape
    return out


def _layout(rng, n, H, W, n_frames, touch_pair):
    """Place ``n`` blobs with drift; returns per-frame label maps [n_frames, H, W] or None."""
    scale = H * W / (30 * 52)
    min_area = 3.0 if H * W >= 120 else 2.0
    labels = np.zeros((n_frames, H, W), dtype=np.int32)
    forbid = np.zeros((n_frames, H, W), dtype=bool)  # objects dilated by one (no touching)
    placed: list[tuple[np.ndarray, int, int, np.ndarray]] = []
    for i in range(n):
        partner = placed[-1] if (touch_pair and i == 1) else None
        ok = False
        for _ in range(300):
            area = max(min_area, math.exp(rng.uniform(math.log(6), math.log(60))) * scale)
            shape = _blob(rng, area)
            if partner is not None:
                steps = partner[3]
            else:
                speed = rng.uniform(0.0, 0.9)
                ang = rng.uniform(0, 2 * math.pi)
                t = np.arange(n_frames)
                steps = np.stack([np.round(speed * math.sin(ang) * t),
                                  np.round(speed * math.cos(ang) * t)], 1).astype(int)
            h, w = shape.shape
            if partner is None:
                y0 = int(rng.integers(0, max(1, H - h + 1)))
                x0 = int(rng.integers(0, max(1, W - w + 1)))
            else:
                pm, py, px, _ = partner
                y0 = int(rng.integers(py - h, py + pm.shape[0] + 1))
                x0 = int(rng.integers(px - w, px + pm.shape[1] + 1))
            masks = []
            for f in range(n_frames):
                m = _stamp(H, W, shape, y0 + steps[f, 0], x0 + steps[f, 1])
                if m is None:
                    break
                masks.append(m)
            if len(masks) < n_frames:
                continue
            if partner is None:
                if any((masks[f] & forbid[f]).any() for f in range(n_frames)):
                    continue
            else:
                # may touch the partner (only), never overlap anything
                pm_mask = labels[0] == len(placed)
                others = forbid[0] & ~ndimage.binary_dilation(pm_mask, _CROSS)
                if (masks[0] & (labels[0] > 0)).any() or (masks[0] & others).any():
                    continue
                if not (ndimage.binary_dilation(masks[0], _CROSS) & pm_mask).any():
                    continue
                if any((masks[f] & (labels[f] > 0)).any() for f in range(n_frames)):
                    continue
                # keep clear of the other objects in every frame
                clash = False
                for f in range(n_frames):
                    other = (labels[f] > 0) & (labels[f] != len(placed))
                    if (ndimage.binary_dilation(other, _CROSS) & masks[f]).any():
                        clash = True
                        break
                if clash:
                    continue
            for f in range(n_frames):
                labels[f][masks[f]] = i + 1
                forbid[f] |= ndimage.binary_dilation(masks[f], _CROSS)
            placed.append((shape, y0, x0, steps))
            ok = True
            break
        if not ok:
            return None
    return labels


# --------------------------------------------------------------------------- identity codes

def _instance_groups(rng, n, codes):
    """Group the objects for the instance head: objects in one group share its identity
    vector. Returns group index per object [n]. The instance head separates roughly 60-85%
    of pairs and strictly more than any partial head (fewer merges when needed)."""
    pairs = n * (n - 1) // 2
    best_partial = 0
    for b in range(N_PARTIAL_BLOCKS):
        k = int(codes[:, b].sum())
        best_partial = max(best_partial, k * (n - k))
    group = np.arange(n)
    if pairs == 0:
        return group
    target = rng.uniform(0.15, 0.40) * pairs
    merged = 0
    for _ in range(4 * n):
        gids = np.unique(group)
        if len(gids) < 2:
            break
        a, b = rng.choice(gids, size=2, replace=False)
        add = int((group == a).sum()) * int((group == b).sum())
        if merged + add > target or pairs - merged - add <= best_partial:
            continue
        group[group == b] = a
        merged += add
    _, group = np.unique(group, return_inverse=True)
    return group


def _pair_split(groups: np.ndarray) -> int:
    """Number of object pairs in different groups."""
    n = len(groups)
    return int(sum(groups[i] != groups[j] for i in range(n) for j in range(i + 1, n)))


# --------------------------------------------------------------------------- features/heads

def _smooth_field(rng, H, W, channels, n_modes=6, max_freq=0.35):
    """A smooth random field [H*W, channels], unit norm per token."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = np.zeros((H, W, channels))
    for c in range(channels):
        for _ in range(n_modes):
            fy, fx = rng.uniform(-max_freq, max_freq, size=2)
            out[:, :, c] += rng.normal() * np.cos(fy * yy + fx * xx + rng.uniform(0, 2 * math.pi))
    out = out.reshape(H * W, channels)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def _gain(logit: float) -> float:
    """Weight that gives a logit of ``logit`` for two matching unit features after the
    1/sqrt(d) scaling."""
    return math.sqrt(max(logit, 0.0) * math.sqrt(_HEAD_DIM))


def _head_weights(rng, kind: str, partial_block: int):
    """Structured q/k weights for one head.

    Returns (rope_amp [8], Wq [_SEM_DIMS, _N_FEAT], Wk [_SEM_DIMS, _N_FEAT]). ``rope_amp`` is
    the q (= k) amplitude of each rotary pair (4 row pairs then 4 column pairs), read from the
    bias feature."""
    Wq = np.zeros((_SEM_DIMS, _N_FEAT))
    rope = np.zeros(8)

    def pos(total_logit, weights):
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        amps = np.sqrt(np.concatenate([w, w]) * total_logit * math.sqrt(_HEAD_DIM))
        rope[:] = amps

    def block(rows, cols, logit):
        Wq[rows, cols] = _gain(logit) * np.eye(rows.stop - rows.start)

    cat_rows, tex_rows, inst_rows = slice(0, 8), slice(8, 16), slice(16, 24)
    if kind == "instance":
        block(inst_rows, _ID_INST, rng.uniform(7.0, 8.5))
        block(cat_rows, _CAT, rng.uniform(1.0, 2.0))
        pos(rng.uniform(0.1, 0.3), [1, 1, 1, 1])
    elif kind == "partial":
        c = _ID_PART0 + 2 * partial_block
        r = 24 + 2 * partial_block
        block(slice(r, r + 2), slice(c, c + 2), rng.uniform(6.5, 8.0))
        block(cat_rows, _CAT, rng.uniform(1.0, 2.0))
        pos(rng.uniform(0.1, 0.3), [1, 1, 1, 1])
    elif kind == "positional":
        sharp = rng.uniform()
        pos(rng.uniform(6.0, 9.0), [1.0 + 3 * sharp, 1.0 + sharp, 1.0, 1.0])
    elif kind == "category":
        block(cat_rows, _CAT, rng.uniform(6.0, 8.0))
        pos(rng.uniform(0.2, 0.5), [1, 1, 1, 1])
    elif kind == "texture":
        block(tex_rows, _TEX, rng.uniform(5.0, 7.0))
        pos(rng.uniform(0.5, 1.5), [1, 1, 1, 1])
    elif kind == "sink":
        pos(rng.uniform(0.2, 0.8), [1, 1, 1, 1])
    elif kind == "diffuse":
        pos(rng.uniform(0.0, 0.4), [1, 1, 1, 1])
    elif kind == "mixed":
        block(cat_rows, _CAT, rng.uniform(3.0, 4.5))
        pos(rng.uniform(3.0, 4.5), [2, 1.5, 1, 1])
    else:  # pragma: no cover - validated earlier
        raise ValueError(f"unknown head type {kind!r}")
    Wk = Wq.copy()
    if kind == "sink":  # q reads the bias, k reads the sink indicator
        g = _gain(rng.uniform(7.5, 9.0))
        Wq[_SEM_DIMS - 1, _BIAS] = g
        Wk[_SEM_DIMS - 1, _SINK] = g
    leak = 0.04 if kind != "diffuse" else 0.02
    Wq = Wq + leak * rng.normal(size=Wq.shape)
    Wk = Wk + leak * rng.normal(size=Wk.shape)
    return rope, Wq, Wk


def _rope_tables(H: int, W: int):
    """cos, sin [HW, 8] of the rotary angles: 4 row pairs then 4 column pairs."""
    yy, xx = np.mgrid[0:H, 0:W]
    ang = np.concatenate([yy.reshape(-1, 1) * _ROPE_FREQS, xx.reshape(-1, 1) * _ROPE_FREQS], 1)
    return np.cos(ang), np.sin(ang)


def _apply_rope(v: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each pair (v[..., 2p], v[..., 2p+1]) of v [HW, 16] by its angle."""
    a, b = v[:, 0::2], v[:, 1::2]
    out = np.empty_like(v)
    out[:, 0::2] = a * cos - b * sin
    out[:, 1::2] = a * sin + b * cos
    return out


# --------------------------------------------------------------------------- cross-attention

def _cross_maps(rng, labels, n, strengths, clutter, head_blur, head_amp, floor, noise):
    """Cross-attention [heads, HW] for one frame (numpy float64)."""
    H, W = labels.shape
    n_heads = len(head_blur)
    out = np.zeros((n_heads, H * W))
    for h in range(n_heads):
        m = np.zeros((H, W))
        for o in range(1, n + 1):
            b = ndimage.gaussian_filter((labels == o).astype(np.float64), head_blur[h],
                                        mode="constant")
            m = np.maximum(m, strengths[o - 1] * b / max(b.max(), 1e-9))
        for (cy, cx, amp, width) in clutter:
            yy, xx = np.mgrid[0:H, 0:W]
            m = np.maximum(m, amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                           / (2 * (width * head_blur[h] / 1.0) ** 2)))
        m = head_amp[h] * m + floor[h]
        m = m + noise * 0.06 * rng.normal(size=m.shape)
        out[h] = np.clip(m, 0.0, None).reshape(-1)
    return out


# --------------------------------------------------------------------------- public entry

def make_spread_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5,
                      seed: int = 0, head_types: tuple[str, ...] | None = None) -> SyntheticScene:
    """A scene of ``n`` objects of one category on a ``grid`` = (H, W) patch grid.

    Returns a :class:`SyntheticScene` with ``n_frames`` frames, each with
    ``self_attn`` [heads, H*W, H*W] float32 (rows sum to 1), ``cross_attn`` [heads, H*W]
    float32 (non-negative) and ``labels`` [H, W] int32 (0 background, 1..n). Heads are
    ``head_types`` (default :data:`SPREAD_HEAD_TYPES`) shuffled by the seed; the scene's
    ``head_types`` is the order in the tensors. Same arguments give bit-identical tensors.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if n > MAX_OBJECTS:
        raise ValueError(f"n must be at most {MAX_OBJECTS}, got {n!r}")
    try:
        H, W = (int(grid[0]), int(grid[1]))
        if len(grid) != 2:
            raise TypeError
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"grid must be (H, W), got {grid!r}") from None
    if H < 8 or W < 8:
        raise ValueError(f"grid {grid!r} too small: need H >= 8 and W >= 8")
    if not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    if not (isinstance(noise, (int, float, np.floating)) and math.isfinite(noise)) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if head_types is None:
        head_types = SPREAD_HEAD_TYPES
    head_types = tuple(head_types)
    if not head_types:
        raise ValueError(f"head_types must not be empty, got {head_types!r}")
    for t in head_types:
        if t not in KNOWN_TYPES:
            raise ValueError(f"unknown head type {t!r}; known: {sorted(KNOWN_TYPES)}")

    rng = np.random.default_rng(seed)
    HW = H * W

    # ---- objects and their drift
    touch = n >= 2 and rng.uniform() < (1 / 3 if n >= 4 else 0.15)
    labels = None
    for attempt in range(30):
        labels = _layout(rng, n, H, W, n_frames, touch and attempt < 20)
        if labels is not None:
            break
    if labels is None:
        raise ValueError(f"grid {grid!r} too small to place n={n} objects")

    # ---- identity codes
    codes = np.zeros((n, N_PARTIAL_BLOCKS), dtype=np.int64)
    if n:
        picks = rng.choice(MAX_OBJECTS, size=n, replace=False)
        codes = (picks[:, None] >> np.arange(N_PARTIAL_BLOCKS)) & 1
    groups = _instance_groups(rng, n, codes)
    inst_vecs = np.linalg.qr(rng.normal(size=(8, 8)))[0].T  # orthonormal rows
    part_vecs = [np.linalg.qr(rng.normal(size=(2, 2)))[0].T for _ in range(N_PARTIAL_BLOCKS)]

    # ---- static token features [HW, _N_FEAT] per frame (objects move, background does not)
    cat_vec = rng.normal(size=8)
    cat_vec /= np.linalg.norm(cat_vec)
    bg_cat = rng.normal(size=8)
    bg_cat -= bg_cat @ cat_vec * cat_vec
    bg_cat *= 0.3 / np.linalg.norm(bg_cat)
    tex_field = _smooth_field(rng, H, W, 8)
    obj_cat_scale = rng.uniform(0.97, 1.03, size=max(n, 1))
    obj_tex = rng.normal(size=(max(n, 1), 8))
    obj_tex *= 0.3 / np.linalg.norm(obj_tex, axis=1, keepdims=True)
    n_sinks = int(rng.integers(1, 3))
    sink_idx = [0] + [int(rng.integers(0, HW))] * (n_sinks - 1)

    # ---- heads: shuffled order, per-head weights
    order = rng.permutation(len(head_types))
    types = tuple(head_types[i] for i in order)
    partial_seen = 0
    heads = []
    for t in types:
        blk = partial_seen % N_PARTIAL_BLOCKS
        if t == "partial":
            partial_seen += 1
        heads.append(_head_weights(rng, t, blk))
    rope_amp = np.stack([h[0] for h in heads])  # [heads, 8]
    Wq = np.stack([h[1] for h in heads])  # [heads, SEM, F]
    Wk = np.stack([h[2] for h in heads])
    cos, sin = _rope_tables(H, W)

    # ---- cross-attention parameters (per scene)
    n_heads = len(types)
    strengths = rng.uniform(0.4, 1.0, size=max(n, 1))
    strengths[int(rng.integers(0, max(n, 1)))] = 1.0
    head_blur = rng.uniform(0.5, 1.5, size=n_heads)
    head_amp = rng.uniform(0.8, 1.2, size=n_heads)
    floor = rng.uniform(0.02, 0.06, size=n_heads)
    near = ndimage.binary_dilation(labels.max(0) > 0, _CROSS, iterations=2)
    free = np.flatnonzero(~near.reshape(-1))
    clutter = []
    for _ in range(int(rng.integers(1, 4))):
        if len(free) == 0:
            break
        p = int(free[rng.integers(0, len(free))])
        clutter.append((p // W, p % W, rng.uniform(0.2, 0.5), rng.uniform(0.6, 1.0)))

    frames = []
    for f in range(n_frames):
        lab = labels[f]
        flat = lab.reshape(-1)
        X = np.zeros((HW, _N_FEAT))
        X[:, _BIAS] = 1.0
        X[sink_idx, _SINK] = 1.0
        X[:, _CAT] = bg_cat
        X[:, _TEX] = tex_field
        for o in range(1, n + 1):
            sel = flat == o
            X[sel, _CAT] = obj_cat_scale[o - 1] * cat_vec
            X[sel, _TEX] = obj_tex[o - 1]
            X[sel, _ID_INST] = inst_vecs[groups[o - 1]]
            for b in range(N_PARTIAL_BLOCKS):
                X[sel, _ID_PART0 + 2 * b:_ID_PART0 + 2 * b + 2] = part_vecs[b][codes[o - 1, b]]
        # independent noise on the query side and the key side of each token (what a head's
        # q and k projections do not share), so no token gets a spurious self-match
        Xq = X + noise * _FEATURE_NOISE * rng.normal(size=X.shape)
        Xk = X + noise * _FEATURE_NOISE * rng.normal(size=X.shape)

        # q, k: [heads, HW, D]; rotary part from the (noisy) bias feature
        def rotary(Xs):
            r = Xs[:, _BIAS][None, :, None] * rope_amp[:, None, :]  # [heads, HW, 8]
            v = np.zeros((n_heads, HW, _ROPE_DIMS))
            v[:, :, 0::2] = r  # each pair starts as (amp, 0), then rotates
            return np.stack([_apply_rope(v[h], cos, sin) for h in range(n_heads)])

        qs = np.einsum("hsf,nf->hns", Wq, Xq)
        ks = np.einsum("hsf,nf->hns", Wk, Xk)
        q = np.concatenate([rotary(Xq), qs], 2) / math.sqrt(_HEAD_DIM)  # scaled before q k^T
        q = torch.from_numpy(q.astype(np.float32))
        k = torch.from_numpy(np.concatenate([rotary(Xk), ks], 2).astype(np.float32))
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # [heads, HW, HW]
        del q, k

        cross = _cross_maps(rng, lab, n, strengths, clutter, head_blur, head_amp, floor, noise)
        frames.append(SyntheticFrame(self_attn=attn,
                                     cross_attn=torch.from_numpy(cross.astype(np.float32)),
                                     labels=lab.astype(np.int32).copy()))
    return SyntheticScene(grid=(H, W), noise=float(noise), head_types=types, frames=frames)
