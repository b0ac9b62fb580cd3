"""Synthetic scenes whose noun cross-attention lights up a *part* of each object.

Why this family exists
----------------------
In a real video DiT (Wan2.1 around denoising step 20 of 50, a middle block, a
prompt such as "four dogs on a lawn") the counted noun's cross-attention does not
cover each object evenly. It concentrates on the most distinctive part of each
object (a dog's head or face, 15-40 % of the dog), spills only weakly over the
rest of the body (0.1-0.35 of that part's peak), and is uneven between instances:
one or two objects peak at full strength, the others at 0.3-0.8 of it. A counter
that thresholds the noun map sees a few bright spots plus faint bodies; it has to
group each part with its own body (and not with a neighbour) from the
self-attention. This family builds such scenes with known ground truth.

How a scene is built
--------------------
1. Layout (shared by all frames). ``n`` objects ("bodies"): compact irregular
   star-shaped blobs, areas log-uniform between ~6 patches and ~8 % of the frame
   at 30x52 (scaled with the grid's area), each with one distinctive "part": the
   15-40 % of the body furthest along a random direction. Objects keep a gap of at
   least one patch from each other, except that about a quarter of the scenes with
   3+ objects have one pair touching (4-adjacent, moving together). 0-2 clutter
   things (another object class, e.g. a ball) sit elsewhere. A wavy "lawn" band
   covers the lower part of the frame (the context). In about one scene in five a
   thin static occluder (a 1-patch line) crosses one object, which may split it.
   Every object keeps at least 4 visible patches in every frame.
2. Frames are consecutive frames of one short clip: every object (and clutter
   thing) translates by a small constant velocity (up to ~1.5 patches per frame
   at 30x52); its shape stays the same.
3. Cross-attention of the noun token, per head ([heads, HW], not normalised over
   space, values ~0.001-0.2): part peaks at the object's strength, body at
   0.1-0.35 of it, a Gaussian blur of 0.7-1.5 patches, clutter bumps at 0.2-0.5 of
   the strongest value, a 0.05-0.15 leak onto the lawn, a floor of 3-5 %, small
   multiplicative and additive noise (growing with ``noise``). Heads differ in
   amplitude (0.02-0.2) and some are nearly flat.
4. Self-attention, per head ([heads, HW, HW], rows are softmaxes of logits):
   every head shares a positional component, ``log(1 + r * exp(-d^2 / 2 s^2))``
   with r in 3-10 and s in 1-2 patches (a local kernel over the 2D token distance
   ``d`` on top of a broad constant, up to ~2.4 logits), plus a content term whose
   kind is the head's type (below; identity strengths 1.1-1.7 logits), plus i.i.d.
   Gaussian logit noise of standard deviation ``2.5 * noise`` (spiky rows at
   noise 1.0; the instance head stays informative on average). With these
   settings, at noise 0.25-0.5 an instance-head row on an object puts roughly
   7-20x more attention per patch on its own object than on another object; the
   positional part alone gives ~2-4x (what the class head shows), local and
   axial heads ~3-9x, mostly through small objects.

Head types (``PARTIAL_HEAD_TYPES``)
-----------------------------------
``instance``        tokens of the same thing (object body and part alike, a
                    clutter thing, the occluder) attend to each other; different
                    objects do not, even touching ones (the local kernel remains).
``part``            like ``instance`` but each object's part and the rest of its
                    body are two different identities.
``class``           every object of the noun attends to every other one alike
                    (clutter things form another class).
``halo``            saliency: all foreground things plus a 1-2 patch halo.
``edge``            tokens on the boundaries of things attend to each other.
``local_narrow``    an extra sharp local kernel (width ~1 patch).
``local_wide``      an extra broad local kernel (width ~3 patches).
``axial``           tokens of the same row or column.
``sink``            50-85 % of every row's mass on 1-3 fixed tokens.
``diffuse``         nearly uniform (weak positional part, no content).
``texture``         similarity of a smooth random 3-channel field (unrelated to
                    the objects).
``noisy_instance``  the instance term with extra heavy logit noise.

Background tokens of the instance-like and class heads also weakly attend to
their own region (lawn or sky).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from synthetic_scenes import SyntheticFrame, SyntheticScene

PARTIAL_HEAD_TYPES: tuple[str, ...] = (
    "instance", "part", "class", "halo", "edge", "local_narrow", "local_wide",
    "axial", "sink", "diffuse", "texture", "noisy_instance",
)

MAX_OBJECTS = 8
MAX_NOISE = 1.5
MIN_SIDE = 10
MIN_TOKENS = 300
_REF_AREA = 30 * 52  # Wan2.1-1.3B at 832x480: the grid the sizes are quoted for
_MIN_VISIBLE = 4
_LOGIT_NOISE = 2.5  # logit noise std per unit of ``noise``


# ----------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------

def _check_args(n, grid, n_frames, noise, head_types) -> tuple[str, ...]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_OBJECTS:
        raise ValueError(f"n must be an integer in 0..{MAX_OBJECTS}, got {n!r}")
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in grid)
            or min(grid) < MIN_SIDE or grid[0] * grid[1] < MIN_TOKENS):
        raise ValueError(f"grid must be two integers >= {MIN_SIDE} with at least {MIN_TOKENS} "
                         f"tokens, got {grid!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if not np.isfinite(noise) or not 0.0 <= noise <= MAX_NOISE:
        raise ValueError(f"noise must be in [0, {MAX_NOISE}], got {noise!r}")
    if head_types is None:
        return PARTIAL_HEAD_TYPES
    head_types = tuple(head_types)
    for t in head_types:
        if t not in PARTIAL_HEAD_TYPES:
            raise ValueError(f"unknown head type {t!r}; expected one of {PARTIAL_HEAD_TYPES}")
    if len(head_types) < len(PARTIAL_HEAD_TYPES):
        raise ValueError(f"head_types needs at least {len(PARTIAL_HEAD_TYPES)} entries, "
                         f"got {len(head_types)}: {head_types!r}")
    if head_types.count("instance") != 1:
        raise ValueError(f"head_types must hold exactly one 'instance', got {head_types!r}")
    return head_types


# ----------------------------------------------------------------------------
# small raster helpers
# ----------------------------------------------------------------------------

def _dilate(mask: np.ndarray, radius: int = 1, square: bool = True) -> np.ndarray:
    """Binary dilation of a [H, W] mask by ``radius`` steps (3x3 square or 4-cross)."""
    out = mask.copy()
    for _ in range(radius):
        p = np.pad(out, 1)
        grown = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
        if square:
            grown |= p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:]
        out = grown
    return out


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a [H, W] bool mask, as flat index arrays."""
    H, W = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), []
        while queue:
            y, x = queue.popleft()
            members.append(y * W + x)
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < H and 0 <= xx < W and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    queue.append((yy, xx))
        comps.append(np.array(members))
    return comps


def _largest_component(mask: np.ndarray) -> np.ndarray:
    comps = _components(mask)
    out = np.zeros_like(mask, dtype=bool)
    if comps:
        out.flat[max(comps, key=len)] = True
    return out


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """[size, size] Gaussian smoothing matrix, rows normalised (edges keep their level)."""
    i = np.arange(size, dtype=np.float64)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a [H, W] map (sigma in patches)."""
    H, W = img.shape
    return _blur_matrix(H, sigma) @ img @ _blur_matrix(W, sigma).T


def _smooth_field(rng: np.random.Generator, grid, sigma: float, channels: int) -> np.ndarray:
    """[H, W, channels] smooth Gaussian random field with unit std per channel."""
    f = np.stack([_blur(rng.standard_normal(grid), sigma) for _ in range(channels)], axis=-1)
    return (f - f.mean(axis=(0, 1))) / (f.std(axis=(0, 1)) + 1e-9)


# ----------------------------------------------------------------------------
# layout: objects, parts, clutter, occluder, lawn
# ----------------------------------------------------------------------------

@dataclass
class _Thing:
    """A rigid blob translating over the frames.

    ``dy, dx``: int offsets of its pixels from ``anchor``; ``part``: bool per pixel
    (noun objects only); ``shifts``: [n_frames, 2] int displacement per frame.
    """
    dy: np.ndarray
    dx: np.ndarray
    part: np.ndarray | None
    shifts: np.ndarray
    anchor: tuple[int, int] = (0, 0)

    def mask(self, grid, t: int) -> np.ndarray:
        m = np.zeros(grid, dtype=bool)
        m[self.anchor[0] + self.dy + self.shifts[t, 0], self.anchor[1] + self.dx + self.shifts[t, 1]] = True
        return m

    def part_mask(self, grid, t: int) -> np.ndarray:
        m = np.zeros(grid, dtype=bool)
        sel = self.part
        m[self.anchor[0] + self.dy[sel] + self.shifts[t, 0],
          self.anchor[1] + self.dx[sel] + self.shifts[t, 1]] = True
        return m


def _blob_offsets(rng: np.random.Generator, area: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets of a compact irregular 4-connected blob of ``area`` patches.

    The blob is star-shaped: a radius modulated by harmonics 2-4, stretched by an
    aspect ratio up to 1.7 along a random axis, at a random sub-patch position.
    """
    amps = rng.uniform(0.0, 0.18, size=3)
    phases = rng.uniform(0.0, 2 * np.pi, size=3)
    aspect = rng.uniform(1.0, 1.7)
    rot = rng.uniform(0.0, np.pi)
    sub = rng.uniform(-0.5, 0.5, size=2)
    R = int(np.ceil(2.5 * np.sqrt(area))) + 2
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float64)
    yy, xx = yy - sub[0], xx - sub[1]
    u = (yy * np.cos(rot) + xx * np.sin(rot)) * np.sqrt(aspect)
    v = (-yy * np.sin(rot) + xx * np.cos(rot)) / np.sqrt(aspect)
    theta = np.arctan2(v, u)
    shape = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(amps, phases)))
    q = np.hypot(u, v) / shape  # inside iff q <= r0
    order = np.sort(q.ravel())
    k = area
    while True:
        mask = _largest_component(q <= order[k - 1])
        if mask.sum() >= area or k >= order.size:
            break
        k += 1
    py, px = np.nonzero(mask)
    return py - R, px - R


def _part_of(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The distinctive part: the 15-40 % of the blob furthest along a random direction."""
    frac = rng.uniform(0.15, 0.40)
    phi = rng.uniform(0.0, 2 * np.pi)
    proj = dy * np.sin(phi) + dx * np.cos(phi)
    k = int(np.clip(round(frac * dy.size), 1, dy.size - 1))
    part = np.zeros(dy.size, dtype=bool)
    part[np.argsort(-proj, kind="stable")[:k]] = True
    # keep it one piece
    oy, ox = dy.min(), dx.min()
    local = np.zeros((dy.max() - oy + 1, dx.max() - ox + 1), dtype=bool)
    local[dy[part] - oy, dx[part] - ox] = True
    local = _largest_component(local)
    return local[dy - oy, dx - ox]


def _shifts(rng: np.random.Generator, n_frames: int, vmax: float) -> np.ndarray:
    """[n_frames, 2] integer displacements of a constant random velocity."""
    speed = rng.uniform(0.0, vmax)
    ang = rng.uniform(0.0, 2 * np.pi)
    t = np.arange(n_frames)[:, None]
    return np.rint(t * speed * np.array([np.sin(ang), np.cos(ang)])).astype(np.int64)


def _valid_anchors(thing: _Thing, blocked: np.ndarray) -> np.ndarray:
    """[H, W] bool: anchors at which ``thing`` stays inside the frame and off ``blocked``
    ([n_frames, H, W]) in every frame."""
    T, H, W = blocked.shape
    offs = np.unique(np.concatenate([
        np.stack([thing.dy + thing.shifts[t, 0], thing.dx + thing.shifts[t, 1], np.full(thing.dy.size, t)], 1)
        for t in range(T)]), axis=0)
    P = int(np.abs(offs[:, :2]).max()) + 1
    padded = np.pad(blocked, ((0, 0), (P, P), (P, P)), constant_values=True)
    ok = np.ones((H, W), dtype=bool)
    for oy, ox, t in offs:
        ok &= ~padded[t, P + oy:P + oy + H, P + ox:P + ox + W]
    return ok


def _hits(thing: _Thing, target: np.ndarray) -> np.ndarray:
    """[H, W] bool: anchors at which ``thing`` (frame 0) covers a pixel of ``target``."""
    H, W = target.shape
    P = int(max(np.abs(thing.dy).max(), np.abs(thing.dx).max())) + 1
    padded = np.pad(target, P)
    out = np.zeros((H, W), dtype=bool)
    for oy, ox in zip(thing.dy, thing.dx):
        out |= padded[P + oy:P + oy + H, P + ox:P + ox + W]
    return out


def _pick(rng: np.random.Generator, ok: np.ndarray) -> tuple[int, int] | None:
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return None
    a = int(cand[rng.integers(cand.size)])
    return a // ok.shape[1], a % ok.shape[1]


@dataclass
class _Layout:
    grid: tuple[int, int]
    objects: list[_Thing]  # label order: objects[i] has label i + 1
    clutter: list[_Thing]
    occluder: np.ndarray | None  # [H, W] bool
    lawn: np.ndarray  # [H, W] bool: the context band (before things are drawn)


@dataclass
class _FrameTruth:
    """Per-frame raster truth ([H, W] each)."""
    labels: np.ndarray  # int32: 0 background, 1..n noun objects (visible pixels)
    part: np.ndarray  # bool: visible part pixels
    things: np.ndarray  # int: 0 background, 1..n objects, then clutter things, then occluder
    clutter: np.ndarray  # int: 0 or clutter index 1..k
    lawn: np.ndarray  # bool: visible lawn
    n: int


class _Placer:
    """Places things one by one, keeping a 1-patch gap (8-neighbourhood) between them."""

    def __init__(self, grid, n_frames):
        self.grid, self.T = grid, n_frames
        self.placed: list[_Thing] = []

    def _blocked(self, skip: int | None = None) -> np.ndarray:
        b = np.zeros((self.T, *self.grid), dtype=bool)
        for i, th in enumerate(self.placed):
            if i != skip:
                for t in range(self.T):
                    b[t] |= _dilate(th.mask(self.grid, t))
        return b

    def place(self, rng, thing: _Thing) -> bool:
        anchor = _pick(rng, _valid_anchors(thing, self._blocked()))
        if anchor is None:
            return False
        thing.anchor = anchor
        self.placed.append(thing)
        return True

    def place_touching(self, rng, thing: _Thing, partner: int) -> bool:
        """Place ``thing`` 4-adjacent to placed thing ``partner`` (same motion), apart from the rest."""
        other = self.placed[partner]
        thing.shifts = other.shifts.copy()
        m0 = other.mask(self.grid, 0)
        ok = _valid_anchors(thing, self._blocked(skip=partner))
        ok &= ~_hits(thing, m0) & _hits(thing, _dilate(m0, square=False))
        anchor = _pick(rng, ok)
        if anchor is None:
            return False
        thing.anchor = anchor
        self.placed.append(thing)
        return True


def _object_areas(rng, n, grid) -> np.ndarray:
    H, W = grid
    scale = H * W / _REF_AREA
    lo = max(6.0 * scale, 5.0)
    hi = max(0.08 * H * W, lo + 1.0)
    areas = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    budget = 0.30 * H * W
    if areas.sum() > budget:
        areas *= budget / areas.sum()
    return np.maximum(np.rint(areas), lo).astype(int)


def _make_thing(rng, area, n_frames, vmax, with_part) -> _Thing:
    dy, dx = _blob_offsets(rng, int(area))
    part = _part_of(rng, dy, dx) if with_part else None
    return _Thing(dy, dx, part, _shifts(rng, n_frames, vmax))


def _place_with_shrink(rng, placer, area, n_frames, vmax, with_part, min_area, partner=None) -> _Thing:
    """Draw and place a thing, shrinking it until it fits (touching ``partner`` if given)."""
    while True:
        thing = _make_thing(rng, area, n_frames, vmax, with_part)
        if partner is not None and placer.place_touching(rng, thing, partner):
            return thing
        if placer.place(rng, thing):
            return thing
        if area <= min_area:
            raise RuntimeError(f"could not place a thing of {area} patches on grid {placer.grid}")
        area = max(int(area * 0.85), min_area)


def _lawn_band(rng, grid) -> np.ndarray:
    """A wavy band covering the lower 45-70 % of the frame."""
    H, W = grid
    top = H * rng.uniform(0.30, 0.55)
    x = np.arange(W)
    edge = top + 0.06 * H * np.sin(2 * np.pi * x / W * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
    return np.arange(H)[:, None] >= edge[None, :]


def _occluder(rng, layout: _Layout, n_frames) -> np.ndarray | None:
    """A thin static line crossing one object, or None if none keeps every object visible."""
    H, W = layout.grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    target = layout.objects[int(rng.integers(len(layout.objects)))]
    mid = target.mask(layout.grid, n_frames // 2)
    cy, cx = np.argwhere(mid).mean(axis=0)
    half = np.sqrt(mid.sum() / np.pi) + rng.uniform(2.0, 5.0) * np.sqrt(H * W / _REF_AREA)
    for _ in range(20):
        ang = rng.uniform(0.0, np.pi)
        d = np.array([np.sin(ang), np.cos(ang)])
        along = (yy - cy) * d[0] + (xx - cx) * d[1]
        across = -(yy - cy) * d[1] + (xx - cx) * d[0]
        line = (np.abs(across) <= 0.5) & (np.abs(along) <= half)
        visible_everywhere = all(
            (obj.mask(layout.grid, t) & ~line).sum() >= _MIN_VISIBLE
            for obj in layout.objects for t in range(n_frames))
        crosses = (mid & line).any()
        if visible_everywhere and crosses:
            return line
    return None


def _make_layout(rng, n, grid, n_frames) -> _Layout:
    """Objects (largest first, one pair touching now and then), clutter, lawn, occluder."""
    H, W = grid
    lin = np.sqrt(H * W / _REF_AREA)
    vmax = 1.5 * max(lin, 0.5)
    min_area = int(max(6.0 * lin ** 2, 5.0))
    placer = _Placer(grid, n_frames)
    areas = np.sort(_object_areas(rng, n, grid))[::-1]
    touch_at = int(rng.integers(1, n)) if n >= 3 and rng.random() < 0.32 else None  # ~1/4 succeed
    for i, area in enumerate(areas):
        partner = int(rng.integers(i)) if i == touch_at else None
        _place_with_shrink(rng, placer, area, n_frames, vmax, True, min_area, partner)
    objects = [placer.placed[i] for i in rng.permutation(n)] if n else []
    clutter = []
    c_lo, c_hi = max(4.0 * lin ** 2, 4.0), max(0.03 * H * W, 6.0)
    for _ in range(int(rng.integers(0, 3))):
        area = int(np.rint(np.exp(rng.uniform(np.log(c_lo), np.log(c_hi)))))
        thing = _make_thing(rng, area, n_frames, vmax, False)
        if placer.place(rng, thing):  # no room: skip it
            clutter.append(thing)
    layout = _Layout(grid, objects, clutter, None, _lawn_band(rng, grid))
    if n and rng.random() < 0.2:
        layout.occluder = _occluder(rng, layout, n_frames)
    return layout


def _frame_truth(layout: _Layout, t: int) -> _FrameTruth:
    grid, n = layout.grid, len(layout.objects)
    labels = np.zeros(grid, dtype=np.int32)
    part = np.zeros(grid, dtype=bool)
    things = np.zeros(grid, dtype=np.int64)
    clutter = np.zeros(grid, dtype=np.int64)
    for i, obj in enumerate(layout.objects):
        m = obj.mask(grid, t)
        labels[m] = i + 1
        things[m] = i + 1
        part |= obj.part_mask(grid, t)
    for k, th in enumerate(layout.clutter):
        m = th.mask(grid, t)
        things[m] = n + k + 1
        clutter[m] = k + 1
    if layout.occluder is not None:
        occ = layout.occluder
        labels[occ] = 0
        part &= ~occ
        clutter[occ] = 0
        things[occ] = n + len(layout.clutter) + 1
    lawn = layout.lawn & (things == 0)
    return _FrameTruth(labels, part, things, clutter, lawn, n)


# ----------------------------------------------------------------------------
# cross-attention of the noun token
# ----------------------------------------------------------------------------

@dataclass
class _CrossStyle:
    strength: np.ndarray  # [n] part peak of each object (1.0 for 1-2 of them)
    body: np.ndarray  # [n] body level relative to the part
    clutter: np.ndarray  # [k] clutter bump levels
    leak: float  # lawn leak
    floor: float
    blur: np.ndarray  # [heads] blur sigma in patches
    amp: np.ndarray  # [heads] peak value
    sharp: np.ndarray  # [heads] 1 = full map, small = nearly flat


def _cross_style(rng, n, n_clutter, n_heads) -> _CrossStyle:
    strength = rng.uniform(0.3, 0.8, size=n)
    if n:
        strength[rng.permutation(n)[:min(n, int(rng.integers(1, 3)))]] = 1.0
    sigma0 = rng.uniform(0.7, 1.5)
    flat = rng.random(n_heads) < 0.25
    return _CrossStyle(
        strength=strength,
        body=rng.uniform(0.10, 0.35, size=n),
        clutter=rng.uniform(0.2, 0.5, size=n_clutter),
        leak=rng.uniform(0.05, 0.15),
        floor=rng.uniform(0.03, 0.05),
        blur=np.clip(sigma0 * rng.uniform(0.85, 1.15, size=n_heads), 0.7, 1.5),
        amp=np.exp(rng.uniform(np.log(0.02), np.log(0.2), size=n_heads)),
        sharp=np.where(flat, rng.uniform(0.05, 0.25, size=n_heads), rng.uniform(0.7, 1.0, size=n_heads)),
    )


def _cross_head(rng, style: _CrossStyle, h: int, fr: _FrameTruth, noise: float) -> np.ndarray:
    """One head's [H, W] cross map (before flattening)."""
    sigma = style.blur[h]
    noun = np.zeros(fr.labels.shape)
    if fr.n:
        s = np.concatenate([[0.0], style.strength * rng.uniform(0.85, 1.15, size=fr.n)])
        b = np.concatenate([[0.0], style.body])
        noun = s[fr.labels] * np.where(fr.part, 1.0, b[fr.labels])
        noun = _blur(noun, sigma)
        noun *= s.max() / max(noun.max(), 1e-12)  # strongest part peaks at its strength
    m = noun
    for k, level in enumerate(style.clutter):
        bump = _blur((fr.clutter == k + 1).astype(np.float64), sigma)
        if bump.max() > 0:
            m = m + level * bump / bump.max()
    m = m + style.leak * _blur(fr.lawn.astype(np.float64), sigma)
    m = style.floor + m
    m = m * np.exp(rng.normal(0.0, 0.05 + 0.25 * noise, size=m.shape))
    m = m + np.abs(rng.normal(0.0, 0.005 + 0.02 * noise, size=m.shape))
    m = style.sharp[h] * m + (1.0 - style.sharp[h]) * m.mean()
    return style.amp[h] * m


def _cross_attention(rng, style, fr, noise, n_heads) -> torch.Tensor:
    """[heads, HW] float32 non-negative cross-attention of the noun token."""
    maps = [_cross_head(rng, style, h, fr, noise).ravel() for h in range(n_heads)]
    return torch.from_numpy(np.stack(maps).astype(np.float32))


# ----------------------------------------------------------------------------
# self-attention
# ----------------------------------------------------------------------------

@dataclass
class _Head:
    kind: str
    pos: np.ndarray  # [HW, HW] float32 positional logits (shared kind of component)
    strength: float  # content strength in logit units
    noise_std: float  # i.i.d. logit noise std
    width: float = 0.0  # kernel width (local heads) or halo radius
    sinks: np.ndarray | None = None  # token indices (sink head)
    sink_mass: float = 0.0


@dataclass
class _Geometry:
    grid: tuple[int, int]
    d2: np.ndarray  # [HW, HW] float32 squared token distance
    row: np.ndarray  # [HW] int
    col: np.ndarray  # [HW] int
    texture: np.ndarray  # [HW, 3] smooth random field


def _geometry(rng, grid) -> _Geometry:
    H, W = grid
    row, col = np.divmod(np.arange(H * W), W)
    d2 = ((row[:, None] - row[None, :]) ** 2 + (col[:, None] - col[None, :]) ** 2).astype(np.float32)
    texture = _smooth_field(rng, grid, sigma=rng.uniform(4.0, 7.0), channels=3).reshape(H * W, 3)
    return _Geometry(grid, d2, row, col, texture.astype(np.float32))


def _positional(geo: _Geometry, sigma: float, ratio: float) -> np.ndarray:
    """log(1 + ratio * exp(-d^2 / 2 sigma^2)): a local kernel on a broad constant."""
    return np.log1p(ratio * np.exp(-geo.d2 / np.float32(2 * sigma ** 2))).astype(np.float32)


def _make_head(rng, kind: str, geo: _Geometry, noise: float) -> _Head:
    HW = geo.d2.shape[0]
    pos = _positional(geo, rng.uniform(1.0, 2.0), np.exp(rng.uniform(np.log(3), np.log(10))))
    base_noise = _LOGIT_NOISE * noise
    head = _Head(kind, pos, strength=rng.uniform(1.1, 1.7), noise_std=base_noise)
    if kind == "diffuse":
        head.pos = (pos * np.float32(rng.uniform(0.05, 0.15))).astype(np.float32)
        head.strength = 0.0
    elif kind == "noisy_instance":
        head.noise_std = float(np.hypot(base_noise, rng.uniform(1.8, 2.2)))
    elif kind == "local_narrow":
        head.width, head.strength = rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.6)
    elif kind == "local_wide":
        head.width, head.strength = rng.uniform(2.5, 4.0), rng.uniform(0.6, 1.0)
    elif kind == "halo":
        head.width = float(rng.integers(1, 3))
    elif kind == "texture":
        head.strength = rng.uniform(0.05, 0.1)
    elif kind == "axial":
        head.strength = rng.uniform(0.6, 1.0)
    elif kind == "sink":
        head.sinks = rng.choice(HW, size=int(rng.integers(1, 4)), replace=False)
        head.sink_mass = rng.uniform(0.5, 0.85)
    return head


def _same(a: np.ndarray) -> np.ndarray:
    """[HW, HW] bool: same non-zero id."""
    return (a[:, None] == a[None, :]) & (a[:, None] > 0)


def _region_ids(fr: _FrameTruth) -> np.ndarray:
    """[HW] background region id: 1 sky, 2 lawn, 0 on things."""
    bg = fr.things.ravel() == 0
    return np.where(bg, np.where(fr.lawn.ravel(), 2, 1), 0)


def _identity_content(ids: np.ndarray, fr: _FrameTruth, strength: float) -> np.ndarray:
    """Strong same-identity term plus a weak same-background-region term."""
    c = np.where(_same(ids), np.float32(strength), np.float32(0.0))
    c[_same(_region_ids(fr))] = np.float32(0.3 * strength)
    return c


def _content(head: _Head, fr: _FrameTruth, geo: _Geometry) -> np.ndarray | float:
    """[HW, HW] content logits of one head (or 0.0)."""
    kind, s = head.kind, np.float32(head.strength)
    things = fr.things.ravel()
    if kind in ("instance", "noisy_instance"):
        return _identity_content(things, fr, s)
    if kind == "part":
        ids = np.where(fr.part.ravel(), things + 1000, things)  # part: an identity of its own
        return _identity_content(ids, fr, s)
    if kind == "class":
        cls = np.select([(things >= 1) & (things <= fr.n), fr.clutter.ravel() > 0, things > 0], [1, 2, 3], 0)
        return _identity_content(cls, fr, s)
    if kind == "halo":
        sal = _dilate(fr.things > 0, int(head.width)).ravel().astype(np.int64)
        return np.where(_same(sal), s, np.float32(0.0))
    if kind == "edge":
        t = fr.things
        p = np.pad(t, 1, mode="edge")
        differs = (p[:-2, 1:-1] != t) | (p[2:, 1:-1] != t) | (p[1:-1, :-2] != t) | (p[1:-1, 2:] != t)
        inner = (t > 0) & differs
        return np.where(_same(inner.ravel().astype(np.int64)), s, np.float32(0.0))
    if kind in ("local_narrow", "local_wide"):
        return s * np.exp(-geo.d2 / np.float32(2 * head.width ** 2))
    if kind == "axial":
        same_line = (geo.row[:, None] == geo.row[None, :]) | (geo.col[:, None] == geo.col[None, :])
        return np.where(same_line, s, np.float32(0.0))
    if kind == "texture":
        f = geo.texture
        sq = (f ** 2).sum(axis=1)
        return -s * (sq[:, None] + sq[None, :] - 2.0 * f @ f.T)
    return 0.0  # sink (handled after noise), diffuse


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _add_sinks(logits: np.ndarray, head: _Head) -> None:
    """Set the sink columns so that they take ``sink_mass`` of every row together."""
    others = np.ones(logits.shape[1], dtype=bool)
    others[head.sinks] = False
    m = logits[:, others].max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(logits[:, others] - m).sum(axis=1, keepdims=True))
    target = lse + np.log(head.sink_mass / (1.0 - head.sink_mass)) - np.log(len(head.sinks))
    logits[:, head.sinks] = target.astype(np.float32)


def _self_head(rng, head: _Head, fr: _FrameTruth, geo: _Geometry, out: np.ndarray,
               scratch: np.ndarray) -> None:
    """Write one head's [HW, HW] float32 self-attention (rows sum to 1) into ``out``.

    ``scratch`` is a [HW, HW] float32 work buffer for the logit noise.
    """
    np.add(head.pos, _content(head, fr, geo), out=out, casting="unsafe")
    if head.noise_std > 0:
        rng.standard_normal(dtype=np.float32, out=scratch)
        scratch *= np.float32(head.noise_std)
        out += scratch
    if head.sinks is not None:
        _add_sinks(out, head)
    _softmax_rows(out)


def _self_attention(rng, heads, fr, geo) -> torch.Tensor:
    """[heads, HW, HW] float32 self-attention of one frame."""
    HW = geo.d2.shape[0]
    out = np.empty((len(heads), HW, HW), dtype=np.float32)
    scratch = np.empty((HW, HW), dtype=np.float32)
    for h, head in enumerate(heads):
        _self_head(rng, head, fr, geo, out[h], scratch)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------

def make_partial_scene(n: int, grid: tuple[int, int], n_frames: int = 3, noise: float = 0.5,
                       seed: int = 0, head_types: tuple[str, ...] | None = None) -> SyntheticScene:
    """A scene of ``n`` objects whose noun cross-attention focuses on one part of each.

    Args:
        n: number of objects of the counted noun, 0..8.
        grid: (H, W) tokens per frame, each >= 10, H * W >= 300 (e.g. (30, 52) or (15, 26)).
        n_frames: consecutive frames of the clip.
        noise: 0..1.5 (0.25 mild, 0.5 moderate, 1.0 heavy).
        seed: everything is drawn from ``np.random.default_rng(seed)``.
        head_types: names from ``PARTIAL_HEAD_TYPES`` (>= 12, exactly one "instance");
            None = ``PARTIAL_HEAD_TYPES``. Shuffled per scene; ``scene.head_types[k]``
            is the type of head k.

    Returns:
        A ``SyntheticScene`` whose frames hold ``self_attn`` [heads, HW, HW] float32
        (row softmaxes), ``cross_attn`` [heads, HW] float32 (non-negative) and
        ``labels`` [H, W] int32 (0 background, 1..n objects).
    """
    head_types = _check_args(n, grid, n_frames, noise, head_types)
    n, grid, noise = int(n), (int(grid[0]), int(grid[1])), float(noise)
    rng = np.random.default_rng(seed)
    order = tuple(head_types[i] for i in rng.permutation(len(head_types)))
    layout = _make_layout(rng, n, grid, n_frames)
    geo = _geometry(rng, grid)
    heads = [_make_head(rng, kind, geo, noise) for kind in order]
    style = _cross_style(rng, n, len(layout.clutter), len(heads))
    scene = SyntheticScene(grid=grid, noise=noise, head_types=order)
    for t in range(n_frames):
        fr = _frame_truth(layout, t)
        scene.frames.append(SyntheticFrame(
            self_attn=_self_attention(rng, heads, fr, geo),
            cross_attn=_cross_attention(rng, style, fr, noise, len(heads)),
            labels=fr.labels,
        ))
    return scene
