"""Synthetic attention of a CogVideoX-style joint (MM-DiT) transformer block.

CogVideoX has no separate cross-attention.  The T5 text tokens (226 of them:
the prompt's 10-40 tokens, an end token, then padding) are concatenated with a
latent frame's video patch tokens and every head runs ONE softmax attention
over [text; video].  This module simulates that attention from token features
instead of painting attention maps directly, so that the maps carry the
couplings a real layer has: which keys a row attends to is decided by what the
query and key vectors share, the text tokens compete for the same softmax
mass, and the renormalised video block is shaped by how much of each query
was spent on the text.

Token features.  Each video token of a latent frame holds, in separate
sub-spaces: a shared "bias" scalar (a smooth field; it is what queries use to
reach the text attention sinks), a 3D sinusoidal position embedding
(CogVideoX-2B style, frame index / row / column), a low-level appearance
(background regions of sky and one or two grounds with smooth random texture;
objects have a class colour plus a per-instance tint), a semantic part (the
counted noun's class vector with a per-object strength, other classes for a
few unlabelled clutter objects, weak region vectors for the background and a
few background spots that partly resemble the class; the whole field is
blurred over about a patch, so it leaks onto the surrounding background), an
instance identity (one random vector per object, one per background region),
an objectness scalar, token-specific detail, and a "hub" flag on a few
background tokens.  Objects are blobs of 3 to ~80 patches at 30x52 (scaled
with the grid), some touching or overlapping (the front one occludes), some
cut by the frame edge; they move, turn and scale a little from frame to
frame.  Features are composited front-to-back with soft edges and then get
per-token noise proportional to ``noise``.  Text tokens: the first token, the
end token and the near-identical padding tokens carry sink features; the noun
token(s) carry the class's semantic vector (and a little of its colour); the
other prompt words are random concepts.

Attention.  Per head, q and k are random linear projections of the features
(one 64-dim projection per sub-space, scaled by the head's gains; the key
projection is a correlated copy of the query projection), plus q/k noise
proportional to ``noise``, then QK LayerNorm (with a random affine gain, as
CogVideoX normalises q and k), 3D rotary embedding on the video tokens for the
"local" heads only (CogVideoX-5B style), and logits = tau * q.k / sqrt(64).
Keys are the 226 text tokens, the current frame's HW tokens and a
neighbouring latent frame's HW tokens (a stand-in for the rest of the clip).
Gains, temperature, noise factors and alignments are drawn per head and per
scene within ranges that depend on the head's type.  Returned per frame:
``self_attn`` = the current frame's video->video block with each row divided
by its own sum; ``cross_attn`` = the (not renormalised) probability each
video query puts on the noun token(s), summed over them.  Head order is
shuffled per scene (seeded); ``scene.head_types`` gives the order.

Head types (one line each):
  instance   - identity gains strong: rows stay on their own object (and
               background rows on their own region); the one head type that
               separates individual objects of the counted noun.
  class      - semantic class gain strong, no identity: all objects of the
               counted class attend to each other alike.
  saliency   - objectness gain strong: foreground (counted objects and
               clutter) attends to all foreground.
  texture    - low-level appearance: attends to similar colour/texture (sky
               to sky, ground to ground, same-coloured objects together).
  local      - 3D RoPE on a constant carrier: a spatial neighbourhood around
               the query regardless of content.
  axial      - absolute position of one axis (row or column, drawn per head):
               horizontal or vertical bands.
  text_sink  - nearly all mass to the text sinks; the video block left after
               renormalisation is nearly uniform and noisy.
  diffuse    - low temperature: broad, nearly uniform rows.
  diagonal   - token-specific detail aligned in q and k: a strong diagonal
               (each token attends to itself, a little to its neighbours).
  mixed      - class, appearance, position and a little identity together.
  noisy      - dominated by token detail with unrelated q/k projections and
               large q/k noise: random-looking rows.
  video_sink - every query attends to a few "hub" background tokens
               (vertical stripes in the attention matrix).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch
from scipy import ndimage

try:
    from synthetic_scenes import SyntheticFrame, SyntheticScene
except ImportError:  # imported from outside benchmarks/
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["JOINT_HEAD_TYPES", "TEXT_LEN", "make_joint_scene"]

JOINT_HEAD_TYPES: tuple[str, ...] = (
    "instance",
    "class",
    "saliency",
    "texture",
    "local",
    "axial",
    "text_sink",
    "diffuse",
    "diagonal",
    "mixed",
    "noisy",
    "video_sink",
)

TEXT_LEN = 226
HEAD_DIM = 64
_REF_HW = 30 * 52
_MAX_N = 8

# feature sub-spaces: (name, dims)
_COMPONENTS = (
    ("shared", 4),  # [video bias alpha, pad sink, first-token sink, end-token sink]
    ("pos", 48),  # 3D sincos: t 12, h 18, w 18
    ("app", 24),
    ("sem", 24),
    ("ident", 24),
    ("obj", 4),
    ("detail", 16),
    ("hub", 2),  # [1 for every video token, hub strength]
)
_SL: dict[str, slice] = {}
_o = 0
for _name, _d in _COMPONENTS:
    _SL[_name] = slice(_o, _o + _d)
    _o += _d
_D = _o
del _o, _name, _d
_POS_PARTS = {"t": (0, 12), "h": (12, 30), "w": (30, 48)}
_PROJ_COMPS = ("pos", "app", "sem", "ident", "obj", "detail")
# per-token feature noise at noise=1 (norm of the noise vector per sub-space)
_FEAT_NOISE = {"app": 0.6, "sem": 0.8, "ident": 1.0, "obj": 0.6}

_DEFAULTS = {
    "tau": (0.9, 1.3),
    "kappa": (0.3, 0.5),  # q/k noise relative to the q/k rms, at noise=1
    "rho": (0.85, 1.0),  # q/k projection alignment of the content sub-spaces
    "rho_det": (0.2, 0.5),  # alignment of the detail sub-space
    "rho_sh": (0.0, 0.4),  # video-key alignment with the query's sink direction
    "gvk": (0.3, 0.8),  # video-key gain of the bias scalar relative to the query's
    "rope": False,
    "axial": False,
}

_HEAD_SPECS: dict[str, dict] = {
    "instance": dict(
        g=dict(shared=(0.5, 1.0), pos=(0.3, 0.6), app=(0.2, 0.4), sem=(0.3, 0.6),
               ident=(1.2, 1.7), obj=(0.1, 0.3), detail=(0.2, 0.4)),
        tau=(0.9, 1.3), kappa=(0.5, 0.8)),
    "class": dict(
        g=dict(shared=(0.5, 1.0), pos=(0.1, 0.3), app=(0.2, 0.5), sem=(1.2, 1.7),
               obj=(0.2, 0.4), detail=(0.2, 0.4))),
    "saliency": dict(
        g=dict(shared=(0.5, 1.0), pos=(0.1, 0.3), app=(0.1, 0.3), sem=(0.2, 0.4),
               obj=(1.2, 1.7), detail=(0.2, 0.4)),
        tau=(0.8, 1.2)),
    "texture": dict(
        g=dict(shared=(0.4, 0.9), pos=(0.2, 0.4), app=(1.2, 1.7), sem=(0.1, 0.3),
               detail=(0.2, 0.4))),
    "local": dict(
        g=dict(shared=(0.7, 1.1), carrier=(1.1, 1.5), app=(0.1, 0.3), sem=(0.1, 0.3),
               detail=(0.2, 0.4)),
        tau=(2.0, 3.0), rope=True),
    "axial": dict(
        g=dict(shared=(0.3, 0.7), pos=(1.5, 2.0), app=(0.1, 0.3), detail=(0.2, 0.4)),
        tau=(2.0, 3.0), axial=True),
    "text_sink": dict(
        g=dict(shared=(3.0, 5.0), pos=(0.2, 0.4), app=(0.2, 0.4), sem=(0.2, 0.4),
               ident=(0.0, 0.2), detail=(0.3, 0.6)),
        tau=(1.5, 2.5), kappa=(0.6, 1.0)),
    "diffuse": dict(
        g=dict(shared=(0.4, 0.8), pos=(0.3, 0.6), app=(0.3, 0.6), sem=(0.3, 0.6),
               ident=(0.0, 0.3), obj=(0.2, 0.4), detail=(0.2, 0.4)),
        tau=(0.2, 0.45)),
    "diagonal": dict(
        g=dict(shared=(0.4, 0.8), pos=(0.4, 0.7), app=(0.1, 0.3), detail=(1.4, 2.0)),
        tau=(1.5, 2.5), rho_det=(0.9, 1.0)),
    "mixed": dict(
        g=dict(shared=(0.4, 0.9), pos=(0.4, 0.8), app=(0.4, 0.8), sem=(0.5, 0.9),
               ident=(0.0, 0.4), obj=(0.3, 0.6), detail=(0.2, 0.4))),
    "noisy": dict(
        g=dict(shared=(0.4, 0.8), pos=(0.1, 0.3), app=(0.1, 0.3), sem=(0.1, 0.3),
               detail=(0.8, 1.2)),
        tau=(0.9, 1.4), kappa=(1.0, 1.6), rho_det=(0.0, 0.2)),
    "video_sink": dict(
        g=dict(shared=(0.4, 0.8), pos=(0.2, 0.4), app=(0.2, 0.4), detail=(0.2, 0.4),
               hub=(1.3, 2.0)),
        tau=(1.0, 1.5)),
}
assert tuple(_HEAD_SPECS) == JOINT_HEAD_TYPES


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def _smooth_field(rng: np.random.Generator, c: int, H: int, W: int, scale: float) -> np.ndarray:
    """Smooth zero-mean random field [c, H, W] with unit-ish std per channel."""
    f = rng.standard_normal((c, H, W))
    sig = max(scale, 0.5)
    f = ndimage.gaussian_filter(f, sigma=(0, sig, sig), mode="reflect")
    f /= f.std(axis=(1, 2), keepdims=True) + 1e-8
    return f


def _sincos(pos: np.ndarray, d: int) -> np.ndarray:
    half = d // 2
    omega = 1.0 / (10000.0 ** (np.arange(half) / half))
    ang = pos[:, None] * omega[None, :]
    e = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    return e / math.sqrt(half)


def _pos_embed(H: int, W: int, t: int) -> np.ndarray:
    """3D sincos position embedding [HW, 48], each axis part with norm 1/sqrt(3)."""
    yy, xx = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    yy, xx = yy.ravel(), xx.ravel()
    et = _sincos(np.full(H * W, float(t)), 12)
    eh = _sincos(yy, 18)
    ew = _sincos(xx, 18)
    return np.concatenate([et, eh, ew], axis=1) / math.sqrt(3.0)


def _rope_cos_sin(H: int, W: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3D rotary tables for a 64-dim head: t 16, h 24, w 24 dims (8/12/12 pairs)."""
    yy, xx = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    parts = []
    for pos, d in ((np.full(H * W, float(t)), 16), (yy.ravel(), 24), (xx.ravel(), 24)):
        half = d // 2
        inv = 1.0 / (10000.0 ** (np.arange(half) * 2.0 / d))
        parts.append(pos[:, None] * inv[None, :])
    ang = torch.from_numpy(np.concatenate(parts, axis=1)).float()  # [HW, 32]
    return torch.cos(ang), torch.sin(ang)


def _lowfreq_mask() -> np.ndarray:
    """Dims of the rotary pairs that turn by less than ~0.5 rad over a 52-patch row."""
    m = np.zeros(HEAD_DIM)
    pairs = list(range(4, 8)) + list(range(8 + 6, 20)) + list(range(20 + 6, 32))
    for p_ in pairs:
        m[2 * p_] = m[2 * p_ + 1] = 1.0
    return m


_LOWFREQ_MASK = _lowfreq_mask()


def _carrier_weights(rng: np.random.Generator) -> np.ndarray:
    """Per-dim amplitudes (mean square 1) of a RoPE head's carrier: spatial pairs
    weighted around a mid frequency (0.15..0.35 rad/patch), temporal pairs weakly."""
    centre = math.exp(rng.uniform(math.log(0.15), math.log(0.35)))
    om_t = 10000.0 ** (-np.arange(8) * 2.0 / 16)
    om_s = 10000.0 ** (-np.arange(12) * 2.0 / 24)
    w_s = np.exp(-((np.log(om_s) - math.log(centre)) / 0.9) ** 2)
    w = np.concatenate([0.15 * np.ones_like(om_t), w_s, w_s])  # pair energies
    amp = np.repeat(np.sqrt(w), 2)
    return amp / math.sqrt((amp ** 2).mean())


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


# ----------------------------------------------------------------------------
# layout: objects, motion, occlusion
# ----------------------------------------------------------------------------


def _render_object(ob: dict, t: int, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hard mask and soft coverage [H, W] of one object at frame t (before occlusion)."""
    cy = ob["cy"] + ob["vy"] * t
    cx = ob["cx"] + ob["vx"] * t
    th = ob["th"] + ob["om"] * t
    sc = ob["grow"] ** t
    a, b = ob["a"] * sc, ob["b"] * sc
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(th) + dy * math.sin(th)
    w = -dx * math.sin(th) + dy * math.cos(th)
    phi = np.arctan2(w / b, u / a)
    reff = 1.0 + ob["h2"] * np.cos(2 * phi + ob["p2"]) + ob["h3"] * np.cos(3 * phi + ob["p3"])
    r = np.sqrt((u / a) ** 2 + (w / b) ** 2) / reff
    hard = r <= 1.0
    if hard.sum() < 3:
        # tiny objects: take the 3 patches nearest the centre when they are close
        flat = np.argsort(r, axis=None)[:3]
        if r.flat[flat[-1]] < 1.9:
            hard = hard.copy()
            hard.flat[flat] = True
    soft = np.clip(0.5 + (1.0 - r) * b * 1.2, 0.0, 1.0)
    soft = np.where(hard, np.maximum(soft, 0.6), np.minimum(soft, 0.45))
    return hard, soft


def _sample_objects(rng: np.random.Generator, n: int, H: int, W: int, shrink: float) -> list[dict]:
    s_area = H * W / _REF_HW
    s_lin = math.sqrt(s_area)
    n_clutter = int(rng.integers(0, 4))
    objs: list[dict] = []
    kinds = ["target"] * n + ["clutter"] * n_clutter
    rng.shuffle(kinds)
    for kind in kinds:
        area = math.exp(rng.uniform(math.log(3.0), math.log(80.0))) * s_area * shrink
        area = max(area, 3.2)
        aspect = rng.uniform(1.0, 2.2)
        b = math.sqrt(area / (math.pi * aspect))
        a = aspect * b
        R = math.sqrt(a * b)
        mode = rng.random()
        cy = cx = 0.0
        if objs and mode < 0.3:  # touch / partially overlap an earlier object
            o = objs[int(rng.integers(len(objs)))]
            ang = rng.uniform(0, 2 * math.pi)
            dist = (math.sqrt(o["a"] * o["b"]) + R) * rng.uniform(0.55, 1.05)
            cy, cx = o["cy"] + dist * math.sin(ang), o["cx"] + dist * math.cos(ang)
            cy, cx = float(np.clip(cy, 0.3 * R, H - 0.3 * R)), float(np.clip(cx, 0.3 * R, W - 0.3 * R))
        elif mode < 0.42:  # cut by the frame edge
            edge = int(rng.integers(4))
            off = rng.uniform(-0.3, 0.5) * R
            if edge == 0:
                cy, cx = off, rng.uniform(0, W)
            elif edge == 1:
                cy, cx = H - off, rng.uniform(0, W)
            elif edge == 2:
                cy, cx = rng.uniform(0, H), off
            else:
                cy, cx = rng.uniform(0, H), W - off
        else:
            for _ in range(20):
                cy = rng.uniform(min(0.6 * R, H / 2), max(H - 0.6 * R, H / 2))
                cx = rng.uniform(min(0.6 * R, W / 2), max(W - 0.6 * R, W / 2))
                if all((cy - o["cy"]) ** 2 + (cx - o["cx"]) ** 2 > (0.9 * (R + math.sqrt(o["a"] * o["b"]))) ** 2
                       for o in objs):
                    break
        speed = rng.uniform(0.0, 1.0) * max(s_lin, 0.5)
        ang = rng.uniform(0, 2 * math.pi)
        objs.append(dict(
            kind=kind, cy=cy, cx=cx, a=a, b=b, th=rng.uniform(0, math.pi),
            vy=speed * math.sin(ang), vx=speed * math.cos(ang),
            om=rng.uniform(-0.08, 0.08), grow=math.exp(rng.uniform(-0.04, 0.04)),
            h2=rng.uniform(0, 0.12), p2=rng.uniform(0, 2 * math.pi),
            h3=rng.uniform(0, 0.1), p3=rng.uniform(0, 2 * math.pi),
        ))
    depth = rng.permutation(len(objs))  # larger = nearer the camera
    for o, d in zip(objs, depth):
        o["depth"] = int(d)
    return objs


def _layout(rng: np.random.Generator, n: int, H: int, W: int, n_total: int, n_check: int):
    """Objects plus per-frame (hard, soft) masks; rejection-sampled until every
    counted object is visible (>= 3 patches, one connected piece, not mostly
    occluded) in each of the first n_check frames."""
    yy, xx = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    shrink = 1.0
    for attempt in range(400):
        if attempt and attempt % 60 == 0:
            shrink *= 0.8
        objs = _sample_objects(rng, n, H, W, shrink)
        order = sorted(range(len(objs)), key=lambda i: objs[i]["depth"])  # back to front
        renders = []
        ok = True
        for t in range(n_total):
            rend = [_render_object(o, t, yy, xx) for o in objs]
            owner = np.full((H, W), -1, dtype=np.int64)
            for i in order:
                owner[rend[i][0]] = i
            if t < n_check:
                for i, o in enumerate(objs):
                    if o["kind"] != "target":
                        continue
                    vis = owner == i
                    nv = int(vis.sum())
                    if nv < 3 or nv < 0.4 * rend[i][0].sum():
                        ok = False
                        break
                    if ndimage.label(vis)[1] != 1:
                        ok = False
                        break
                if not ok:
                    break
            renders.append((rend, owner))
        if ok:
            return objs, order, renders
    raise RuntimeError(f"could not place {n} objects on a {H}x{W} grid")


# ----------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------


def _scene_features(rng: np.random.Generator, rng_noise: np.random.Generator, n: int, H: int, W: int,
                    n_total: int, n_frames: int, noise: float):
    HW = H * W
    s_lin = math.sqrt(HW / _REF_HW)
    objs, order, renders = _layout(rng, n, H, W, n_total, n_frames)

    # ---- background -------------------------------------------------------
    d_app, d_sem, d_id = 24, 24, 24
    yy, xx = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    regions = []  # (soft weight [H,W], app base, sem base, ident)
    has_sky = rng.random() < 0.65
    wig = _smooth_field(rng, 1, 1, W, 4.0 * s_lin)[0, 0]
    if has_sky:
        y_h = H * rng.uniform(0.2, 0.45) + rng.uniform(-0.12, 0.12) * (xx[0] - W / 2) + 1.2 * s_lin * wig
        sky = 1.0 / (1.0 + np.exp(-(y_h[None, :] - yy) * 1.5))
    else:
        sky = np.zeros((H, W))
    ground = 1.0 - sky
    if rng.random() < 0.5:  # a second ground region (road / grass / water ...)
        x_s = W * rng.uniform(0.3, 0.7) + rng.uniform(-0.8, 0.8) * (yy - H / 2) + 2.0 * s_lin * _smooth_field(
            rng, 1, H, 1, 4.0 * s_lin)[0]
        part = 1.0 / (1.0 + np.exp(-(xx - x_s) * 1.2))
        parts = [ground * (1 - part), ground * part]
    else:
        parts = [ground]
    if has_sky:
        parts = [sky] + parts
    for wgt in parts:
        regions.append((wgt, 0.9 * _unit(rng, d_app), 0.5 * _unit(rng, d_sem), 0.6 * _unit(rng, d_id)))

    tex_lo = _smooth_field(rng, d_app, H, W, 4.0 * s_lin) / math.sqrt(d_app)
    tex_hi = _smooth_field(rng, d_app, H, W, 1.0 * s_lin) / math.sqrt(d_app)
    sem_tex = _smooth_field(rng, d_sem, H, W, 3.0 * s_lin) / math.sqrt(d_sem)
    bg_app = sum(w[None] * a[:, None, None] for w, a, _, _ in regions) + 0.35 * tex_lo + 0.25 * tex_hi
    bg_sem = sum(w[None] * s[:, None, None] for w, _, s, _ in regions) + 0.15 * sem_tex
    bg_id = sum(w[None] * i[:, None, None] for w, _, _, i in regions)

    class_sem = _unit(rng, d_sem)
    class_app = 0.9 * _unit(rng, d_app)
    # background spots that partly resemble the class (spurious bumps in the noun map)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        sg = rng.uniform(0.8, 1.8) * max(s_lin, 0.6)
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sg * sg))
        st = rng.uniform(0.2, 0.55)
        bg_sem = bg_sem + st * bump[None] * class_sem[:, None, None]
        bg_app = bg_app + 0.5 * st * bump[None] * class_app[:, None, None]
    alpha_bg = np.exp(0.35 * _smooth_field(rng, 1, H, W, 3.0 * s_lin)[0])
    hub = np.zeros((H, W))
    hub_idx = rng.choice(HW, size=int(rng.integers(3, 9)), replace=False)
    hub.flat[hub_idx] = rng.uniform(2.0, 4.0, size=hub_idx.size)

    # ---- objects --------------------------------------------------------------
    for o in objs:
        if o["kind"] == "target":
            o["sem"] = rng.uniform(0.4, 1.2) * (class_sem + 0.15 * _unit(rng, d_sem))
            o["app"] = class_app + 0.35 * _unit(rng, d_app)
        else:  # another class; sometimes a related one
            rel = rng.uniform(0.0, 0.4)
            o["sem"] = rng.uniform(0.6, 1.1) * (rel * class_sem + (1 - rel) * _unit(rng, d_sem))
            o["app"] = 0.9 * _unit(rng, d_app)
        o["ident"] = rng.uniform(0.8, 1.2) * _unit(rng, d_id)
        o["alpha"] = rng.uniform(0.6, 1.1)
        o["tex"] = 0.15 * _smooth_field(rng, d_app, H, W, 1.5 * s_lin) / math.sqrt(d_app)
    obj_vec = _unit(rng, 4)
    sem_sigma = rng.uniform(0.6, 1.3) * max(s_lin, 0.6)
    id_sigma = rng.uniform(0.3, 0.6) * max(s_lin, 0.6)

    X = np.zeros((n_total, HW, _D), dtype=np.float32)
    labels = []
    label_of = {}
    k = 0
    for i, o in enumerate(objs):
        if o["kind"] == "target":
            k += 1
            label_of[i] = k
    for t in range(n_total):
        rend, owner = renders[t]
        app = bg_app.copy()
        sem = bg_sem.copy()
        idf = bg_id.copy()
        objness = np.zeros((H, W))
        alpha = alpha_bg.copy()
        for i in order:  # back to front, soft edges
            o = objs[i]
            cov = rend[i][1]
            app = app * (1 - cov) + cov * (o["app"][:, None, None] + o["tex"])
            sem = sem * (1 - cov) + cov * o["sem"][:, None, None]
            idf = idf * (1 - cov) + cov * o["ident"][:, None, None]
            objness = objness * (1 - cov) + cov
            alpha = alpha * (1 - cov) + cov * o["alpha"]
        sem = ndimage.gaussian_filter(sem, sigma=(0, sem_sigma, sem_sigma), mode="nearest")
        idf = ndimage.gaussian_filter(idf, sigma=(0, id_sigma, id_sigma), mode="nearest")
        x = X[t]
        x[:, _SL["shared"].start] = alpha.ravel()
        x[:, _SL["pos"]] = _pos_embed(H, W, t)
        x[:, _SL["app"]] = app.reshape(d_app, HW).T
        x[:, _SL["sem"]] = sem.reshape(d_sem, HW).T
        x[:, _SL["ident"]] = idf.reshape(d_id, HW).T
        x[:, _SL["obj"]] = objness.ravel()[:, None] * obj_vec[None, :]
        x[:, _SL["hub"].start] = 1.0
        x[:, _SL["hub"].start + 1] = hub.ravel()
        lab = np.zeros((H, W), dtype=np.int32)
        for i, kk in label_of.items():
            lab[owner == i] = kk
        labels.append(lab)

    # token detail (not noise-dependent) and per-token feature noise
    det = _SL["detail"]
    X[:, :, det] = rng_noise.standard_normal((n_total, HW, det.stop - det.start), dtype=np.float32) / math.sqrt(
        det.stop - det.start)
    for name, amp in _FEAT_NOISE.items():
        sl = _SL[name]
        d = sl.stop - sl.start
        X[:, :, sl] += (noise * amp / math.sqrt(d)) * rng_noise.standard_normal((n_total, HW, d), dtype=np.float32)
    X[:, :, _SL["shared"].start] *= np.exp(0.2 * noise * rng_noise.standard_normal((n_total, HW))).astype(np.float32)
    return X, labels[:n_frames], class_sem, class_app, obj_vec, regions


def _text_features(rng: np.random.Generator, class_sem, class_app, obj_vec, regions):
    """Text token features [226, D] and the noun token indices."""
    T = TEXT_LEN
    Xt = np.zeros((T, _D), dtype=np.float32)
    sh, dsl = _SL["shared"].start, _SL["detail"]
    d_det = dsl.stop - dsl.start
    L = int(rng.integers(10, 41))  # prompt tokens including the end token
    n_noun = 1 if rng.random() < 0.6 else 2
    start = int(rng.integers(1, L - 1 - n_noun + 1))
    noun = list(range(start, start + n_noun))
    for j in range(1, L - 1):  # ordinary words
        Xt[j, _SL["sem"]] = _unit(rng, 24)
        Xt[j, _SL["app"]] = 0.3 * _unit(rng, 24)
        Xt[j, dsl] = 0.3 * _unit(rng, d_det)
        Xt[j, sh + 1] = rng.uniform(0.0, 0.2)
    # one or two scene words ("grass", "sky" ...) aligned with a background region
    for _ in range(int(rng.integers(1, 3))):
        j = int(rng.integers(1, L - 1))
        if j in noun:
            continue
        _, a, s, _ = regions[int(rng.integers(len(regions)))]
        Xt[j, _SL["sem"]] = s / np.linalg.norm(s) + 0.3 * _unit(rng, 24)
        Xt[j, _SL["app"]] = 0.4 * a
    for m, j in enumerate(noun):
        w = 1.0 if m == n_noun - 1 else 0.6  # a two-token noun: the last token is the stronger
        Xt[j, _SL["sem"]] = w * class_sem + 0.25 * _unit(rng, 24)
        Xt[j, _SL["app"]] = 0.35 * class_app
        Xt[j, _SL["obj"]] = 0.3 * obj_vec
        Xt[j, dsl] = 0.2 * _unit(rng, d_det)
        Xt[j, sh + 1] = 0.1
    Xt[0, sh + 2] = 1.0  # first token: sink
    Xt[0, _SL["sem"]] = 0.2 * _unit(rng, 24)
    Xt[0, dsl] = 0.2 * _unit(rng, d_det)
    Xt[L - 1, sh + 3] = 1.0  # end token
    Xt[L - 1, sh + 1] = 0.3
    Xt[L - 1, dsl] = 0.2 * _unit(rng, d_det)
    npad = T - L  # padding: near-identical sinks
    Xt[L:, sh + 1] = 1.0
    Xt[L:, dsl] = 0.05 * rng.standard_normal((npad, d_det)) / math.sqrt(d_det)
    Xt[L:, _SL["sem"]] = 0.03 * rng.standard_normal((npad, 24)) / math.sqrt(24)
    return Xt, noun


# ----------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------


def _draw_head(rng: np.random.Generator, htype: str) -> dict:
    spec = dict(_DEFAULTS)
    spec.update({k: v for k, v in _HEAD_SPECS[htype].items() if k != "g"})
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    p = dict(type=htype, tau=u(spec["tau"]), kappa=u(spec["kappa"]), rope=spec["rope"])
    Wq = np.zeros((_D, HEAD_DIM))
    Wk = np.zeros((_D, HEAD_DIM))
    g = _HEAD_SPECS[htype]["g"]
    axis = "h" if rng.random() < 0.5 else "w"
    p["axis"] = axis if spec["axial"] else None
    for name in _PROJ_COMPS:
        sl = _SL[name]
        d = sl.stop - sl.start
        R = rng.standard_normal((d, HEAD_DIM)) / math.sqrt(HEAD_DIM)
        rho = u(spec["rho_det"]) if name == "detail" else u(spec["rho"])
        Rk = rho * R + math.sqrt(max(1 - rho * rho, 0.0)) * rng.standard_normal((d, HEAD_DIM)) / math.sqrt(HEAD_DIM)
        gq = u(g.get(name, (0.0, 0.0)))
        gk = gq * u((0.8, 1.25))
        if name == "pos" and spec["axial"]:
            keep = np.zeros(d)
            a0, a1 = _POS_PARTS[axis]
            keep[a0:a1] = math.sqrt(3.0)  # the kept axis carries the whole gain
            R, Rk = R * keep[:, None], Rk * keep[:, None]
        Wq[sl] = gq * R
        Wk[sl] = gk * Rk
    # shared bias scalar -> sink direction a; text sink features map onto a
    sh = _SL["shared"].start
    a = rng.standard_normal(HEAD_DIM) / math.sqrt(8)
    if spec["rope"]:
        # RoPE heads reach the (unrotated) text sinks through slowly rotating pairs only
        a = a * _LOWFREQ_MASK * math.sqrt(HEAD_DIM / _LOWFREQ_MASK.sum())
    gsh = u(g["shared"])
    rho_sh = u(spec["rho_sh"])
    nb = rng.standard_normal(HEAD_DIM) / math.sqrt(8)
    Wq[sh] = gsh * a
    Wk[sh] = gsh * u(spec["gvk"]) * (rho_sh * a + math.sqrt(max(1 - rho_sh ** 2, 0.0)) * nb)
    Wk[sh + 1] = 3.0 * a
    Wk[sh + 2] = 3.0 * (0.8 * a + 0.6 * rng.standard_normal(HEAD_DIM) / math.sqrt(8))
    Wk[sh + 3] = 3.0 * (0.5 * a + 0.87 * rng.standard_normal(HEAD_DIM) / math.sqrt(8))
    # hub: constant query feature -> v, hub key feature -> v
    hb = _SL["hub"].start
    ghub = u(g.get("hub", (0.0, 0.0)))
    v = rng.standard_normal(HEAD_DIM) / math.sqrt(8)
    Wq[hb] = ghub * v
    Wk[hb + 1] = ghub * v * 0.5
    # carrier: the same constant vector in q and k of every video token; under
    # RoPE it turns into a relative-position (local) preference
    gc = u(g.get("carrier", (0.0, 0.0)))
    c = rng.standard_normal(HEAD_DIM) / math.sqrt(8)
    if spec["rope"]:
        # weight the rotary pairs around a mid frequency: a smooth local bump
        c = c * _carrier_weights(rng)
    Wq[hb] += gc * c
    Wk[hb] += gc * c
    p["Wq"], p["Wk"] = Wq, Wk
    p["gq"] = 1.0 + 0.15 * rng.standard_normal(HEAD_DIM)  # QK LayerNorm affine gains
    p["gk"] = 1.0 + 0.15 * rng.standard_normal(HEAD_DIM)
    return p


def _qk_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=1e-5) * gain


# ----------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------


def _make(n: int, grid: tuple[int, int], n_frames: int, noise: float, seed: int,
          head_types: tuple[str, ...] | None, shuffle_heads: bool):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= int(n) <= _MAX_N:
        raise ValueError(f"n must be an integer between 1 and {_MAX_N} objects, got {n!r}")
    n = int(n)
    H, W = int(grid[0]), int(grid[1])
    if H < 8 or W < 8:
        raise ValueError(f"grid must be at least 8x8 patches, got {grid!r}")
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames!r}")
    n_frames = int(n_frames)
    noise = float(noise)
    if not 0.0 <= noise <= 1.5:
        raise ValueError(f"noise must lie in [0, 1.5] (intended range 0.25 easy .. 1.0 hard), got {noise!r}")
    types = JOINT_HEAD_TYPES if head_types is None else tuple(head_types)
    if not types:
        raise ValueError("head_types must not be empty")
    bad = [t for t in types if t not in _HEAD_SPECS]
    if bad:
        raise ValueError(f"unknown head types {bad}; known: {JOINT_HEAD_TYPES}")

    seed = int(seed) % (2 ** 64)
    rng_layout = np.random.default_rng([seed, 101])
    rng_text = np.random.default_rng([seed, 202])
    rng_heads = np.random.default_rng([seed, 303])
    rng_noise = np.random.default_rng([seed, 404])
    gen = torch.Generator().manual_seed((seed * 1_000_003 + 505) % (2 ** 63))

    HW = H * W
    n_total = n_frames + 1  # one extra latent frame: the neighbour of the last frame
    X, labels, class_sem, class_app, obj_vec, regions = _scene_features(
        rng_layout, rng_noise, n, H, W, n_total, n_frames, noise)
    Xt, noun = _text_features(rng_text, class_sem, class_app, obj_vec, regions)

    if shuffle_heads:
        types = tuple(types[i] for i in rng_heads.permutation(len(types)))
    heads = [_draw_head(rng_heads, t) for t in types]
    nh = len(heads)

    Wq = torch.from_numpy(np.stack([h["Wq"] for h in heads], 1).reshape(_D, nh * HEAD_DIM)).float()
    Wk = torch.from_numpy(np.stack([h["Wk"] for h in heads], 1).reshape(_D, nh * HEAD_DIM)).float()
    gq = torch.from_numpy(np.stack([h["gq"] for h in heads])).float()  # [nh, 64]
    gk = torch.from_numpy(np.stack([h["gk"] for h in heads])).float()
    kappa = torch.tensor([h["kappa"] for h in heads], dtype=torch.float32)[:, None]
    tau = [h["tau"] for h in heads]

    def project(x: torch.Tensor, W_: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        y = (x @ W_).view(x.shape[0], nh, HEAD_DIM).transpose(0, 1)  # [nh, N, 64]
        rms = y.pow(2).mean(-1, keepdim=True).sqrt()
        eps = torch.randn(y.shape, generator=gen)
        y = y + (noise * kappa)[:, :, None] * rms * eps
        return _qk_norm(y, gain[:, None, :])

    Xv = torch.from_numpy(X).reshape(n_total * HW, _D)
    q_all = project(Xv[: n_frames * HW], Wq, gq).reshape(nh, n_frames, HW, HEAD_DIM)
    k_all = project(Xv, Wk, gk).reshape(nh, n_total, HW, HEAD_DIM)
    k_txt = project(torch.from_numpy(Xt), Wk, gk)  # [nh, T, 64], text tokens are not rotated
    rope_heads = [i for i, h in enumerate(heads) if h["rope"]]
    if rope_heads:
        tabs = [_rope_cos_sin(H, W, t) for t in range(n_total)]
        cos = torch.stack([c for c, _ in tabs])
        sin = torch.stack([s for _, s in tabs])
        for i in rope_heads:
            q_all[i] = _apply_rope(q_all[i], cos[:n_frames], sin[:n_frames])
            k_all[i] = _apply_rope(k_all[i], cos, sin)

    noun_idx = torch.tensor(noun)
    frames = []
    scale = 1.0 / math.sqrt(HEAD_DIM)
    text_mass = torch.empty((n_frames, nh, HW))
    cur_mass = torch.empty((n_frames, nh, HW))
    for f in range(n_frames):
        self_attn = torch.empty((nh, HW, HW), dtype=torch.float32)
        cross = torch.empty((nh, HW), dtype=torch.float32)
        for h in range(nh):
            q = q_all[h, f] * (tau[h] * scale)
            l_cur = q @ k_all[h, f].T
            lse_cur = torch.logsumexp(l_cur, -1)
            lse_nb = torch.logsumexp(q @ k_all[h, f + 1].T, -1)
            l_txt = q @ k_txt[h].T
            lse_txt = torch.logsumexp(l_txt, -1)
            lse_all = torch.logsumexp(torch.stack([lse_cur, lse_nb, lse_txt]), 0)
            self_attn[h] = torch.exp(l_cur - lse_cur[:, None])
            cross[h] = torch.exp(l_txt[:, noun_idx] - lse_all[:, None]).sum(-1)
            text_mass[f, h] = torch.exp(lse_txt - lse_all)
            cur_mass[f, h] = torch.exp(lse_cur - lse_all)
        frames.append(SyntheticFrame(self_attn=self_attn, cross_attn=cross, labels=labels[f]))
    scene = SyntheticScene(grid=(H, W), noise=noise, head_types=types, frames=frames)
    return scene, dict(heads=heads, noun=noun, text_mass=text_mass, cur_mass=cur_mass)


def make_joint_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5, seed: int = 0,
                     head_types: tuple[str, ...] | None = None, *, shuffle_heads: bool = True) -> SyntheticScene:
    """One synthetic clip of ``n`` objects of one counted noun, seen through
    the joint text+video attention of one CogVideoX-style block.

    n: 1..8 objects.  grid: (H, W) latent patch grid.  n_frames: latent
    frames returned.  noise: 0.25 (easy) .. 1.0 (hard).  seed: everything is
    deterministic given it.  head_types: the type of each head (names from
    JOINT_HEAD_TYPES, repeats allowed); None = JOINT_HEAD_TYPES.  The head
    order is shuffled per scene unless ``shuffle_heads=False``;
    ``scene.head_types`` is the order of the returned tensors' heads.
    """
    return _make(n, grid, n_frames, noise, seed, head_types, shuffle_heads)[0]
