"""Synthetic *video* attention scenes: per-frame views of a 3D (space-time) attention.

What this family simulates, and why
-----------------------------------
The attention a text-to-video diffusion transformer such as Wan2.1 computes at a middle
denoising step, for a prompt "N <noun>". The latent video has ``T`` frames of ``H x W`` patch
tokens; every block runs full 3D self-attention over all ``T*H*W`` tokens (12 heads of dim 128,
rotary positions on the frame, row and column axes) and cross-attention from every patch to
512 text keys, of which the prompt's 25 are real and the rest are identical zero-padding keys.
The simpler synthetic families paint per-frame maps directly; this one builds the maps from
token features through per-head query/key projections and a softmax, so that the following
properties, which the counting method meets in a real model, come out of the mechanism:

1. **Per-frame self-attention is a block of a 3D attention.** For every head, the queries of
   frame ``t`` attend over the keys of all ``T`` frames (one softmax over ``T*HW`` keys); the
   frame's map is the in-frame block ``[HW, HW]`` renormalised so each row sums to 1 (what an
   adapter hands the counter). Heads differ in how much mass leaves the frame: the *temporal*
   head sends almost all of it to neighbouring frames and its renormalised in-frame block is
   weak and noisy; the others keep most of it in the frame. (The renormalised block equals a
   softmax over the in-frame logits alone, the out-of-frame keys cancel; the 3D softmax is
   still computed, which also gives the out-of-frame mass of each head.)
2. **Camera motion.** A global pan (0.5-2 patches per frame at grids of 15 patches or more per
   side, any direction) and a mild zoom (up to 15 % scale change over the clip) move objects and
   background texture alike; each object also drifts a little on its own (at most ~1.5
   patches over the clip).
3. **Objects entering or leaving.** In about a third of the scenes (with ``T >= 2``) one object
   crosses the frame border, so frame counts differ by one; objects can be cut by the border. An
   object counts in a frame when at least ``max(2, 0.3 * its area)`` of its patches are in view;
   a thinner sliver is not drawn at all, so labels and attention agree. Every frame shows at
   least one object and the middle frame ``(T - 1) // 2`` shows exactly ``n``.
4. **Scale mixture.** Object areas are log-uniform between 3 patches and ~80 patches at 30x52
   (scaled with the grid area, at least 10), larger lower in the frame (perspective). Objects
   never overlap and keep at least one background patch between them, except in about one scene
   in four where one pair touches.
5. **Heads.** Token features (per-object identity, a category code shared by the objects, the
   object's salient part, object boundaries, background material and fine texture, a few sink
   tokens) are projected per head; positions enter through a 2D rotary embedding on the row and
   column axes and a rotary embedding on the frame index; a little random cross-talk between
   features (superposition) and independent Gaussian noise on queries and keys (std
   proportional to ``noise``: 0.25 mild, 0.5 moderate, 1.0 hard) are added, then a softmax with
   a per-head temperature. The head types (exactly one ``instance``):

   - ``instance``: a patch attends to its own object (identity code, drifting slightly over
     frames), plus a weak local bump: the head that separates the objects.
   - ``temporal``: the frame-index rotary makes it attend to the neighbouring frames; what
     stays in the frame is a weak positional/identity signal buried in noise.
   - ``category``: every object patch attends to all objects of the noun alike (and a little
     to noun-like clutter); background attends to background.
   - ``positional``: a smooth local bump around the query (2D rotary, 1.5-2.5 patches wide).
   - ``texture``: background patches attend to the same background material and fine texture.
   - ``sink``: 2-4 fixed tokens take a large share of every row.
   - ``diffuse``: nearly uniform, weak broad structure.
   - ``row``: attends to the query's own row (horizontal stripes).
   - ``column``: attends to the query's own column (vertical stripes).
   - ``mixed``: a weaker instance term plus a category term plus a local bump.
   - ``edge``: every query attends to object boundaries (broadly, favouring nearby ones).
   - ``part``: every query attends to the salient parts of all objects (one small spot each).
6. **Cross-attention.** The noun is two sub-word tokens: the first peaks on each object's
   salient part, the second spreads over the whole object. Per head, each patch's logits over
   the 512 text keys (2 noun tokens, 23 other real tokens with smooth random maps, 487 equal
   padding keys) go through a softmax; the frame's map is the sum of the two noun columns.
   Object strengths are 0.4-1.0 of the strongest, blurred by 0.5-1.5 patches, background at
   3-8 % of the strongest, 1-3 clutter bumps at 0.2-0.5; the map lags the motion (it mixes in
   10-30 % of the previous frame's evidence); heads differ in sharpness and scale.
7. Every map is rounded to bfloat16 and back (Wan computes in bf16); self-attention rows are
   renormalised to sum to 1 afterwards.

Everything is seeded: ``make_video_scene(..., seed=s)`` is reproducible. The geometry, the
heads, the cross-attention and the noise use separate random streams, so the same seed at
another ``noise`` gives the same objects and heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from synthetic_scenes import SyntheticFrame, SyntheticScene

__all__ = ["FAMILY_HEAD_TYPES", "make_video_scene"]

FAMILY_HEAD_TYPES: tuple[str, ...] = (
    "instance", "temporal", "category", "positional", "texture", "sink",
    "diffuse", "row", "column", "mixed", "edge", "part",
)

# ---------------------------------------------------------------------------------------------
# head-dim layout (128 dims per head, like Wan2.1): content blocks, rotary blocks, free dims
# ---------------------------------------------------------------------------------------------
_D_HEAD = 128
_SL = {
    "id": slice(0, 16), "cat": slice(16, 24), "part": slice(24, 32), "edge": slice(32, 40),
    "tex": slice(40, 56), "sink": slice(56, 60),  # content features (60 dims)
    "posy": slice(60, 76), "posx": slice(76, 92),  # 2D rotary: 8 frequency pairs per axis
    "time": slice(92, 100),  # rotary on the frame index: 4 pairs
}  # dims 100..127 carry only cross-talk and noise
_N_CONTENT = 60
_POS_FREQ = np.pi * (1.0 / 40.0) ** (np.arange(8) / 7.0)  # periods 2 .. 80 patches
_TIME_FREQ = np.array([np.pi, np.pi / 2, np.pi / 4, np.pi / 8])
_N_TEXT = 512  # text keys: prompt tokens + zero padding
_N_REAL_TEXT = 25
_NOISE_STD = 0.34  # std of the q/k noise per dim at noise = 1
_LEAK = 0.4  # feature cross-talk in the projections

# Logit amplitudes (nats) per head type. ``pos``/``posy``/``posx``: (peak, width in patches) of
# the rotary bump; ``time``: amplitudes of the four frame-index rotary pairs (``stay`` heads keep
# most mass in the frame, the temporal head prefers the neighbouring frames).
_STAY = (1.0, 1.0, 0.0, 0.0)  # f(0)=2, f(+-1)=-1, f(+-2)=0 (times the head's stay amplitude)
_HEAD_RECIPES: dict[str, dict] = {
    "instance": dict(id=5.5, cat=0.8, tex=2.0, pos=(2.5, 2.5), stay=1.2),
    "temporal": dict(id=0.6, tex=0.4, pos=(0.8, 2.0), time=(-2.6, 1.3, 0.0, 0.4)),
    "category": dict(cat=4.5, id=0.3, tex=1.5, part=0.5, pos=(0.8, 6.0), stay=1.0),
    "positional": dict(pos=(4.5, 2.0), tex=0.3, stay=1.0),
    "texture": dict(tex=4.5, cat=0.5, pos=(1.0, 5.0), stay=1.0),
    "sink": dict(sink=7.5, cat=0.8, pos=(1.0, 4.0), stay=0.8),
    "diffuse": dict(pos=(0.6, 8.0), cat=0.3, tex=0.3, stay=0.5),
    "row": dict(posy=(5.0, 0.8), tex=0.3, stay=1.0),
    "column": dict(posx=(5.0, 0.8), tex=0.3, stay=1.0),
    "mixed": dict(id=1.8, cat=2.0, tex=1.0, pos=(2.0, 3.0), stay=1.0),
    "edge": dict(edge=5.0, cat=0.5, pos=(0.8, 6.0), stay=1.0),
    "part": dict(part=5.0, cat=0.8, pos=(1.0, 6.0), stay=1.0),
}
assert set(_HEAD_RECIPES) == set(FAMILY_HEAD_TYPES)
assert FAMILY_HEAD_TYPES.count("instance") == 1


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _validate(n, grid, n_frames, noise, seed,
              head_types) -> tuple[tuple[int, int], tuple[str, ...]]:
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    try:
        H, W = grid
    except (TypeError, ValueError):
        raise ValueError(f"grid must be (H, W), got {grid!r}") from None
    if not (_is_int(H) and _is_int(W)) or H < 8 or W < 8:
        raise ValueError(f"grid must be two ints each >= 8, got {grid!r}")
    if not _is_int(n_frames) or n_frames < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(noise)) or float(noise) < 0:
        raise ValueError(f"noise must be a finite float >= 0, got {noise!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if head_types is None:
        types = FAMILY_HEAD_TYPES
    else:
        if isinstance(head_types, str):
            raise ValueError(f"head_types must be a sequence of names, "
                             f"got the string {head_types!r}")
        types = tuple(head_types)
        if not types:
            raise ValueError(f"head_types must name at least one head, got {head_types!r}")
        for t in types:
            if t not in _HEAD_RECIPES:
                raise ValueError(f"unknown head type {t!r}; known: {FAMILY_HEAD_TYPES}")
    return (int(H), int(W)), types


# ---------------------------------------------------------------------------------------------
# geometry: camera, objects, layout
# ---------------------------------------------------------------------------------------------
@dataclass
class _Camera:
    """Maps world coordinates (the middle frame's patch coordinates, (y, x)) to frame ``t``:
    ``p = c + s_t * (w - c) + pan * (t - t_mid)``, ``s_t = exp(zoom * (t - t_mid) / (T - 1))``."""
    centre: np.ndarray  # [2]
    pan: np.ndarray  # [2] patches per frame
    zoom: float  # log scale change over the clip
    t_mid: int
    T: int

    def scale(self, t: int) -> float:
        return math.exp(self.zoom * (t - self.t_mid) / max(self.T - 1, 1))

    def to_image(self, w: np.ndarray, t: int) -> np.ndarray:
        return self.centre + self.scale(t) * (w - self.centre) + self.pan * (t - self.t_mid)

    def to_world(self, p: np.ndarray, t: int) -> np.ndarray:
        return self.centre + (p - self.centre - self.pan * (t - self.t_mid)) / self.scale(t)


@dataclass
class _Obj:
    idx: int  # persistent index (identity across frames)
    area: float  # target area in patches at scale 1
    R: float  # mean radius, area ~ pi R^2
    aspect: float  # ellipse: semi-axes R*aspect, R/aspect
    angle: float
    harm: np.ndarray  # [2, 2]: amplitude and phase of the 2nd and 3rd radial harmonics
    part_dir: float  # direction of the salient part from the centre
    crossing: bool = False
    centre: np.ndarray = field(default_factory=lambda: np.zeros(2))  # world, middle frame
    vel: np.ndarray = field(default_factory=lambda: np.zeros(2))  # own motion, patches/frame
    path: np.ndarray | None = None  # [T, 2] image centres (the crossing object)
    strength: float = 1.0
    blur: float = 1.0

    def image_centre(self, cam: _Camera, t: int) -> np.ndarray:
        if self.path is not None:
            return self.path[t]
        return cam.to_image(self.centre + self.vel * (t - cam.t_mid), t)

    def rho(self, pts: np.ndarray, ctr: np.ndarray, s: float) -> np.ndarray:
        """Normalised radius of points ``pts [N, 2]`` for the shape centred at ``ctr`` at scale
        ``s``: < 1 inside, 1 on the outline."""
        d = (pts - ctr) / s
        c, sn = math.cos(self.angle), math.sin(self.angle)
        u = (d[:, 0] * c + d[:, 1] * sn) / self.aspect
        v = (-d[:, 0] * sn + d[:, 1] * c) * self.aspect
        r = np.hypot(u, v)
        th = np.arctan2(u, v)
        rad = self.R * (1.0 + self.harm[0, 0] * np.cos(2 * th + self.harm[0, 1])
                        + self.harm[1, 0] * np.cos(3 * th + self.harm[1, 1]))
        return r / rad

    def radius_towards(self, direction: np.ndarray) -> float:
        """Outline radius along a unit ``direction`` (y, x) at scale 1."""
        return 1.0 / float(self.rho(direction[None, :], np.zeros(2), 1.0)[0])


@dataclass
class _Layout:
    cam: _Camera
    objs: list  # [_Obj]
    masks: np.ndarray  # [n_obj, T, H, W] bool, rendered (disjoint)
    rho: np.ndarray  # [n_obj, T, H*W] float
    present: np.ndarray  # [n_obj, T] bool
    crossing: bool
    touching: bool
    clutter: list  # [(world centre [2], amplitude, sigma)]


def _dilate(m: np.ndarray, diag: bool = True) -> np.ndarray:
    """Binary dilation over the last two axes (3x3 if ``diag`` else the 4-neighbourhood)."""
    out = m.copy()
    out[..., 1:, :] |= m[..., :-1, :]
    out[..., :-1, :] |= m[..., 1:, :]
    out[..., :, 1:] |= m[..., :, :-1]
    out[..., :, :-1] |= m[..., :, 1:]
    if diag:
        out[..., 1:, 1:] |= m[..., :-1, :-1]
        out[..., 1:, :-1] |= m[..., :-1, 1:]
        out[..., :-1, 1:] |= m[..., 1:, :-1]
        out[..., :-1, :-1] |= m[..., 1:, 1:]
    return out


class _Geometry:
    """Rasterisation helpers for one grid and camera."""

    def __init__(self, grid: tuple[int, int], cam: _Camera):
        self.H, self.W = grid
        self.cam = cam
        yy, xx = np.mgrid[0:self.H, 0:self.W]
        self.pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)  # [HW, 2]

    def rho_all(self, obj: _Obj) -> np.ndarray:
        """[T, HW] normalised radius of ``obj`` in every frame."""
        return np.stack([obj.rho(self.pts, obj.image_centre(self.cam, t), self.cam.scale(t))
                         for t in range(self.cam.T)])

    def min_visible(self, obj: _Obj, t: int, frac: float) -> float:
        return max(2.0, frac * math.pi * obj.R ** 2 * self.cam.scale(t) ** 2)

    def presence(self, obj: _Obj, inside: np.ndarray, frac: float) -> np.ndarray:
        vis = inside.sum(1)
        return np.array([vis[t] >= self.min_visible(obj, t, frac) for t in range(self.cam.T)])


_PRESENT_FRAC = 0.3  # a crossing object counts when this share of its area is in view
_KEEP_FRAC = 0.6  # other objects keep at least this share in view in every frame


def _new_object(rng: np.random.Generator, idx: int, area: float) -> _Obj:
    return _Obj(idx=idx, area=area, R=math.sqrt(area / math.pi),
                aspect=float(math.sqrt(rng.uniform(0.6, 1.0) if rng.random() < 0.5
                                       else 1.0 / rng.uniform(0.6, 1.0))),
                angle=float(rng.uniform(0, math.pi)),
                harm=np.array([[rng.uniform(0, 0.15), rng.uniform(0, 2 * math.pi)],
                               [rng.uniform(0, 0.12), rng.uniform(0, 2 * math.pi)]]),
                part_dir=float(-math.pi / 2 + rng.normal(0, 0.5)))


def _place_crossing(rng, geo: _Geometry, obj: _Obj, in_mid: bool, gs: float,
                    tries: int = 200):
    """An image-space straight path across one border such that the object is in view at the
    middle frame iff ``in_mid`` and out of view in at least one frame. Returns (rho, present)
    or None."""
    H, W, cam = geo.H, geo.W, geo.cam
    T, t_mid = cam.T, cam.t_mid
    for _ in range(tries):
        side = int(rng.integers(4))
        w = rng.uniform(0.8, 2.0) * gs + 0.5 * obj.R
        entering = rng.random() < 0.5
        t0 = rng.uniform(-0.5, T - 0.5)
        drift = rng.normal(0, 0.3 * gs)
        length = W if side < 2 else H
        along0 = rng.uniform(0.15, 0.85) * (length - 1)
        path = np.zeros((T, 2))
        for t in range(T):
            d = w * (t - t0) * (1 if entering else -1)  # depth of the centre inside the border
            a = along0 + drift * (t - t_mid)
            if side == 0:
                path[t] = (-0.5 + d, a)
            elif side == 1:
                path[t] = (H - 0.5 - d, a)
            elif side == 2:
                path[t] = (a, -0.5 + d)
            else:
                path[t] = (a, W - 0.5 - d)
        obj.path = path
        rho = geo.rho_all(obj)
        present = geo.presence(obj, rho <= 1, _PRESENT_FRAC)
        if present[t_mid] != in_mid or present.all() or not present.any():
            continue
        # stay clear of the opposite border while in view
        depth_ok = True
        for t in np.nonzero(present)[0]:
            d = w * (t - t0) * (1 if entering else -1)
            if d > (H if side < 2 else W) - 1.5 - obj.R:
                depth_ok = False
        if depth_ok:
            return rho, present
    obj.path = None
    return None


def _place_free(rng, geo: _Geometry, obj: _Obj, occ: np.ndarray, depth: float, gs: float,
                T: int, tries: int = 150):
    """A world position and own motion keeping ``obj`` in view in every frame, clear of the
    occupied (already dilated) patches ``occ [T, HW]``. Returns rho [T, HW] or None."""
    H, W = geo.H, geo.W
    for _ in range(tries):
        y = float(np.clip(0.1 * H + 0.8 * depth * (H - 1) + rng.normal(0, 0.15 * H), 0, H - 1))
        x = float(rng.uniform(0, W - 1))
        vel = rng.normal(0, 0.25 * gs, 2)
        sp = float(np.linalg.norm(vel)) * max(T - 1, 1)
        if sp > 1.5 * gs:
            vel *= 1.5 * gs / sp
        obj.centre, obj.vel = np.array([y, x]), vel
        rho = geo.rho_all(obj)
        inside = rho <= 1
        if not geo.presence(obj, inside, _KEEP_FRAC).all():
            continue
        if (inside & occ).any():
            continue
        return rho
    return None


def _place_touching(rng, geo: _Geometry, anchor: _Obj, rho_a: np.ndarray, obj: _Obj,
                    occ_others: np.ndarray, tries: int = 40):
    """Place ``obj`` so it touches ``anchor`` in every frame (overlapping patches go to the
    shape they are deeper in). Returns (rho_a', rho_obj) with the contested patches resolved
    (set to inf for the loser), or None."""
    for _ in range(tries):
        ang = rng.uniform(0, 2 * math.pi)
        e = np.array([math.sin(ang), math.cos(ang)])
        base = anchor.radius_towards(e) + obj.radius_towards(-e)
        for f in (1.1, 1.0, 0.9, 0.8):
            obj.centre = anchor.centre + f * base * e
            obj.vel = anchor.vel.copy()
            rho = geo.rho_all(obj)
            ra = rho_a.copy()
            both = (rho <= 1) & (ra <= 1)
            lose_obj = both & (rho >= ra)
            rho = np.where(lose_obj, np.inf, rho)
            ra = np.where(both & ~lose_obj, np.inf, ra)
            ins, ins_a = rho <= 1, ra <= 1
            if not geo.presence(obj, ins, _KEEP_FRAC).all():
                continue
            if not geo.presence(anchor, ins_a, _KEEP_FRAC).all():
                continue
            if (ins & occ_others).any():
                continue
            m = ins.reshape(-1, geo.H, geo.W)
            ma = ins_a.reshape(-1, geo.H, geo.W)
            if not all((m[t] & _dilate(ma[t], diag=False)).any() for t in range(geo.cam.T)):
                continue
            return ra, rho
    return None


def _layout(rng: np.random.Generator, n: int, grid: tuple[int, int], T: int) -> _Layout:
    H, W = grid
    t_mid = (T - 1) // 2
    gs = min(1.0, min(H, W) / 15.0)  # motion scale for small grids
    a_min, a_max = 3.0, max(10.0, 80.0 * H * W / (30 * 52))
    crossing = T >= 2 and rng.random() < 1.0 / 3.0
    cross_in_mid = crossing and n >= 2 and rng.random() < 0.5
    n_free = n - (1 if cross_in_mid else 0)  # objects in view in every frame
    touching = n_free >= 2 and rng.random() < 0.25
    # camera
    ang = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.5, 2.0) * gs
    if T > 1:
        speed = min(speed, 0.25 * min(H, W) / (T - 1))
    pan0 = speed * np.array([math.sin(ang), math.cos(ang)])
    zoom0 = float(rng.uniform(-1, 1) * math.log(1.15))
    depths = rng.uniform(0, 1, n_free)
    cross_depth = rng.uniform(0, 0.5)
    centre = np.array([(H - 1) / 2, (W - 1) / 2])

    for attempt in range(40):
        shrink = 0.93 ** attempt
        calm = 0.95 ** attempt  # less camera motion when nothing fits
        cam = _Camera(centre=centre, pan=pan0 * calm, zoom=zoom0 * calm, t_mid=t_mid, T=T)
        geo = _Geometry(grid, cam)
        objs, rhos, presents = [], [], []
        occ = np.zeros((T, H * W), bool)  # dilated occupancy

        def occupy(r):
            m = (r <= 1).reshape(T, H, W)
            return _dilate(m).reshape(T, H * W)

        ok = True
        if crossing:
            area = max(2.5, a_min * (a_max / a_min) ** cross_depth * shrink)
            obj = _new_object(rng, 0, area)
            obj.crossing = True
            res = _place_crossing(rng, geo, obj, cross_in_mid, gs)
            if res is None:
                continue
            r, pres = res
            r = np.where(pres[:, None], r, np.inf)  # slivers out of view are not drawn
            objs.append(obj), rhos.append(r), presents.append(pres)
            occ |= occupy(r)
        order = np.argsort(-depths)  # largest first
        for k, j in enumerate(order):
            area = max(2.5, a_min * (a_max / a_min) ** depths[j] * shrink)
            obj = _new_object(rng, len(objs), area)
            if touching and k == 1:  # partner of the first (largest) free object
                anchor_pos = 1 if crossing else 0
                others = np.zeros((T, H * W), bool)
                for q, rq in enumerate(rhos):
                    if q != anchor_pos:
                        others |= occupy(rq)
                res = _place_touching(rng, geo, objs[anchor_pos], rhos[anchor_pos], obj, others)
                if res is None:
                    ok = False
                    break
                rhos[anchor_pos], r = res
                objs.append(obj), rhos.append(r), presents.append(np.ones(T, bool))
                occ = others | occupy(rhos[anchor_pos]) | occupy(r)
                continue
            r = _place_free(rng, geo, obj, occ, float(depths[j]), gs, T)
            if r is None:
                ok = False
                break
            objs.append(obj), rhos.append(r), presents.append(np.ones(T, bool))
            occ |= occupy(r)
        if not ok:
            continue
        rho = np.stack(rhos)  # [n_obj, T, HW]
        masks = (rho <= 1).reshape(len(objs), T, H, W)
        present = np.stack(presents)
        assert not (masks.sum(0) > 1).any()
        assert int(present[:, t_mid].sum()) == n and (present.sum(0) >= 1).all()
        # clutter: 1-3 noun-like things in the background
        clutter = []
        occ_mid = _dilate(masks[:, t_mid].any(0))
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(50):
                p = np.array([rng.uniform(0, H - 1), rng.uniform(0, W - 1)])
                if not occ_mid[int(round(p[0])), int(round(p[1]))]:
                    break
            clutter.append((cam.to_world(p, t_mid), float(rng.uniform(0.2, 0.5)),
                            float(rng.uniform(0.8, 2.0) * max(gs, 0.6))))
        for o in objs:
            o.blur = float(rng.uniform(0.5, 1.5))
            o.strength = float(rng.uniform(0.4, 1.0))
        objs[int(rng.integers(len(objs)))].strength = 1.0
        return _Layout(cam=cam, objs=objs, masks=masks, rho=rho, present=present,
                       crossing=crossing, touching=touching, clutter=clutter)
    raise ValueError(f"cannot fit n={n} objects into grid {grid} with {T} frames; "
                     f"use a larger grid or fewer objects")


# ---------------------------------------------------------------------------------------------
# token features
# ---------------------------------------------------------------------------------------------
def _unit(rng, d: int, k: int = 1) -> np.ndarray:
    v = rng.normal(size=(k, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fourier(rng, n_modes: int, kmin: float, kmax: float):
    k = rng.uniform(kmin, kmax, n_modes)
    a = rng.uniform(0, 2 * math.pi, n_modes)
    kv = np.stack([k * np.sin(a), k * np.cos(a)], 1)  # [m, 2]
    ph = rng.uniform(0, 2 * math.pi, n_modes)
    return lambda w: np.cos(w @ kv.T + ph)  # [N, m]


@dataclass
class _World:
    """Scene-wide feature codes."""
    ident: np.ndarray  # [n_obj, 16] identity codes
    ident_drift: np.ndarray  # [n_obj, 16]
    cat: np.ndarray  # [8]
    part: np.ndarray  # [8]
    edge: np.ndarray  # [8]
    mat: np.ndarray  # [3, 16]: upper background, lower background, objects
    mat_clutter: np.ndarray  # [16]
    tex_vecs: np.ndarray  # [8, 16]
    tex_fn: object
    horizon: float
    tilt: float
    sink_vec: np.ndarray  # [4]
    sinks: np.ndarray  # token indices
    smooth_fns: list  # smooth random fields (world coordinates) for the text tokens


def _make_world(rng, layout: _Layout, grid) -> _World:
    H, W = grid
    n_obj = len(layout.objs)
    return _World(
        ident=_unit(rng, 16, n_obj), ident_drift=rng.normal(size=(n_obj, 16)) / 4.0,
        cat=_unit(rng, 8)[0], part=_unit(rng, 8)[0], edge=_unit(rng, 8)[0],
        mat=_unit(rng, 16, 3), mat_clutter=_unit(rng, 16)[0],
        tex_vecs=_unit(rng, 16, 8) / 2.0, tex_fn=_fourier(rng, 8, 0.5, 1.6),
        horizon=float(rng.uniform(0.2, 0.55) * H), tilt=float(rng.normal(0, 0.1)),
        sink_vec=_unit(rng, 4)[0],
        sinks=rng.choice(H * W, size=int(rng.integers(2, 5)), replace=False),
        smooth_fns=[_fourier(rng, 6, 0.08, 0.35) for _ in range(3)],
    )


def _edge_map(lab: np.ndarray) -> np.ndarray:
    """[H, W] float: object patches with a 4-neighbour of another label (image border excluded)."""
    e = np.zeros(lab.shape, bool)
    e[1:, :] |= lab[1:, :] != lab[:-1, :]
    e[:-1, :] |= lab[:-1, :] != lab[1:, :]
    e[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    e[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return (e & (lab > 0)).astype(np.float64)


def _frame_fields(layout: _Layout, geo: _Geometry, t: int) -> dict:
    """Per-patch quantities of frame ``t`` (flattened to HW)."""
    H, W, cam = geo.H, geo.W, layout.cam
    n_obj = len(layout.objs)
    pid = np.zeros((H, W), np.int64)  # persistent index + 1
    for i in range(n_obj):
        pid[layout.masks[i, t]] = i + 1
    pidf = pid.ravel()
    obj = (pidf > 0).astype(np.float64)
    edge = _edge_map(pid).ravel()
    s = cam.scale(t)
    part = np.zeros(H * W)
    for i, o in enumerate(layout.objs):
        m = pidf == i + 1
        if not m.any():
            continue
        c = o.image_centre(cam, t)
        pc = c + 0.45 * o.R * s * np.array([math.sin(o.part_dir), math.cos(o.part_dir)])
        g = np.exp(-((geo.pts - pc) ** 2).sum(1) / (2 * (0.45 * o.R * s + 0.4) ** 2))
        part[m] = g[m] / g[m].max()
    wpts = cam.to_world(geo.pts, t)
    clutter = np.zeros(H * W)
    for wc, amp, sig in layout.clutter:
        pc = cam.to_image(wc, t)
        clutter += amp * np.exp(-((geo.pts - pc) ** 2).sum(1) / (2 * (sig * s) ** 2))
    return dict(pid=pidf, obj=obj, edge=edge, part=part, clutter=clutter, wpts=wpts)


def _content_features(f: dict, world: _World, layout: _Layout,
                      t: int) -> tuple[np.ndarray, np.ndarray]:
    """Key-side ``[HW, 60]`` and query-side ``[HW, 60]`` content features of one frame."""
    HW = f["obj"].shape[0]
    T, t_mid = layout.cam.T, layout.cam.t_mid
    X = np.zeros((HW, _N_CONTENT))
    tau = (t - t_mid) / max(1.0, (T - 1) / 2.0)
    ident = world.ident + tau * world.ident_drift
    ident /= np.linalg.norm(ident, axis=1, keepdims=True)
    pid, obj, edge = f["pid"], f["obj"], f["edge"]
    on = pid > 0
    X[on, _SL["id"]] = ident[pid[on] - 1] * (1.0 - 0.3 * edge[on, None])
    clut = np.clip(f["clutter"], 0, 1)
    X[:, _SL["cat"]] = (obj * (1.0 - 0.15 * edge) + 0.35 * clut)[:, None] * world.cat
    X[:, _SL["part"]] = f["part"][:, None] * world.part
    X[:, _SL["edge"]] = edge[:, None] * world.edge
    wy, wx = f["wpts"][:, 0], f["wpts"][:, 1]
    lower = 1.0 / (1.0 + np.exp(-(wy - world.horizon - world.tilt * wx) / 0.8))
    bgmat = (1 - lower)[:, None] * world.mat[0] + lower[:, None] * world.mat[1]
    fine = world.tex_fn(f["wpts"]) @ world.tex_vecs  # [HW, 16]
    X[:, _SL["tex"]] = ((1 - obj)[:, None] * (0.8 * bgmat + 0.6 * fine)
                        + obj[:, None] * 0.4 * world.mat[2]
                        + clut[:, None] * 0.5 * world.mat_clutter)
    X[world.sinks, _SL["sink"]] = world.sink_vec
    Xq = X.copy()  # queries look for parts, boundaries and sinks everywhere
    Xq[:, _SL["part"]] = world.part
    Xq[:, _SL["edge"]] = world.edge * (0.5 + 0.5 * obj)[:, None]
    Xq[:, _SL["sink"]] = world.sink_vec
    return X, Xq


# ---------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------
@dataclass
class _Head:
    kind: str
    amp: dict  # block -> logit amplitude (nats)
    posy: np.ndarray  # [8] rotary amplitudes, row axis
    posx: np.ndarray  # [8] rotary amplitudes, column axis
    time: np.ndarray  # [4] rotary amplitudes, frame axis
    temp: float
    noise_mult: float
    leak_q: np.ndarray  # [60, 128]
    leak_k: np.ndarray


def _bump(peak: float, width: float) -> np.ndarray:
    a = _POS_FREQ * np.exp(-0.5 * (_POS_FREQ * width) ** 2)
    return peak * a / a.sum()


def _make_head(rng, kind: str) -> _Head:
    rec = _HEAD_RECIPES[kind]
    jit = lambda: float(rng.uniform(0.8, 1.2))  # noqa: E731
    amp = {b: rec.get(b, 0.0) * jit() for b in ("id", "cat", "part", "edge", "tex")}
    amp["sink"] = rec["sink"] * jit() if "sink" in rec else float(rng.uniform(0.3, 2.0))
    posy, posx = np.zeros(8), np.zeros(8)
    if "pos" in rec:
        pk, wd = rec["pos"]
        wd *= rng.uniform(0.8, 1.25)
        posy, posx = _bump(pk * jit() / 2, wd), _bump(pk * jit() / 2, wd)
    if "posy" in rec:
        posy = _bump(rec["posy"][0] * jit(), rec["posy"][1] * rng.uniform(0.9, 1.2))
    if "posx" in rec:
        posx = _bump(rec["posx"][0] * jit(), rec["posx"][1] * rng.uniform(0.9, 1.2))
    if "time" in rec:
        time = np.array(rec["time"]) * jit()
    else:
        time = np.array(_STAY) * rec["stay"] * jit()
    return _Head(kind=kind, amp=amp, posy=posy, posx=posx, time=time,
                 temp=float(rng.uniform(0.85, 1.15)), noise_mult=float(rng.uniform(0.85, 1.2)),
                 leak_q=rng.normal(size=(_N_CONTENT, _D_HEAD)) / math.sqrt(_N_CONTENT),
                 leak_k=rng.normal(size=(_N_CONTENT, _D_HEAD)) / math.sqrt(_N_CONTENT))


def _rotary(angles: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """``[N, 2F]`` pairs ``sqrt(|a|) (cos, sin)(angle)`` so that the q.k of two such vectors is
    ``sum_f a_f cos(angle_q - angle_k)`` (the sign goes on the key side, see ``_qk``)."""
    r = np.sqrt(np.abs(amps))
    out = np.empty((angles.shape[0], 2 * len(amps)))
    out[:, 0::2] = r * np.cos(angles)
    out[:, 1::2] = r * np.sin(angles)
    return out


def _qk(head: _Head, X: np.ndarray, Xq: np.ndarray, pos: np.ndarray, tidx: np.ndarray):
    """Noise-free queries and keys ``[N, 128]`` of one head for tokens with content features
    ``X``/``Xq [N, 60]``, patch positions ``pos [N, 2]`` and frame indices ``tidx [N]``."""
    N = X.shape[0]
    q = np.zeros((N, _D_HEAD))
    k = np.zeros((N, _D_HEAD))
    for b in ("id", "cat", "part", "edge", "tex", "sink"):
        a = math.sqrt(head.amp[b])
        q[:, _SL[b]] = a * Xq[:, _SL[b]]
        k[:, _SL[b]] = a * X[:, _SL[b]]
    for b, ang, amps in (("posy", np.outer(pos[:, 0], _POS_FREQ), head.posy),
                         ("posx", np.outer(pos[:, 1], _POS_FREQ), head.posx),
                         ("time", np.outer(tidx, _TIME_FREQ), head.time)):
        rq = _rotary(ang, amps)
        q[:, _SL[b]] = rq
        k[:, _SL[b]] = rq * np.repeat(np.sign(amps), 2)
    q += _LEAK * X @ head.leak_q
    k += _LEAK * X @ head.leak_k
    return q, k


def _self_attention(heads: list, X_all, Xq_all, pos, T: int, HW: int, noise: float,
                    gen: torch.Generator, full_3d: bool = False, probe_stride: int = 4):
    """Per frame ``[heads, HW, HW]``: each head's in-frame block of the 3D attention (queries of
    frame ``t`` over the keys of all ``T`` frames), rows renormalised, rounded through bf16; and
    ``[heads, T]``: the mean mass the rows send out of their frame.

    The renormalised in-frame block of a softmax over ``T*HW`` keys equals the softmax over the
    in-frame logits (the out-of-frame terms cancel), so by default the block is computed from
    the in-frame logits and the full 3D softmax only for every ``probe_stride``-th query (for
    the out-of-frame mass): that keeps one 30x52x3 scene under ~1.5 s on one thread.
    ``full_3d=True`` computes the 3D softmax for every query and renormalises its block (same
    maps up to rounding; used by the tests)."""
    N = T * HW
    tidx = np.repeat(np.arange(T, dtype=np.float64), HW)
    pos_all = np.tile(pos, (T, 1))
    out = [torch.empty((len(heads), HW, HW), dtype=torch.float32) for _ in range(T)]
    out_mass = torch.zeros((len(heads), T))
    stride = 1 if full_3d else probe_stride
    for h, head in enumerate(heads):
        q, k = _qk(head, X_all, Xq_all, pos_all, tidx)
        q = torch.from_numpy(q).float()
        k = torch.from_numpy(k).float()
        sd = noise * _NOISE_STD * head.noise_mult
        if sd > 0:
            q += sd * torch.randn((N, _D_HEAD), generator=gen)
            k += sd * torch.randn((N, _D_HEAD), generator=gen)
        q /= head.temp
        for t in range(T):
            own_cols = slice(t * HW, (t + 1) * HW)
            qt = q[own_cols]
            # the 3D softmax: queries of frame t over the keys of every frame
            full = qt[::stride] @ k.T  # [HW / stride, T*HW]
            lse = torch.logsumexp(full, dim=1)
            in_mass = torch.exp(torch.logsumexp(full[:, own_cols], dim=1) - lse)
            out_mass[h, t] = 1.0 - in_mass.mean()
            if full_3d:
                block = torch.exp(full[:, own_cols] - lse[:, None]) / in_mass[:, None]
            else:
                block = qt @ k[own_cols].T  # in-frame logits [HW, HW]
                block -= block.amax(dim=1, keepdim=True)
                block.exp_()
                block /= block.sum(dim=1, keepdim=True)
            block = block.to(torch.bfloat16).float()
            out[t][h] = block / block.sum(1, keepdim=True)
    return out, out_mass


# ---------------------------------------------------------------------------------------------
# cross-attention
# ---------------------------------------------------------------------------------------------
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    i = np.arange(n)
    g = np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * sigma ** 2))
    return g / g.sum(1, keepdims=True)


def _cross_evidence(layout: _Layout, geo: _Geometry, f: dict, t: int, bg: float,
                    bg_fn) -> tuple[np.ndarray, np.ndarray]:
    """The noun's evidence ``[HW]`` for its two sub-word tokens (part-peaked, whole-object),
    relative to the strongest object (1.0)."""
    H, W = geo.H, geo.W
    whole = np.zeros((H, W))
    part = np.zeros((H, W))
    p2 = f["part"].reshape(H, W)
    for i, o in enumerate(layout.objs):
        m = layout.masks[i, t].astype(np.float64)
        if not m.any():
            continue
        b = _blur_matrix(H, o.blur) @ m @ _blur_matrix(W, o.blur).T
        b /= b.max()
        pm = _blur_matrix(H, o.blur) @ (p2 * m) @ _blur_matrix(W, o.blur).T
        pm /= max(pm.max(), 1e-9)
        whole += o.strength * b
        part += o.strength * (0.35 * b + 0.65 * pm)
    back = bg * np.clip(1.0 + 0.4 * bg_fn(f["wpts"]).sum(1) / math.sqrt(3), 0.3, None)
    clut = f["clutter"]
    return part.ravel() + clut + back, whole.ravel() + clut + back


def _cross_attention(rng, layout: _Layout, geo: _Geometry, fields: list, world: _World,
                     n_heads: int, noise: float) -> list:
    """Per frame ``[heads, HW]``: the noun's two token columns of a softmax over 512 text
    keys, summed."""
    T = layout.cam.T
    bg = float(rng.uniform(0.03, 0.08))
    bg_fn = _fourier(rng, 3, 0.08, 0.3)
    lag = float(rng.uniform(0.1, 0.3))
    n_other = _N_REAL_TEXT - 2
    n_pad = _N_TEXT - _N_REAL_TEXT
    L0a = rng.uniform(3.5, 6.0, n_heads)
    L0b = L0a - rng.uniform(0.3, 1.5, n_heads)
    ga = rng.uniform(0.9, 1.25, n_heads)
    weak = rng.choice(n_heads, size=min(2, n_heads - 1), replace=False) if n_heads > 1 else []
    ga[weak] = rng.uniform(0.25, 0.5, len(weak))
    gb = ga * rng.uniform(0.85, 1.05, n_heads)
    mu = rng.uniform(-1.0, 2.5, (n_heads, n_other))
    wfield = rng.normal(0, 0.4, (n_heads, n_other, 3))
    lpad = rng.uniform(-0.5, 0.5, n_heads)
    ev = [_cross_evidence(layout, geo, fields[t], t, bg, bg_fn) for t in range(T)]
    out = []
    for t in range(T):
        ea, eb = ev[t]
        if t > 0:  # the cross map lags the motion
            ea = (1 - lag) * ea + lag * ev[t - 1][0]
            eb = (1 - lag) * eb + lag * ev[t - 1][1]
        la = L0a[:, None] + ga[:, None] * np.log(ea + 1e-4)[None, :]
        lb = L0b[:, None] + gb[:, None] * np.log(eb + 1e-4)[None, :]
        if noise > 0:
            la = la + noise * 0.35 * rng.normal(size=la.shape)
            lb = lb + noise * 0.35 * rng.normal(size=lb.shape)
        g = np.stack([fn(fields[t]["wpts"]).sum(1) / math.sqrt(6)
                      for fn in world.smooth_fns])  # [3, HW]
        lo = mu[:, :, None] + np.einsum("hkm,mp->hkp", wfield, g)  # [heads, 23, HW]
        m = np.maximum(np.maximum(la, lb), np.maximum(lo.max(1), lpad[:, None]))
        z = (np.exp(la - m) + np.exp(lb - m) + np.exp(lo - m[:, None, :]).sum(1)
             + n_pad * np.exp(lpad[:, None] - m))
        p = (np.exp(la - m) + np.exp(lb - m)) / z
        out.append(torch.from_numpy(p).float().to(torch.bfloat16).float())
    return out


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def _build(n, grid, n_frames=3, noise=0.5, seed=0, head_types=None, full_3d=False):
    """``make_video_scene`` plus a dict of diagnostics (``out_of_frame_mass [heads, T]``, the
    layout, the camera, per-frame persistent object indices, crossing/touching flags)."""
    grid, types = _validate(n, grid, n_frames, noise, seed, head_types)
    H, W = grid
    T = int(n_frames)
    noise = float(noise)
    ss = np.random.SeedSequence(int(seed))
    r_geo, r_world, r_heads, r_cross, r_noise = (np.random.default_rng(s) for s in ss.spawn(5))
    layout = _layout(r_geo, int(n), grid, T)
    geo = _Geometry(grid, layout.cam)
    world = _make_world(r_world, layout, grid)
    order = r_heads.permutation(len(types))
    types = tuple(types[i] for i in order)
    heads = [_make_head(r_heads, kind) for kind in types]
    fields = [_frame_fields(layout, geo, t) for t in range(T)]
    feats = [_content_features(fields[t], world, layout, t) for t in range(T)]
    X_all = np.concatenate([x for x, _ in feats])
    Xq_all = np.concatenate([xq for _, xq in feats])
    gen = torch.Generator().manual_seed(int(r_noise.integers(2 ** 62)))
    selfs, mass = _self_attention(heads, X_all, Xq_all, geo.pts, T, H * W, noise, gen,
                                  full_3d=full_3d)
    crosses = _cross_attention(r_cross, layout, geo, fields, world, len(heads), noise)
    frames, pids = [], []
    for t in range(T):
        lab = np.zeros((H, W), np.int32)
        ids = [i for i in range(len(layout.objs)) if layout.present[i, t]]
        for new_id, i in enumerate(ids, start=1):
            lab[layout.masks[i, t]] = new_id
        pids.append(ids)
        frames.append(SyntheticFrame(self_attn=selfs[t], cross_attn=crosses[t], labels=lab))
    scene = SyntheticScene(grid=grid, noise=noise, head_types=types, frames=frames)
    info = dict(out_of_frame_mass=mass, layout=layout, camera=layout.cam, object_ids=pids,
                crossing=layout.crossing, touching=layout.touching)
    return scene, info


def make_video_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5,
                     seed: int = 0, head_types: tuple[str, ...] | None = None) -> SyntheticScene:
    """A video scene of ``n`` objects of one noun (in the middle frame ``(n_frames - 1) // 2``).

    Args:
        n: objects in the middle frame, int >= 1 (other frames may show one more or one less).
        grid: ``(H, W)`` patch grid per latent frame, each side >= 8.
        n_frames: latent frames ``T >= 1``.
        noise: std scale of the Gaussian noise on queries and keys (0.25 mild, 0.5 moderate,
            1.0 hard) and on the cross-attention logits.
        seed: int >= 0; the same arguments give identical tensors.
        head_types: names from ``FAMILY_HEAD_TYPES``, any number, repeats allowed; default the
            12. The order is shuffled per scene from ``seed``; ``scene.head_types`` has it.

    Returns:
        ``SyntheticScene`` with ``T`` frames, each ``SyntheticFrame(self_attn=[heads, HW, HW]
        float32, rows summing to 1, cross_attn=[heads, HW] float32 >= 0, labels=[H, W] int32``
        with ids ``1..count`` of that frame, 0 background).

    Raises:
        ValueError: a bad argument (named with its value), or objects that cannot fit the grid.
    """
    return _build(n, grid, n_frames, noise, seed, head_types)[0]
