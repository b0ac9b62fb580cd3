"""Synthetic Wan2.1-like attention scenes built from token features, q/k projections and 3D RoPE.

This generator is a held-out check for the instance-counting reader: it does not copy
hand-drawn attention maps, it builds them the way a video diffusion transformer computes them
(features -> per-head projections -> RMSNorm -> 3D rotary embedding -> scaled dot product ->
softmax), so every head carries the artefacts a real layer has: a shared positional preference
from the rotary embedding, a shared mean direction in the hidden states, attention sinks, noise.
Only the two dataclasses ``SyntheticFrame`` and ``SyntheticScene`` come from
``synthetic_scenes``.

Objects. A scene holds ``n`` irregular blobs of one category (the counted noun). A blob is a
star-shaped region around a sub-patch centre: an ellipse (random aspect and orientation) whose
radius is modulated by a few low angular harmonics, rasterised at patch centres and reduced to
its largest 4-connected piece. Blobs are placed by rejection sampling, largest first; about half
of them are proposed right next to an already placed blob (one or two patches of gap) so that
close neighbours are common. A placement is rejected when the blob leaves the grid or when its
patches touch another blob's 3x3 dilation, so two objects are always separated by at least one
background patch in the 8-neighbourhood. If the blobs do not fit, all radii shrink by 10 % and
the placement restarts. Across frames each blob drifts by a velocity of 0-0.8 patch per frame;
a move that would leave the grid or touch another blob is redrawn a few times and otherwise the
blob stays where it is (which is always valid), so the invariants hold in every frame.

Token features. Each patch token of a frame is a vector of width 256, a sum of parts that live
in orthogonal subspaces of a randomly rotated basis: a large shared mean direction that every
token carries (hidden states of real transformers share one); a category part that mixes a
"noun" direction and a "background" direction by the blob coverage of the patch; an instance
part, one random unit direction per object that stays the same in every frame; a texture part,
isotropic Gaussian noise redrawn per token and per frame whose scale grows with ``noise``; and a
large "massive activation" on one or two fixed sink tokens. The category and instance coverages
are Gaussian-blurred (sigma 0.6 patch) so boundary patches are mixtures of object and
background. A little isotropic jitter is added to everything.

Heads. Every head has random linear maps W_q, W_k (256 -> 128). They are assembled per
subspace: a gain per part decides how much of the head's q and k that part drives, and a
correlation per part decides whether W_k equals W_q on that subspace (then equal content
attracts: same instance, same category, same texture token) or is an independent map (then the
part only adds random logits). The type of a head picks the gains: ``instance`` is dominated by
the instance part (plus the shared mean, i.e. position); ``category`` by the category part;
``positional`` by the shared mean only, so its logits depend on relative position alone;
``texture`` by the per-token texture (each token prefers itself and random others); ``sink``
maps the shared mean of every query and the massive activation of the sink keys onto the same
direction, so every row puts most of its mass on those one or two keys; ``diffuse`` has a tiny
temperature (nearly uniform rows); ``mixed`` has a weak instance part on a strong category part.
q and k are RMS-normalised over the head dimension and multiplied by a per-dimension norm weight
and a per-head temperature (Wan applies a learned RMSNorm to q and k); positional heads weight
the fast-rotating spatial pairs of dimensions more, which sharpens their locality.

RoPE. As in Wan, the 128 dims of a head are split into a time part (44 dims) and height and
width parts (42 dims each); dims (2i, 2i+1) of a part are rotated as a complex pair by the angle
``pos * 10000 ** (-2i / d_part)``, with the frame index as the time position and the patch row
and column as the spatial positions. The logits are ``q . k / sqrt(128)`` and the softmax runs
over the frame's own H*W keys. Because the shared mean direction is present in every q and k,
the rotation turns it into a relative-position kernel: every head prefers nearby keys to some
degree, as real heads do.

Noise. ``noise`` (callers use 0.25, 0.5, 1.0) scales the texture part of the features (which
enters every head through its texture gain, and dilutes the content parts after RMSNorm) and
the standard deviation of i.i.d. Gaussian noise added to every logit. It is calibrated on the
instance head at 30x52 (scenes of 3-5 objects): the mean attention mass a foreground query
keeps inside its own object, over the mean of the largest mass it gives any other single
object, is about 50x (25x at worst) at 0.25, 12x (7x at worst) at 0.5 and 2.8x (2.1x at worst)
at 1.0, where single rows are visibly noisy but the object still stands out. At 15x26 the
numbers are about 32x, 8.6x and 2.3x.

Cross-attention. The prompt has 24 text tokens: 6-9 words (one of them the counted noun), an
end token and padding tokens that all share one key, as Wan pads its prompts. The patch queries
come from a blurred copy of the features (real cross-attention maps are blurry): the category
coverage is replaced by one smooth bump per object (blur sigma 0.9-1.4 patch, so bumps of close
objects can merge) plus two or three clutter bumps on the background that reach 30-60 % of the
object peak. Each head projects the queries with its own random map, the noun key is aligned
with the projected noun-minus-background category direction, and the other keys are random.
The noun logit is set per head so that a background patch gets about 3.5-7 % of the object peak
and the peak probability differs between heads (per-head amplitude); one head has a sharp spike
on a single unrelated background patch. The returned map is the noun token's column of the
softmax over the 24 tokens, per head.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["make_rope_scene", "ROPE_HEAD_TYPES"]

#: Default head layout: 12 heads of dim 128 (like Wan2.1-1.3B), exactly one "instance" head.
ROPE_HEAD_TYPES: tuple[str, ...] = (
    "instance",
    "category", "category",
    "positional", "positional", "positional",
    "texture", "texture",
    "sink",
    "diffuse",
    "mixed", "mixed",
)

D_MODEL = 256
HEAD_DIM = 128
THETA = 10000.0
N_TEXT = 24

# Orthogonal subspaces of the model space (sizes sum to D_MODEL).
_SUBSPACES = {"mean": 8, "cat": 32, "inst": 64, "sink": 4, "tex": 148}
_PARTS = tuple(_SUBSPACES)

# Feature amplitudes.
_A_MEAN = 2.0
_A_CAT = 1.0
_A_INST = 1.0
_A_SINK = 6.0
_A_JITTER = 0.05
_EDGE_SIGMA = 0.6


def _tex_amp(noise: float) -> float:
    """Amplitude of the per-token texture part of the features."""
    return 0.1 + 2.5 * noise


def _logit_noise(noise: float) -> float:
    """Std of the i.i.d. noise added to every self-attention logit."""
    return 0.3 * noise


# Per type: logit scale s (the logit of a key identical to the query), gains per part, q/k
# correlation per part, emphasis of the fast-rotating spatial dims (hf).
_SPECS: dict[str, dict] = {
    "instance": dict(s=9.0, hf=1.3,
                     g=dict(mean=0.5, cat=0.3, inst=1.5, sink=0.1, tex=1.25),
                     rho=dict(mean=1.0, cat=1.0, inst=1.0, sink=0.0, tex=0.1)),
    "category": dict(s=6.0, hf=1.3,
                     g=dict(mean=0.5, cat=1.5, inst=0.15, sink=0.1, tex=1.2),
                     rho=dict(mean=1.0, cat=1.0, inst=1.0, sink=0.0, tex=0.1)),
    "positional": dict(s=7.5, hf=3.0,
                       g=dict(mean=1.5, cat=0.1, inst=0.08, sink=0.05, tex=0.4),
                       rho=dict(mean=1.0, cat=1.0, inst=1.0, sink=0.0, tex=0.1)),
    "texture": dict(s=6.0, hf=1.0,
                    g=dict(mean=0.5, cat=0.2, inst=0.1, sink=0.1, tex=1.5),
                    rho=dict(mean=1.0, cat=1.0, inst=1.0, sink=0.0, tex=1.0)),
    "sink": dict(s=9.0, hf=1.0,
                 g=dict(mean=0.3, cat=0.2, inst=0.1, sink=0.3, tex=0.5),
                 rho=dict(mean=0.0, cat=1.0, inst=1.0, sink=0.0, tex=0.1)),
    "diffuse": dict(s=1.2, hf=1.0,
                    g=dict(mean=0.8, cat=0.8, inst=0.8, sink=0.1, tex=0.8),
                    rho=dict(mean=0.5, cat=0.5, inst=0.5, sink=0.0, tex=0.3)),
    "mixed": dict(s=6.0, hf=1.3,
                  g=dict(mean=0.5, cat=1.3, inst=0.6, sink=0.1, tex=1.2),
                  rho=dict(mean=1.0, cat=1.0, inst=1.0, sink=0.0, tex=0.1)),
}
_ALIASES = {"class": "category", "noisy": "texture", "position": "positional"}


def _canonical(t: str) -> str:
    k = _ALIASES.get(t, t)
    if k not in _SPECS:
        raise ValueError(f"unknown head type {t!r}; known: {sorted(_SPECS) + sorted(_ALIASES)}")
    return k


# ----------------------------------------------------------------------------------------------
# objects


class _Shape:
    """A star-shaped blob outline: mean radius, aspect, orientation, angular harmonics."""

    def __init__(self, rng: np.random.Generator, radius: float):
        self.r = float(radius)
        self.aspect = float(rng.uniform(0.75, 1.33))
        self.phi = float(rng.uniform(0, math.pi))
        self.ks = np.array([2, 3, 4])
        self.amps = rng.uniform(0.0, 0.1, size=3)
        self.phases = rng.uniform(0, 2 * math.pi, size=3)

    @property
    def extent(self) -> float:
        """Upper bound of the distance from the centre to the outline (patches)."""
        return self.r * (1 + self.amps.sum()) * math.sqrt(max(self.aspect, 1 / self.aspect))

    def raster(self, grid: tuple[int, int], centre: np.ndarray) -> np.ndarray | None:
        """Boolean mask [H, W] of the blob at ``centre`` (y, x), or None if it leaves the grid
        or is smaller than 3 patches."""
        H, W = grid
        e = int(math.ceil(self.extent)) + 1
        cy, cx = float(centre[0]), float(centre[1])
        y0, y1 = int(math.floor(cy)) - e, int(math.ceil(cy)) + e + 1
        x0, x1 = int(math.floor(cx)) - e, int(math.ceil(cx)) + e + 1
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        c, s = math.cos(self.phi), math.sin(self.phi)
        u = (dx * c + dy * s) / math.sqrt(self.aspect)
        v = (-dx * s + dy * c) * math.sqrt(self.aspect)
        rr = np.hypot(u, v)
        th = np.arctan2(v, u)
        bound = self.r * (1 + sum(a * np.cos(k * th - p)
                                  for a, k, p in zip(self.amps, self.ks, self.phases)))
        local = rr <= bound
        lab, n = ndimage.label(local)  # 4-connectivity
        if n == 0:
            return None
        sizes = ndimage.sum(local, lab, index=np.arange(1, n + 1))
        local = lab == (int(np.argmax(sizes)) + 1)
        if local.sum() < 3:
            return None
        ys, xs = np.nonzero(local)
        ys, xs = ys + y0, xs + x0
        if ys.min() < 0 or xs.min() < 0 or ys.max() >= H or xs.max() >= W:
            return None
        mask = np.zeros(grid, dtype=bool)
        mask[ys, xs] = True
        return mask


_EIGHT = np.ones((3, 3), dtype=bool)


def _forbidden(masks: list[np.ndarray], grid: tuple[int, int], skip: int = -1) -> np.ndarray:
    """Union of the 8-neighbourhood dilations of all masks but ``skip``."""
    out = np.zeros(grid, dtype=bool)
    for j, m in enumerate(masks):
        if j != skip and m is not None:
            out |= ndimage.binary_dilation(m, structure=_EIGHT)
    return out


def _place_objects(rng: np.random.Generator, grid: tuple[int, int], n: int,
                   radius: tuple[float, float]) -> tuple[list[_Shape], list[np.ndarray],
                                                         list[np.ndarray]]:
    """Rejection-sample ``n`` non-touching blobs; shrink and restart when they do not fit.

    Returns (shapes, centres [2] float, masks [H, W] bool), one entry per object.
    """
    H, W = grid
    scale = 1.0
    for _restart in range(60):
        shapes = [_Shape(rng, max(1.0, rng.uniform(*radius) * scale)) for _ in range(n)]
        shapes.sort(key=lambda s: -s.r)
        close = [i > 0 and (i == 1 or rng.random() < 0.5) for i in range(n)]
        centres: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        ok = True
        for i, sh in enumerate(shapes):
            forb = _forbidden(masks, grid)
            placed = False
            for attempt in range(400):
                if close[i] and attempt < 200:
                    j = int(rng.integers(i))
                    ang = rng.uniform(0, 2 * math.pi)
                    d = shapes[j].r + sh.r + rng.uniform(0.8, 2.6)
                    c = centres[j] + d * np.array([math.sin(ang), math.cos(ang)])
                else:
                    c = np.array([rng.uniform(0, H - 1), rng.uniform(0, W - 1)])
                m = sh.raster(grid, c)
                if m is None or (m & forb).any():
                    continue
                centres.append(c)
                masks.append(m)
                placed = True
                break
            if not placed:
                ok = False
                break
        if ok:
            return shapes, centres, masks
        scale *= 0.9
    raise RuntimeError(f"could not place {n} objects on a {grid} grid")


def _drift(rng: np.random.Generator, grid: tuple[int, int], shapes: list[_Shape],
           centres: list[np.ndarray], masks: list[np.ndarray],
           vel: list[np.ndarray]) -> None:
    """Move every blob one frame along its velocity, in place, keeping all invariants."""
    for i, sh in enumerate(shapes):
        forb = _forbidden(masks, grid, skip=i)
        for _attempt in range(8):
            c = centres[i] + vel[i]
            m = sh.raster(grid, c)
            if m is not None and not (m & forb).any():
                centres[i], masks[i] = c, m
                break
            ang = rng.uniform(0, 2 * math.pi)
            vel[i] = rng.uniform(0.0, 0.8) * np.array([math.sin(ang), math.cos(ang)])
        # else: stays put (its mask was valid against the others, which were checked against it)


# ----------------------------------------------------------------------------------------------
# RoPE


def _rope_angles(t: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [H*W, HEAD_DIM // 2] of Wan's 3D rotary embedding at frame ``t``."""
    H, W = grid
    d = HEAD_DIM
    d_t = d - 4 * (d // 6)
    d_s = 2 * (d // 6)

    def freqs(dim: int) -> np.ndarray:
        return THETA ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)

    yy, xx = np.mgrid[0:H, 0:W]
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    ang = np.concatenate([
        np.broadcast_to(t * freqs(d_t), (H * W, d_t // 2)),
        yy[:, None] * freqs(d_s)[None, :],
        xx[:, None] * freqs(d_s)[None, :],
    ], axis=1)
    return torch.from_numpy(np.cos(ang)).float(), torch.from_numpy(np.sin(ang)).float()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of the last dim. x [heads, HW, 128]; cos, sin [HW, 64]."""
    x = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.reshape(*out.shape[:-2], -1)


def _hf_mask() -> np.ndarray:
    """[HEAD_DIM] 1 on the spatial dims whose rotation is fast (> 0.04 rad / patch)."""
    d = HEAD_DIM
    d_t = d - 4 * (d // 6)
    d_s = 2 * (d // 6)
    f = THETA ** (-np.arange(0, d_s, 2) / d_s)
    pair = np.concatenate([np.zeros(d_t // 2), f > 0.04, f > 0.04]).astype(float)
    return np.repeat(pair, 2)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


# ----------------------------------------------------------------------------------------------
# the model


class _World:
    """Fixed random parts of a scene: basis, embeddings, heads, text keys."""

    def __init__(self, rng: np.random.Generator, n: int, types: list[str]):
        q, _ = np.linalg.qr(rng.standard_normal((D_MODEL, D_MODEL)))
        self.basis: dict[str, np.ndarray] = {}
        o = 0
        for part, dim in _SUBSPACES.items():
            self.basis[part] = q[:, o:o + dim]
            o += dim

        def unit(part: str, k: int = 1) -> np.ndarray:
            c = rng.standard_normal((k, _SUBSPACES[part]))
            c /= np.linalg.norm(c, axis=1, keepdims=True)
            return c  # coordinates in the subspace

        self.mean_c = unit("mean")[0]
        self.sink_c = unit("sink")[0]
        cat = unit("cat", 2)
        self.fg_c, self.bg_c = cat[0], cat[1]
        self.inst_c = unit("inst", n)
        B = self.basis
        self.mean = B["mean"] @ self.mean_c
        self.sink = B["sink"] @ self.sink_c
        self.fg, self.bg = B["cat"] @ self.fg_c, B["cat"] @ self.bg_c
        self.inst = self.inst_c @ B["inst"].T  # [n, D]

        hf = _hf_mask()
        d_t = HEAD_DIM - 4 * (HEAD_DIM // 6)
        wq, wk, nw = [], [], []
        for t in types:
            spec = _SPECS[t]
            Wq = np.zeros((D_MODEL, HEAD_DIM))
            Wk = np.zeros((D_MODEL, HEAD_DIM))
            for part in _PARTS:
                dim = _SUBSPACES[part]
                g, rho = spec["g"][part], spec["rho"][part]
                Rq = rng.standard_normal((dim, HEAD_DIM)) / math.sqrt(HEAD_DIM)
                Rk = rho * Rq + math.sqrt(1 - rho ** 2) * (
                    rng.standard_normal((dim, HEAD_DIM)) / math.sqrt(HEAD_DIM))
                Wq += g * B[part] @ Rq
                Wk += g * B[part] @ Rk
            if t == "sink":
                # every query's mean and the sink keys' massive activation map to one direction
                # in the time dims (constant within a frame, so no positional decay)
                u = np.zeros(HEAD_DIM)
                u[:d_t] = rng.standard_normal(d_t)
                u *= 1.4 / np.linalg.norm(u)
                Wq += B["mean"] @ np.outer(self.mean_c, u)
                Wk += B["sink"] @ np.outer(self.sink_c, u)
            w = (1 + (spec["hf"] - 1) * hf) * rng.uniform(0.85, 1.15, HEAD_DIM)
            # after RMSNorm, a key identical to the query gets the logit ~ spec["s"]
            w *= math.sqrt(spec["s"] / math.sqrt(HEAD_DIM)) / np.sqrt((w ** 2).mean())
            wq.append(Wq)
            wk.append(Wk)
            nw.append(w)
        self.Wq = torch.from_numpy(np.concatenate(wq, axis=1)).float()  # [D, heads*128]
        self.Wk = torch.from_numpy(np.concatenate(wk, axis=1)).float()
        self.norm_w = torch.from_numpy(np.stack(nw)).float()  # [heads, 128]

        # cross-attention: per head a query map, the noun key direction, the other text keys
        nh = len(types)
        self.Wc = torch.from_numpy(
            rng.standard_normal((nh, D_MODEL, HEAD_DIM)) / math.sqrt(HEAD_DIM)).float()
        n_words = int(rng.integers(6, 10))
        self.noun_pos = int(rng.integers(1, n_words))
        keys = rng.standard_normal((nh, N_TEXT, HEAD_DIM)) * rng.uniform(0.6, 1.4, (nh, N_TEXT, 1))
        keys[:, n_words + 1:] = keys[:, n_words + 1:n_words + 2]  # padding shares one key
        self.text_keys = torch.from_numpy(keys).float()  # [heads, 24, 128] (noun row unused)
        self.amp = rng.uniform(0.08, 0.45, nh)  # peak noun probability per head
        self.floor = rng.uniform(0.035, 0.07, nh)  # background / peak per head
        self.spike_head = int(rng.integers(nh))
        self.spike_gain = float(rng.uniform(1.5, 3.0))


def _blur(m: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(m.astype(np.float64), sigma, mode="constant")


def _self_attention(world: _World, x: torch.Tensor, t: int, grid: tuple[int, int],
                    noise: float, gen: torch.Generator) -> torch.Tensor:
    """x [HW, D] -> softmax attention [heads, HW, HW]."""
    nh = world.norm_w.shape[0]
    HW = x.shape[0]
    q = (x @ world.Wq).reshape(HW, nh, HEAD_DIM).transpose(0, 1)  # [heads, HW, 128]
    k = (x @ world.Wk).reshape(HW, nh, HEAD_DIM).transpose(0, 1)
    q = _rms(q) * world.norm_w[:, None, :]
    k = _rms(k) * world.norm_w[:, None, :]
    cos, sin = _rope_angles(t, grid)
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    # logits = q.k / sqrt(128) + i.i.d. Gaussian logit noise (one fused op)
    noise_std = _logit_noise(noise)
    base = torch.empty(nh, HW, HW)
    if noise_std > 0:
        base.normal_(0.0, noise_std, generator=gen)
    else:
        base.zero_()
    logits = torch.baddbmm(base, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(HEAD_DIM))
    del base
    # softmax over the keys, in place (the tensor is large)
    logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))


def _cross_attention(world: _World, rng: np.random.Generator, grid: tuple[int, int],
                     masks: list[np.ndarray], clutter: list[tuple[np.ndarray, float, float]],
                     bump_sigma: np.ndarray, bump_amp: np.ndarray, spike: int,
                     noise: float) -> torch.Tensor:
    """Noun-token column of the text cross-attention softmax, [heads, HW]."""
    H, W = grid
    HW = H * W
    # blurry category coverage: one normalised bump per object + clutter bumps on background
    f = np.zeros(grid)
    for m, s, a in zip(masks, bump_sigma, bump_amp):
        b = _blur(m, s)
        f += a * b / b.max()
    yy, xx = np.mgrid[0:H, 0:W]
    for c, s, a in clutter:
        f += a * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * s * s))
    f = np.clip(f, 0, 1.2).reshape(-1, 1)
    tex = rng.standard_normal((H, W, D_MODEL))
    tex = ndimage.gaussian_filter(tex, (1.0, 1.0, 0), mode="nearest").reshape(HW, D_MODEL)
    tex *= 0.5 * _tex_amp(noise) / np.sqrt((tex ** 2).sum(1).mean())
    xc = _A_MEAN * world.mean + _A_CAT * (f * world.fg + (1 - f) * world.bg) + tex
    ref = np.stack([_A_MEAN * world.mean + _A_CAT * world.bg,
                    _A_MEAN * world.mean + _A_CAT * world.fg])
    xc = torch.from_numpy(np.concatenate([xc, ref])).float()  # [HW + 2, D]

    out = torch.empty(len(world.amp), HW)
    for h in range(len(world.amp)):
        q = _rms(xc @ world.Wc[h])  # [HW+2, 128]
        kdir = q[-1] - q[-2]
        kdir = kdir / kdir.norm()
        proj = q @ kdir
        u = (proj[:HW] - proj[-2]) / (proj[-1] - proj[-2])  # ~0 background, ~1 object peak
        other = q[:HW] @ world.text_keys[h].T / math.sqrt(HEAD_DIM)  # [HW, 24]
        other[:, world.noun_pos] = -torch.inf
        z = torch.logsumexp(other, dim=1).median()
        A, r = float(world.amp[h]), float(world.floor[h])
        l_pk = math.log(A / (1 - A)) + float(z)
        l_fl = math.log(r * A / (1 - r * A)) + float(z)
        ln = l_fl + u * (l_pk - l_fl)
        ln = ln + 0.15 * noise * torch.from_numpy(rng.standard_normal(HW)).float()
        if h == world.spike_head:
            p = min(0.9, world.spike_gain * A)
            ln[spike] = math.log(p / (1 - p)) + float(torch.logsumexp(other[spike], 0))
        logits = other.clone()
        logits[:, world.noun_pos] = ln
        out[h] = torch.softmax(logits, dim=1)[:, world.noun_pos]
    return out


def _spread_picks(rng: np.random.Generator, cand: np.ndarray, W: int, k: int) -> np.ndarray:
    """``k`` flat patch indices from ``cand``, greedily kept at least 5 (then 3, then 0) patches
    apart from each other."""
    order = rng.permutation(cand)
    for min_d in (5.0, 3.0, 0.0):
        picked: list[int] = []
        for p in order:
            y, x = divmod(int(p), W)
            if all(math.hypot(y - q // W, x - q % W) >= min_d for q in picked):
                picked.append(int(p))
                if len(picked) == k:
                    return np.array(picked)
    return np.resize(order, k)


def _default_radius(grid: tuple[int, int]) -> tuple[float, float]:
    s = grid[0] / 30.0
    lo = max(1.2, 2.0 * s)
    return lo, max(lo, 4.0 * s)


def make_rope_scene(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
                    noise: float = 0.5, seed: int = 0, head_types: tuple[str, ...] | None = None,
                    radius: tuple[float, float] | None = None,
                    shuffle_heads: bool = True) -> SyntheticScene:
    """A synthetic scene of ``n_instances`` objects of one category, Wan2.1-style attention.

    Args:
        n_instances: number of objects (1..8 at 30x52 and 15x26).
        grid: (H, W) latent patch grid of one frame.
        n_frames: number of frames; objects drift 0-0.8 patch per frame.
        noise: texture / logit noise level (0.25 clear, 0.5 moderate, 1.0 hard).
        seed: everything is deterministic from it.
        head_types: one type per head ("instance", "category", "positional", "texture",
            "sink", "diffuse", "mixed"; aliases "class", "noisy"); None: ``ROPE_HEAD_TYPES``
            (12 heads, one "instance").
        shuffle_heads: shuffle the head order with the seed (the truth is in the returned
            ``head_types``); False keeps the order given.
        radius: (min, max) object radius in patches; default (2, 4) at H=30, scaled by H/30,
            never below 1.2.

    Returns:
        ``SyntheticScene(grid, noise, head_types, frames)``; per frame ``self_attn`` float32
        [heads, H*W, H*W] (row-softmax over the frame's keys, row-major y*W+x),
        ``cross_attn`` float32 [heads, H*W] (noun column of the text softmax) and ``labels``
        int32 [H, W] (0 background, 1..n objects).
    """
    if n_instances < 0:
        raise ValueError(f"n_instances={n_instances}: expected 0 (a scene without the noun's "
                         "objects) or more")
    grid = (int(grid[0]), int(grid[1]))
    H, W = grid
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    names = list(ROPE_HEAD_TYPES if head_types is None else head_types)
    if shuffle_heads:
        names = [names[i] for i in rng.permutation(len(names))]
    types = [_canonical(t) for t in names]
    if radius is None:
        radius = _default_radius(grid)
    radius = (max(1.0, float(radius[0])), max(1.0, float(radius[0]), float(radius[1])))

    shapes, centres, masks = _place_objects(rng, grid, n_instances, radius)
    order = rng.permutation(n_instances)  # label ids not tied to placement order
    shapes = [shapes[i] for i in order]
    centres = [centres[i] for i in order]
    masks = [masks[i] for i in order]
    vel = []
    for _ in range(n_instances):
        ang = rng.uniform(0, 2 * math.pi)
        vel.append(rng.uniform(0.0, 0.8) * np.array([math.sin(ang), math.cos(ang)]))

    world = _World(rng, n_instances, types)

    # fixed background spots: sinks, clutter bumps, the spike patch (chosen on frame 0)
    dist = ndimage.distance_transform_edt(~np.any(masks, axis=0))
    far = np.flatnonzero(dist.reshape(-1) >= 4)
    if far.size < 8:
        far = np.flatnonzero(dist.reshape(-1) >= 2)
    if far.size < 8:
        far = np.arange(H * W)
    picks = _spread_picks(rng, far, W, 7)
    sinks = picks[:int(rng.integers(1, 3))]
    n_clutter = int(rng.integers(2, 4))
    clutter = []
    for p in picks[2:2 + n_clutter]:
        c = rng.uniform(0.3, 0.6)  # target fraction of the object peak
        clutter.append((np.array(divmod(int(p), W), dtype=float), float(rng.uniform(0.8, 1.5)),
                        1 + math.log(c) / 3.0))
    spike = int(picks[-1])
    bump_sigma = rng.uniform(0.9, 1.4, n_instances)
    bump_amp = rng.uniform(0.85, 1.0, n_instances)

    frames = []
    a_tex = _tex_amp(noise)
    for t in range(n_frames):
        if t > 0:
            _drift(rng, grid, shapes, centres, masks, vel)
        labels = np.zeros(grid, dtype=np.int32)
        for i, m in enumerate(masks):
            labels[m] = i + 1
        cov = np.stack([_blur(m, _EDGE_SIGMA) for m in masks] or [np.zeros(grid)])
        cov = cov.reshape(len(cov), -1).T[:, :n_instances]  # [HW, n]
        f = np.clip(cov.sum(1, keepdims=True), 0, 1)  # [HW, 1]
        z = rng.standard_normal((H * W, _SUBSPACES["tex"])) / math.sqrt(_SUBSPACES["tex"])
        x = (_A_MEAN * world.mean
             + _A_CAT * (f * world.fg + (1 - f) * world.bg)
             + _A_INST * cov @ world.inst
             + a_tex * z @ world.basis["tex"].T
             + _A_JITTER * rng.standard_normal((H * W, D_MODEL)) / math.sqrt(D_MODEL))
        x[sinks] += _A_SINK * world.sink
        x = torch.from_numpy(x).float()
        self_attn = _self_attention(world, x, t, grid, noise, gen)
        cross = _cross_attention(world, rng, grid, masks, clutter, bump_sigma, bump_amp,
                                 spike, noise)
        frames.append(SyntheticFrame(self_attn=self_attn.contiguous(),
                                     cross_attn=cross.contiguous(), labels=labels))
    return SyntheticScene(grid=grid, noise=float(noise), head_types=tuple(names), frames=frames)
