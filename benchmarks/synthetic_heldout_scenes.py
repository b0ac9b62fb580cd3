"""Held-out synthetic attention scenes: a prompt "N <noun>" in a video DiT latent.

What is simulated
-----------------
A clip of ``n_frames`` latent frames on a patch grid ``(H, W)`` (30 x 52 for
Wan2.1-1.3B at 480 x 832, or 15 x 26) shows N instances of one object class.
The instances never touch (at least one background patch separates any two of
them, in the 8-neighbour sense), they have varied sizes (from a few patches to a
few percent of the frame) and varied shapes (discs, ellipses, irregular blobs
with low angular harmonics, elongated rounded bars), and they drift by up to
about two patches over the clip with a slight rotation and a sub-patch jitter,
so that their rasterised footprints change a little from frame to frame.  The
same N objects, with the same ids, are present in every frame.

For each frame the module gives what one middle-layer block of the
transformer would show at an early-to-middle denoising step:

* ``self_attn``: the spatial (within-frame) block of every head's
  self-attention, renormalised so that every row is a probability
  distribution over the frame's patches;
* ``cross_attn``: every head's attention from each patch to the text token of
  the counted noun (one column of a softmax over the text keys);
* ``labels``: the ground-truth instance map.

Self-attention
--------------
Every row is one softmax over painted logits.  The logits of every head share
a common part, the thing that dominates attention at an early step, when the
latent is still mostly noise: a positional prior from the rotary embedding (a
local bump around the query of a width of one to two patches plus a broad,
slowly decaying attention over the whole frame), and a mild bias towards a few
"massive activation" background tokens.  Each head takes this common part with
its own weight and temperature and adds its own term:

``instance``
    the one head whose keys carry an instance identity: a query on an object
    gets a modest extra logit for the patches of the same object and a smaller
    one for the patches of the other objects.  Object footprints are soft
    (border patches belong less, neighbouring background a little), so the
    separation is partial and only modestly above the shared part.
``class``
    a figure/ground head: object queries attend to all object patches alike,
    background queries slightly prefer background.
``saliency``
    every query, object or background, attends more to object patches
    (a key-only bias).
``local``, ``local_wide``
    positional heads with a narrow (sub-patch to one patch) or a wide (several
    patches) Gaussian bump around the query.
``axial``
    a head whose rotary frequencies sit in one spatial axis: stripes along the
    query's row or column.
``periodic``
    high-frequency rotary components: an oscillating dependence on the
    row/column offset, with periods of a few patches.
``sink``
    an attention-sink head: a few background tokens take a large share
    (tens of percent) of every row.
``noisy``
    weak class and positional structure buried under a strong, fixed random
    low-rank interaction (features unrelated to the scene) and under a larger
    share of the per-entry noise.
``diffuse``
    a low-temperature head: the common part only, flattened towards uniform.
``texture``
    appearance similarity: background patches carry smooth random texture
    features (regions of ground, sky...), objects share a class appearance with
    a small per-instance variation; logits follow the cosine similarity.
``edge``
    boundary patches (object rims and the background ring around them)
    attend to other boundary patches.

``head_types`` may repeat these names; every head draws its own strengths
and widths.  The head order is shuffled per scene and reported in
``scene.head_types``.

Noise on self-attention: ``noise`` scales a Gaussian perturbation of the
logits, per entry (standard deviation ``noise`` in logit units, so at 1.0 a
single entry's weight varies by a factor of about e) plus a smaller per-key
term; the ``noisy`` head receives more of it.  Averages over many patches stay
informative, single entries do not.

Cross-attention to the noun
---------------------------
Each object responds with its own strength (0.4 to 1.0 of the strongest,
with a small variation per head and per frame).  The response is blurred over
several patches by a Gaussian whose width differs between heads (sharp and
diffuse heads) and sharpened by a head-specific exponent; nearby objects can
merge into one bump.  A few clutter bumps (pieces of background the noun also
attends to, fixed in the scene and weaker than most objects) and a background
level of about 5 % of the strongest object, with a slow spatial modulation,
are added.  Each head scales the map to its own peak softmax weight.  Noise is
multiplicative (per patch and spatially smooth log-normal factors) plus a small
additive positive term, both scaled by ``noise``.

Randomness
----------
Separate random streams are derived from ``seed`` for the geometry (objects and
their motion), for the heads (order, strengths, widths, sinks, the cross-map
content) and for the noise, so the same seed at another noise level gives the
same objects and the same heads.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

try:
    from synthetic_scenes import SyntheticFrame, SyntheticScene
except ImportError:  # imported from outside benchmarks/
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from synthetic_scenes import SyntheticFrame, SyntheticScene

HELDOUT_HEAD_TYPES: tuple[str, ...] = (
    "instance", "class", "saliency", "local", "local_wide", "axial",
    "periodic", "sink", "noisy", "diffuse", "texture", "edge",
)

_SHAPES = ("disc", "ellipse", "blob", "elongated")
_STREAM_GEOMETRY, _STREAM_HEADS, _STREAM_NOISE = 1, 2, 3


# --------------------------------------------------------------------------- #
# argument checks
# --------------------------------------------------------------------------- #
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_args(n, grid, n_frames, noise, seed,
                head_types) -> tuple[tuple[int, int], tuple[str, ...]]:
    if not _is_int(n) or n < 1:
        raise ValueError(f"n={n!r}: expected an integer >= 1 (the number of objects)")
    try:
        sides = tuple(grid)
    except TypeError:
        raise ValueError(f"grid={grid!r}: expected a pair (H, W) of integers >= 8") from None
    if len(sides) != 2 or not all(_is_int(s) and s >= 8 for s in sides):
        raise ValueError(f"grid={grid!r}: expected a pair (H, W) of integers >= 8")
    if not _is_int(n_frames) or n_frames < 1:
        raise ValueError(f"n_frames={n_frames!r}: expected an integer >= 1")
    if (isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating))
            or not math.isfinite(float(noise)) or noise < 0):
        raise ValueError(f"noise={noise!r}: expected a finite number >= 0")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    if head_types is None:
        types = HELDOUT_HEAD_TYPES
    else:
        if isinstance(head_types, str):
            raise ValueError(f"head_types={head_types!r}: expected a sequence of names "
                             f"from {HELDOUT_HEAD_TYPES}")
        types = tuple(head_types)
        if not types:
            raise ValueError(f"head_types={head_types!r}: expected at least one head type")
        for t in types:
            if t not in HELDOUT_HEAD_TYPES:
                raise ValueError(f"head_types contains unknown head type {t!r}: expected "
                                 f"names from {HELDOUT_HEAD_TYPES}")
    return (int(sides[0]), int(sides[1])), types


# --------------------------------------------------------------------------- #
# geometry
# --------------------------------------------------------------------------- #
@dataclass
class _Shape:
    kind: str
    a: float  # semi-axis along the shape's own u axis (or base radius for blobs)
    b: float  # semi-axis along v
    theta: float
    spin: float  # rotation over the clip (radians)
    harmonics: np.ndarray  # blob: rows (m, amplitude, phase)


def _draw_shape(rng: np.random.Generator, area: float) -> _Shape:
    if area < 6:
        kind = _SHAPES[int(rng.integers(0, 2))]
    else:
        kind = _SHAPES[int(rng.choice(4, p=[0.2, 0.3, 0.3, 0.2]))]
    theta = float(rng.uniform(0, math.pi))
    spin = float(rng.uniform(-0.15, 0.15))
    harm = np.zeros((0, 3))
    if kind == "disc":
        r = math.sqrt(area / math.pi)
        a = b = r
    elif kind == "ellipse":
        q = float(rng.uniform(1.3, 2.2))
        r = math.sqrt(area / math.pi)
        a, b = r * math.sqrt(q), r / math.sqrt(q)
    elif kind == "blob":
        ms = np.array([2, 3, 4, 5], float)
        amp = rng.uniform(0.05, 0.22, size=4) * np.array([1.0, 1.0, 0.8, 0.6])
        ph = rng.uniform(0, 2 * math.pi, size=4)
        harm = np.stack([ms, amp, ph], axis=1)
        r = math.sqrt(area / (math.pi * (1 + 0.5 * float((amp ** 2).sum()))))
        a = b = r
    else:  # elongated: a rounded bar (superellipse, exponent 3.5)
        p = 3.5
        k = 4 * math.gamma(1 + 1 / p) ** 2 / math.gamma(1 + 2 / p)  # area = k a b
        q = float(rng.uniform(2.5, 5.0))
        b = max(0.75, math.sqrt(area / (k * q)))
        a = area / (k * b)
    return _Shape(kind, a, b, theta, spin, harm)


def _raster(shape: _Shape, cy: float, cx: float, theta: float, yy: np.ndarray,
            xx: np.ndarray) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(theta), math.sin(theta)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    if shape.kind in ("disc", "ellipse"):
        return (u / shape.a) ** 2 + (v / shape.b) ** 2 <= 1.0
    if shape.kind == "elongated":
        return np.abs(u / shape.a) ** 3.5 + np.abs(v / shape.b) ** 3.5 <= 1.0
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    rad = np.ones_like(rho)
    for m, amp, ph in shape.harmonics:
        rad += amp * np.cos(m * phi + ph)
    return rho <= shape.a * rad


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, k = ndimage.label(mask)  # 4-connectivity
    if k <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def _layout(rng: np.random.Generator, n: int, grid: tuple[int, int], n_frames: int) -> np.ndarray:
    """Labels [n_frames, H, W] of n non-touching, drifting objects."""
    H, W = grid
    hw = H * W
    pad = max(H, W)
    yy, xx = np.mgrid[-pad:H + pad, -pad:W + pad].astype(np.float64)
    crop = (slice(pad, pad + H), slice(pad, pad + W))
    box = np.ones((3, 3), bool)
    a_min, a_max = 3.0, max(4.0, 0.04 * hw)
    budget = 0.2 * hw
    for _layout_try in range(8):
        areas = np.exp(rng.uniform(math.log(a_min), math.log(a_max), size=n))
        if areas.sum() > budget:
            areas = np.maximum(2.0, areas * budget / areas.sum())
        areas = np.sort(areas)[::-1]
        halo = np.zeros((n_frames, H, W), bool)  # dilated union of placed objects
        placed: list[np.ndarray] = []
        for area in areas:
            found = None
            for attempt in range(160):
                if attempt and attempt % 40 == 0:
                    area = max(2.0, area * 0.75)
                shape = _draw_shape(rng, area)
                cy0, cx0 = rng.uniform(-0.5, H - 0.5), rng.uniform(-0.5, W - 0.5)
                if n_frames > 1:
                    dist = rng.uniform(0.3, 2.0)
                    ang = rng.uniform(0, 2 * math.pi)
                    vy, vx = dist * math.sin(ang), dist * math.cos(ang)
                else:
                    vy = vx = 0.0
                masks = []
                for f in range(n_frames):
                    t = f / (n_frames - 1) if n_frames > 1 else 0.0
                    jy, jx = rng.normal(0.0, 0.15, size=2)
                    cy, cx = cy0 + vy * t + jy, cx0 + vx * t + jx
                    full = _raster(shape, cy, cx, shape.theta + shape.spin * t, yy, xx)
                    inner = full[crop]
                    if full.sum() != inner.sum():  # leaves the frame
                        break
                    if not inner.any():  # tiny shape between patch centres
                        iy = int(np.clip(round(cy), 0, H - 1))
                        ix = int(np.clip(round(cx), 0, W - 1))
                        inner = np.zeros((H, W), bool)
                        inner[iy, ix] = True
                    inner = _largest_component(inner)
                    if (inner & halo[f]).any():
                        break
                    masks.append(inner)
                if len(masks) == n_frames:
                    found = np.stack(masks)
                    break
            if found is None:
                break
            placed.append(found)
            for f in range(n_frames):
                halo[f] |= ndimage.binary_dilation(found[f], structure=box)
        if len(placed) == n:
            ids = rng.permutation(n) + 1
            labels = np.zeros((n_frames, H, W), np.int32)
            for k, m in enumerate(placed):
                labels[m] = ids[k]
            return labels
        budget *= 0.7
    raise ValueError(f"n={n}: could not place {n} non-touching objects on grid {grid}; "
                     "expected fewer objects or a larger grid")


# --------------------------------------------------------------------------- #
# heads
# --------------------------------------------------------------------------- #
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _head_params(rng: np.random.Generator, kind: str, hw: int, n_sinks: int) -> dict:
    p = {"kind": kind, "shared": _u(rng, 0.7, 1.2), "temp": _u(rng, 0.85, 1.15),
         "sink_mild": _u(rng, 0.3, 1.0), "noise": _u(rng, 0.8, 1.2)}
    if kind == "instance":
        p.update(own=_u(rng, 1.3, 1.8), cls=_u(rng, 0.0, 0.3), bg=_u(rng, 0.1, 0.3))
    elif kind == "class":
        p.update(cls=_u(rng, 1.0, 1.6), bg=_u(rng, 0.2, 0.5))
    elif kind == "saliency":
        p.update(key=_u(rng, 1.0, 1.8), cls=_u(rng, 0.0, 0.3))
    elif kind == "local":
        p.update(amp=_u(rng, 2.5, 4.0), width=_u(rng, 0.6, 1.1))
    elif kind == "local_wide":
        p.update(amp=_u(rng, 1.2, 2.2), width=_u(rng, 2.5, 4.5))
    elif kind == "axial":
        p.update(amp=_u(rng, 1.5, 2.5), width=_u(rng, 0.35, 0.7), axis=int(rng.integers(0, 2)),
                 along=_u(rng, 0.25, 0.5))
    elif kind == "periodic":
        p.update(amp=_u(rng, 0.8, 1.6), py=_u(rng, 3.0, 8.0), px=_u(rng, 3.0, 8.0),
                 mix=_u(rng, 0.3, 0.7))
    elif kind == "sink":
        # a sink logit of about log(HW) lets one token rival the whole frame
        k = int(rng.integers(min(2, n_sinks), min(3, n_sinks) + 1))
        p.update(sinks=rng.choice(n_sinks, size=k, replace=False),
                 amp=math.log(hw) + rng.uniform(-2.5, -0.5, size=k))
    elif kind == "noisy":
        r = 16
        q = rng.standard_normal((hw, r)).astype(np.float32)
        kk = rng.standard_normal((hw, r)).astype(np.float32)
        p.update(amp=_u(rng, 1.0, 1.6), q=q, k=kk, cls=_u(rng, 0.3, 0.6),
                 loc=_u(rng, 0.5, 1.0))
        p["noise"] *= 2.0
    elif kind == "diffuse":
        p["temp"] = _u(rng, 0.3, 0.6)
    elif kind == "texture":
        p.update(amp=_u(rng, 1.0, 2.0))
    elif kind == "edge":
        p.update(pair=_u(rng, 1.2, 2.0), key=_u(rng, 0.3, 0.8))
    return p


def _box3(a: np.ndarray) -> np.ndarray:
    return ndimage.uniform_filter(a.astype(np.float64), size=3, mode="constant")


def _frame_content(labels: np.ndarray, n: int, bg_feat: np.ndarray,
                   obj_feat: np.ndarray) -> dict:
    """Soft object memberships, edges and appearance features of one frame."""
    H, W = labels.shape
    soft = np.zeros((n, H * W), np.float32)
    for k in range(n):
        ind = (labels == k + 1).astype(np.float64)
        nb = _box3(ind)
        soft[k] = (ind * (0.7 + 0.3 * nb) + (1 - ind) * 0.6 * nb).ravel()
    union = (labels > 0).astype(np.float64)
    nbu = _box3(union)
    edge = np.clip(2.5 * (union * (1 - nbu) + (1 - union) * nbu), 0, 1).ravel()
    cls = np.clip(soft.sum(0), 0, 1)
    # appearance: background texture, objects their (class + instance) appearance
    feat = bg_feat.copy()
    for k in range(n):
        w = soft[k][:, None]
        feat = feat * (1 - w) + obj_feat[k][None, :] * w
    feat /= np.linalg.norm(feat, axis=1, keepdims=True) + 1e-6
    return {"soft": torch.from_numpy(soft), "cls": torch.from_numpy(cls),
            "edge": torch.from_numpy(edge.astype(np.float32)),
            "feat": torch.from_numpy(feat.astype(np.float32))}


def _static_logits(p: dict, pos: dict, shared: torch.Tensor, sink_vec: torch.Tensor,
                   sink_idx: np.ndarray) -> torch.Tensor:
    """The frame-independent part of one head's logits (before temperature)."""
    L = shared * p["shared"] + sink_vec[None, :] * p["sink_mild"]
    kind = p["kind"]
    d2 = pos["d2"]
    if kind in ("local", "local_wide"):
        L += p["amp"] * torch.exp(-d2 / (2 * p["width"] ** 2))
    elif kind == "axial":
        across, along = (pos["dy"], pos["dx"]) if p["axis"] == 0 else (pos["dx"], pos["dy"])
        span = p["along"] * (pos["W"] if p["axis"] == 0 else pos["H"])
        L += p["amp"] * torch.exp(-across ** 2 / (2 * p["width"] ** 2)) * (
            0.6 + 0.4 * torch.exp(-along ** 2 / (2 * span ** 2)))
    elif kind == "periodic":
        L += p["amp"] * (p["mix"] * torch.cos(2 * math.pi * pos["dy"] / p["py"])
                         + (1 - p["mix"]) * torch.cos(2 * math.pi * pos["dx"] / p["px"]))
    elif kind == "sink":
        for j, a in zip(p["sinks"], p["amp"]):
            L[:, int(sink_idx[j])] += float(a)
    elif kind == "noisy":
        q, k = torch.from_numpy(p["q"]), torch.from_numpy(p["k"])
        L += (p["amp"] / math.sqrt(q.shape[1])) * (q @ k.T)
        L += p["loc"] * torch.exp(-d2 / 2.0)
    return L


def _add_content(L: torch.Tensor, p: dict, c: dict) -> None:
    kind = p["kind"]
    cls = c["cls"]
    if kind == "instance":
        soft = c["soft"]
        L += p["own"] * (soft.T @ soft)
        L += p["cls"] * cls[:, None] * cls[None, :]
        bg = 1 - cls
        L += p["bg"] * bg[:, None] * bg[None, :]
    elif kind == "class":
        L += p["cls"] * cls[:, None] * cls[None, :]
        bg = 1 - cls
        L += p["bg"] * bg[:, None] * bg[None, :]
    elif kind == "saliency":
        L += p["key"] * cls[None, :] + p["cls"] * cls[:, None] * cls[None, :]
    elif kind == "noisy":
        L += p["cls"] * cls[:, None] * cls[None, :]
    elif kind == "texture":
        f = c["feat"]
        L += p["amp"] * (f @ f.T)
    elif kind == "edge":
        e = c["edge"]
        L += p["pair"] * e[:, None] * e[None, :] + p["key"] * e[None, :]


# --------------------------------------------------------------------------- #
# cross-attention
# --------------------------------------------------------------------------- #
def _smooth_field(rng: np.random.Generator, grid: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(grid), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def _cross_maps(labels: np.ndarray, n: int, frame: int, cp: dict, heads: list[dict],
                noise: float, nrng: np.random.Generator) -> torch.Tensor:
    H, W = labels.shape
    ind = np.stack([(labels == k + 1) for k in range(n)]).astype(np.float64)
    out = np.empty((len(heads), H * W), np.float32)
    for h, hp in enumerate(heads):
        x = hp["x"]
        blur = ndimage.gaussian_filter(ind, (0, x["sigma"], x["sigma"]), mode="constant")
        blur /= blur.reshape(n, -1).max(axis=1)[:, None, None] + 1e-12
        strength = cp["strength"] * x["obj_jitter"] * cp["flicker"][frame]
        fg = np.tensordot(strength, blur, axes=1)
        fg += np.tensordot(cp["clutter_amp"] * x["clutter_jitter"], cp["clutter"], axes=1)
        fg = np.clip(fg, 0, None) ** x["gamma"]
        m = cp["background"] * x["bg_level"] + fg
        if noise > 0:
            z = nrng.standard_normal((H, W))
            zs = _smooth_field(nrng, (H, W), 1.5)
            m = m * np.exp(noise * (0.35 * z + 0.25 * zs))
            m = m + noise * 0.02 * np.abs(nrng.standard_normal((H, W)))
        out[h] = (x["peak"] * m).ravel()
    return torch.from_numpy(np.clip(out, 0, 1))


def _cross_params(rng: np.random.Generator, labels: np.ndarray, n: int, n_frames: int,
                  grid: tuple[int, int]) -> dict:
    H, W = grid
    strength = rng.uniform(0.4, 1.0, size=n)
    strength /= strength.max()
    flicker = np.exp(rng.normal(0.0, 0.06, size=(n_frames, n)))
    # clutter: background places the noun also attends to, fixed over the clip
    far = ndimage.distance_transform_edt(~(labels > 0).any(0))
    cand = np.flatnonzero(far.ravel() >= 2.5)
    if cand.size == 0:
        cand = np.flatnonzero(far.ravel() >= 1.0)
    n_max = max(1, int(round(H * W / 400)))
    k = min(int(rng.integers(1, n_max + 1)), cand.size)
    spots = rng.choice(cand, size=k, replace=False)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    clutter = np.zeros((k, H, W))
    for i, s in enumerate(spots):
        cy, cx = divmod(int(s), W)
        sy, sx = rng.uniform(0.7, 1.8, size=2)
        clutter[i] = np.exp(-((yy - cy) ** 2) / (2 * sy ** 2) - ((xx - cx) ** 2) / (2 * sx ** 2))
    clutter_amp = rng.uniform(0.15, 0.45, size=k)
    background = 0.05 * np.clip(1 + 0.35 * _smooth_field(rng, grid, max(H, W) / 6), 0.3, None)
    return {"strength": strength, "flicker": flicker, "clutter": clutter,
            "clutter_amp": clutter_amp, "background": background}


def _cross_head(rng: np.random.Generator, n: int, k_clutter: int, hw: int) -> dict:
    # blur in patches: part of the spread is in image space, so a coarser grid
    # (fewer, larger patches) spreads over somewhat fewer patches
    scale = min(1.0, math.sqrt(hw / 1560.0))
    return {"sigma": scale * _u(rng, 0.8, 2.2), "gamma": _u(rng, 0.8, 1.5),
            "peak": _u(rng, 0.12, 0.6), "bg_level": _u(rng, 0.8, 1.2),
            "obj_jitter": np.exp(rng.normal(0.0, 0.1, size=n)),
            "clutter_jitter": rng.uniform(0.7, 1.3, size=k_clutter)}


# --------------------------------------------------------------------------- #
# the scene
# --------------------------------------------------------------------------- #
def make_heldout_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5,
                       seed: int = 0, head_types: tuple[str, ...] | None = None) -> SyntheticScene:
    """A scene of ``n`` non-touching objects on ``grid`` over ``n_frames`` frames.

    Returns a ``SyntheticScene`` whose frames carry self-attention
    ``[heads, HW, HW]`` (rows sum to 1), cross-attention to the noun
    ``[heads, HW]`` and the labels ``[H, W]`` (0 background, 1..n objects).
    ``head_types=None`` uses the 12 types of ``HELDOUT_HEAD_TYPES`` once each;
    the head order is shuffled from ``seed`` and reported in ``scene.head_types``.
    """
    grid, types = _check_args(n, grid, n_frames, noise, seed, head_types)
    n, n_frames, seed, noise = int(n), int(n_frames), int(seed), float(noise)
    H, W = grid
    hw = H * W

    grng = np.random.default_rng([seed, _STREAM_GEOMETRY])
    hrng = np.random.default_rng([seed, _STREAM_HEADS])
    nrng = np.random.default_rng([seed, _STREAM_NOISE])
    tgen = torch.Generator().manual_seed(int(nrng.integers(0, 2 ** 62)))

    labels = _layout(grng, n, grid, n_frames)
    order = tuple(types[i] for i in hrng.permutation(len(types)))

    # positions in patch units and the shared positional prior
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32),
                            torch.arange(W, dtype=torch.float32), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    d2 = dy ** 2 + dx ** 2
    pos = {"dy": dy, "dx": dx, "d2": d2, "H": float(H), "W": float(W)}
    a_loc, s_loc = _u(hrng, 1.5, 2.3), _u(hrng, 1.2, 1.8)
    a_broad, s_broad = _u(hrng, 0.4, 0.9), _u(hrng, 0.25, 0.4) * max(H, W)
    shared = (a_loc * torch.exp(-d2 / (2 * s_loc ** 2))
              + a_broad * torch.exp(-d2 / (2 * s_broad ** 2)))

    # "massive activation" tokens: background patches, the same for every head
    free = ~ndimage.binary_dilation((labels > 0).any(0), structure=np.ones((3, 3), bool))
    cand = np.flatnonzero(free.ravel())
    if cand.size == 0:
        cand = np.flatnonzero(~(labels > 0).any(0).ravel())
    if cand.size == 0:
        cand = np.arange(hw)
    n_sinks = min(int(hrng.integers(2, 5)), cand.size)
    sink_idx = hrng.choice(cand, size=n_sinks, replace=False)
    sink_vec = torch.zeros(hw)
    sink_vec[torch.from_numpy(sink_idx)] = torch.from_numpy(
        hrng.uniform(0.5, 1.5, size=n_sinks).astype(np.float32))

    # appearance features for the texture heads
    bg_feat = np.stack([_smooth_field(hrng, grid, _u(hrng, 0.1, 0.25) * max(H, W))
                        for _ in range(3)], axis=-1).reshape(hw, 3)
    bg_feat = np.concatenate([bg_feat, np.linspace(-1.5, 1.5, H).repeat(W)[:, None],
                              np.zeros((hw, 1))], axis=1)
    obj_base = np.array([0.0, 0.0, 0.0, 0.0, 2.0])
    obj_feat = obj_base[None, :] + 0.5 * hrng.standard_normal((n, 5))

    heads = [_head_params(hrng, t, hw, n_sinks) for t in order]
    cp = _cross_params(hrng, labels, n, n_frames, grid)
    for hp in heads:
        hp["x"] = _cross_head(hrng, n, cp["clutter"].shape[0], hw)

    self_maps = [torch.empty((len(heads), hw, hw), dtype=torch.float32) for _ in range(n_frames)]
    contents = [_frame_content(labels[f], n, bg_feat, obj_feat) for f in range(n_frames)]
    for h, hp in enumerate(heads):
        static = _static_logits(hp, pos, shared, sink_vec, sink_idx)
        for f in range(n_frames):
            L = static.clone()
            _add_content(L, hp, contents[f])
            L *= hp["temp"]
            if noise > 0:
                sd = noise * hp["noise"]
                L += sd * torch.randn((hw, hw), generator=tgen)
                L += (0.4 * sd) * torch.randn((hw,), generator=tgen)[None, :]
            self_maps[f][h] = torch.softmax(L, dim=-1)

    frames = []
    for f in range(n_frames):
        cross = _cross_maps(labels[f], n, f, cp, heads, noise, nrng)
        frames.append(SyntheticFrame(self_attn=self_maps[f], cross_attn=cross,
                                     labels=labels[f].copy()))
    return SyntheticScene(grid=grid, noise=noise, head_types=order, frames=frames)
