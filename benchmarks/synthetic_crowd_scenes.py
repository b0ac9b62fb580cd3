"""The "crowd" synthetic scene family: herds of animals that touch, occlude and move.

Why this family. It was written without reading the counter or the other five families, as
an independent test of whether the counter generalises. Real Wan2.1 scenes with several
animals are hard in ways toy scenes often leave out: a herd stands in a crowd, nearer animals
cover parts of farther ones, animals lower in the frame are bigger, the noun token lights up
the heads more than the bodies and some animals only faintly, and other things of the same
colour pick up a little of the noun's attention. This family models that, and every map is
*computed* the way a DiT computes it: token features [HW, D] -> per-head q/k projections ->
2D rotary embedding -> softmax(q k^T / sqrt(64)); cross-attention: blurred token features ->
query projection -> softmax over 512 text-token keys (12 prompt tokens, 500 identical
zero-padding keys, like umT5 padded to 512) -> the noun token's column.

How each realism goal is met
- Crowding and occlusion: objects are sampled around 1-2 herd centres and may touch and
  overlap; they are painted far-to-near (depth = the row of the feet: lower is nearer). A
  placement or a move is only accepted while every object keeps >= 4 visible patches,
  >= 35 % of its in-frame area and one 4-connected piece, so the ground truth is always valid.
- Perspective: the body half-height grows linearly with the row, from the top to the bottom of
  the allowed band by up to 2.8x on 30x52 (less on small grids, where the largest objects
  would not fit).
- Parts: each object is an elliptic body plus a round head on the side it faces; the "part"
  feature block differs between heads and bodies.
- Cross-attention: a one-channel "noun evidence" feature ln(1 + s_k * h) with h = 20 on the
  head and 2.5 on the body, s_k in [0.4, 1] per object (one object has 1), so the peak of an
  object is about s_k of the strongest one; the noun key also points (weakly) at the noun's
  category, texture and head-part vectors. Queries are blurred with a per-head Gaussian
  (sigma 0.5-1.5 patches, i.e. 1-3 patches of spread) before the projection; the floor comes
  from the softmax against the other 511 tokens; 2-5 background "clutter" blobs of 1-3
  patches carry the noun's texture and weak evidence (s 0.1-0.3) and are never labelled.
  Measured at noise 0.5 (30x52, 6 objects): mean head/body ratio 1.2-2.5 (4 seeds; category,
  texture and instance heads), the per-object maximum on or next to the head in 89 % of
  (object, head) pairs (6 seeds, all heads), the faintest objects peaking at about 0.4-0.5 of
  the strongest, clutter patches at 1.3-3x the background floor (some blobs ~1x).
- Motion: each object has a direction (30 % stand still, else 1 patch left/right, or up/down)
  and pauses 25 % of frames, so it moves 0-1 patch per frame; it bounces at the border; a
  move that would break the ground-truth rules is dropped. Noise is correlated over frames
  (rho 0.6); identities, textures, sinks and clutter stay fixed.
- Every head's rows share a common component: each head puts some weight (logit peak 0.4-1,
  more in the positional kinds) on the rotary positional profile, most heads a little on the
  sink tokens, and the softmax of bounded logits keeps a diffuse floor.

Head types (CROWD_HEAD_TYPES; per-type logit gains in _SELF_GAINS, jittered +-15 % per head)
- instance: the per-object identity block (16-dim vectors, nearly orthogonal; 0.7 strength on
  object borders); the one head whose attention separates individual objects.
- category: the category block (noun / sky / ground): an object query attends to all objects.
- part: the part block: a head patch attends to the heads of all objects, a body to bodies.
- positional: local window from the rotary embedding only (sum of cos(freq * offset) over the
  fast rotary pairs, the bias feature in q and k): decays with distance, with ripples.
- row / column: rotary profile along one axis only (horizontal / vertical stripes).
- texture: the colour/texture block; objects and clutter share the noun's texture.
- sink: every query matches the sink channel of 1-2 background tokens (~90 % of row mass).
- diffuse: tiny gains everywhere: nearly uniform rows.
- mixed: identity + category + texture + part + position at moderate gains.
- scene: the layout block (above / below a horizon): two broad regions.
- category_local: category gated by position: nearby objects of the category.
All heads get independent random cross-talk in Wq and Wk (std 0.2). Content lives in the
slow rotary pairs (almost position-free over 52 patches), position in the fast ones, as in
a RoPE model. The head order is shuffled from the seed (scene.head_types gives it);
crowd_head_types(n) gives the 12 types then the 11 non-instance types repeated.

Noise. Every content block gets noise sigma = 0.7 * noise per channel (70 % of the variance
white, 30 % smoothed over 4 patches, so neighbouring objects can merge), then each block is
norm-capped at its clean length (a stand-in for Wan's q/k RMSNorm): noise turns features, so
heads blur rather than sharpen.

Calibration (separation_stats: for a query patch inside an object, attention per patch on the
rest of its own object / the largest attention per patch on any single other object; own
patch left out; 30x52, 5 objects, 6 seeds, frame 0; mean / median / share of queries > 1):

    noise   instance             positional           mixed                category
    0.25    12.94 / 7.34 / 0.97   4.23 / 3.10 / 0.95   6.01 / 4.27 / 0.92   1.32 / 1.15 / 0.65
    0.50     4.48 / 2.96 / 0.89   4.32 / 3.22 / 0.95   4.07 / 3.04 / 0.87   1.45 / 1.23 / 0.62
    1.00     2.62 / 1.78 / 0.76   4.27 / 3.23 / 0.95   3.34 / 2.39 / 0.83   1.59 / 1.25 / 0.61

With the identity gain of the instance head set to 0 (a control) its median is 1.03-1.06, so at
noise 1.0 the identity still adds clearly but not much. Caveat: the statistic rewards
locality too (the positional head scores ~3 because the rest of one's own object is nearer
than other objects): it compares a head with itself across noise levels, or heads of similar
locality, not heads of different kinds at high noise.

Generation time (torch.set_num_threads(1), 2-core AMD EPYC shared with another job): one
30x52 frame with 12 heads 0.27 s mean, 0.37 s max over 6 seeds; 5 frames 1.05 s. Every
grid with H, W >= 8 works (8 objects fit even on 8x8, heavily overlapped).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from synthetic_scenes import SyntheticFrame, SyntheticScene

CROWD_HEAD_TYPES: tuple[str, ...] = (
    "instance",
    "category",
    "part",
    "positional",
    "row",
    "column",
    "texture",
    "sink",
    "diffuse",
    "mixed",
    "scene",
    "category_local",
)

# ----------------------------------------------------------------------------------------
# feature layout of one visual token (D = 51 channels); every block holds unit-norm vectors
# ----------------------------------------------------------------------------------------
_BLOCKS = {  # name: (offset, width)
    "bias": (0, 1),  # constant 1 (what a learned projection bias acts on)
    "sink": (1, 1),  # massive activation on 1-2 background "register" tokens
    "inst": (2, 16),  # instance identity
    "cat": (18, 8),  # semantic category (the noun, sky, ground)
    "part": (26, 4),  # part type (head, body)
    "tex": (30, 8),  # colour / texture
    "layout": (38, 4),  # coarse scene layout (above / below the horizon)
    "ev": (42, 1),  # noun evidence read by the cross-attention (log-scale)
    "other": (43, 8),  # anything else (background detail)
}
_D = 51
_NOISY = ("inst", "cat", "part", "tex", "layout", "ev", "other")

_HEAD_DIM = 64  # 32 rotary pairs: 16 rotate with the row index, 16 with the column index
_N_PAIRS = 32
_FREQ = 10000.0 ** (-np.arange(16) / 16.0)  # per-axis pair frequencies, radians per patch
_POS_PAIRS = [i for i in range(9)] + [16 + i for i in range(9)]  # fast pairs: position
_CONTENT_PAIRS = [i for i in range(9, 16)] + [16 + i for i in range(9, 16)]  # slow: content
_POS_W = np.ones(9)  # weight of each fast pair in the positional profile
_TEXT_LEN = 512  # umT5 context, zero-padded
_PROMPT_LEN = 12  # real prompt tokens; the rest are padding
_NOUN_TOKEN = 3  # e.g. "a herd of <noun> ..."

# feature noise std per channel at noise=1.0 (calibrated, see the table in the docstring)
_SIGMA0 = 0.70

# self-attention logit gains per head type (logit units for unit-norm features);
# "pos" is the peak of the rotary local-window profile (split evenly over rows and columns)
_SELF_GAINS: dict[str, dict[str, float]] = {
    "instance": dict(inst=6.0, cat=0.8, part=0.3, tex=0.3, pos=1.0, sink=0.8),
    "category": dict(cat=5.0, tex=0.6, pos=1.0, sink=0.8),
    "part": dict(part=5.0, cat=1.0, pos=1.0, sink=0.8),
    "positional": dict(pos=6.0, cat=0.4, sink=0.5),
    "row": dict(pos_y=5.0, pos_x=0.4, cat=0.4, sink=0.5),
    "column": dict(pos_x=5.0, pos_y=0.4, cat=0.4, sink=0.5),
    "texture": dict(tex=5.0, pos=1.0, sink=0.8),
    "sink": dict(sink=9.0, pos=0.8, cat=0.3),
    "diffuse": dict(pos=0.4, cat=0.3, tex=0.3),
    "mixed": dict(inst=2.5, cat=2.0, tex=1.5, part=1.0, pos=2.5, sink=1.5),
    "scene": dict(layout=5.0, pos=1.0, sink=0.8),
    "category_local": dict(cat=3.5, pos=4.0, sink=0.5),
}

# cross-attention: weight of each feature on the noun token's logit, and the blur (Gaussian
# sigma, patches) of the queries (features already mixed over neighbours by earlier layers)
_CROSS: dict[str, dict[str, float]] = {
    "instance": dict(ev=0.8, cat=0.3, tex=0.3, part=0.2, blur=0.7),
    "category": dict(ev=1.0, cat=0.5, tex=0.3, part=0.1, blur=0.84),
    "part": dict(ev=1.0, cat=0.3, tex=0.2, part=0.6, blur=0.56),
    "positional": dict(ev=0.4, cat=0.2, tex=0.2, part=0.1, blur=1.12),
    "row": dict(ev=0.45, cat=0.2, tex=0.2, part=0.1, blur=0.98),
    "column": dict(ev=0.45, cat=0.2, tex=0.2, part=0.1, blur=0.98),
    "texture": dict(ev=0.8, cat=0.2, tex=1.4, part=0.1, blur=0.7),
    "sink": dict(ev=0.3, cat=0.1, tex=0.1, part=0.1, blur=1.12),
    "diffuse": dict(ev=0.25, cat=0.1, tex=0.1, part=0.0, blur=1.26),
    "mixed": dict(ev=0.9, cat=0.4, tex=0.5, part=0.3, blur=0.84),
    "scene": dict(ev=0.5, cat=0.3, tex=0.2, part=0.1, blur=1.05),
    "category_local": dict(ev=0.9, cat=0.5, tex=0.3, part=0.2, blur=0.7),
}

_H_HEAD, _H_BODY = 20.0, 2.5  # noun-evidence of a head / body patch of the most salient object
_FOUR = ndimage.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------
# layout: objects, occlusion, motion
# ----------------------------------------------------------------------------------------
class _Animal:
    """One object of the noun: an elliptic body and a round head on one side, facing left or right."""

    def __init__(self, cy: float, cx: float, ry: float, rx: float, facing: int, step: tuple[int, int]):
        self.cy, self.cx, self.ry, self.rx = cy, cx, ry, rx  # body centre and half-axes (patches)
        self.facing, self.step = facing, step  # head side (+1 right, -1 left), motion per frame
        self.rh = max(0.8, 0.5 * ry)

    def masks(self, dy: int, dx: int, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(head, body) boolean [H, W] masks with the body centre shifted by (dy, dx) patches."""
        cy, cx = self.cy + dy, self.cx + dx
        body = ((yy - cy) / self.ry) ** 2 + ((xx - cx) / self.rx) ** 2 <= 1.0
        hy, hx = cy - 0.6 * self.ry, cx + self.facing * 0.85 * self.rx
        head = (yy - hy) ** 2 + (xx - hx) ** 2 <= self.rh**2
        return head, body & ~head

    def depth_key(self, dy: int) -> float:
        """Larger = nearer to the camera (the lower the feet in the frame, the nearer)."""
        return self.cy + dy + self.ry


def _render(animals, offsets, grid) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Paint far-to-near. Returns labels [H, W] int32 (1..n), parts [H, W] int8 (0 bg, 1 body,
    2 head) and each object's unoccluded in-frame mask (list of [H, W] bool)."""
    H, W = grid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    labels = np.zeros((H, W), np.int32)
    parts = np.zeros((H, W), np.int8)
    full = []
    masks = [a.masks(dy, dx, yy, xx) for a, (dy, dx) in zip(animals, offsets)]
    for head, body in masks:
        full.append(head | body)
    order = sorted(range(len(animals)), key=lambda k: animals[k].depth_key(offsets[k][0]))
    for k in order:
        head, body = masks[k]
        labels[body] = k + 1
        parts[body] = 1
        labels[head] = k + 1
        parts[head] = 2
    return labels, parts, full


def _valid(labels: np.ndarray, full: list[np.ndarray]) -> bool:
    """Every object visible on >= 4 patches, >= 35% of its in-frame area, 4-connected."""
    for k, f in enumerate(full):
        vis = labels == k + 1
        n = int(vis.sum())
        if n < 4 or n < 0.35 * f.sum():
            return False
        if ndimage.label(vis, structure=_FOUR)[1] != 1:
            return False
    return True


def _place_animals(n: int, grid, rng: np.random.Generator) -> list[_Animal]:
    """Crowded placement: objects around 1-2 herd centres, perspective-scaled by their row,
    rejection-sampled until every object stays >= 4 patches, >= 35 % visible and 4-connected."""
    H, W = grid
    base = max(1.25, 1.25 * H / 30.0)  # body half-height of the farthest object
    max_scale = float(np.clip(H / (6.0 * base), 1.5, 2.8))
    y_lo, y_hi = 0.2 * H, 0.85 * H
    for _attempt in range(60):
        n_herds = 1 if n <= 3 else int(rng.integers(1, 3))
        herds = [(rng.uniform(0.45 * H, 0.75 * H), rng.uniform(0.25 * W, 0.75 * W)) for _ in range(n_herds)]
        animals: list[_Animal] = []
        for k in range(n):
            for _try in range(150):
                hy, hx = herds[int(rng.integers(n_herds))]
                cy = float(np.clip(hy + rng.normal(0, 0.18 * H), y_lo, y_hi))
                cx = float(rng.normal(hx, 0.18 * W))
                scale = 1.0 + (max_scale - 1.0) * (cy - y_lo) / (y_hi - y_lo)
                ry = base * scale
                rx = ry * rng.uniform(1.3, 1.6)
                if not (rx * 0.6 <= cx <= W - 1 - rx * 0.6 and ry * 0.6 <= cy <= H - 1 - ry * 0.3):
                    continue
                facing = 1 if rng.random() < 0.5 else -1
                u = rng.random()
                if u < 0.3:
                    step = (0, 0)
                elif u < 0.8:
                    step = (0, 1 if rng.random() < 0.5 else -1)
                else:
                    step = (1 if rng.random() < 0.5 else -1, 0)
                cand = _Animal(cy, cx, ry, rx, facing, step)
                trial = animals + [cand]
                labels, _, full = _render(trial, [(0, 0)] * len(trial), grid)
                if _valid(labels, full):
                    animals.append(cand)
                    break
            else:
                break
        if len(animals) == n:
            return animals
        base = max(1.0, base * 0.95)
    raise RuntimeError(f"could not place {n} objects on a {H}x{W} grid")


def _trajectories(animals, n_frames: int, grid, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """Move each object 0-1 patch per frame along its own direction (bouncing at the border);
    a move that would break the ground-truth rules is dropped. Returns (labels, parts) per frame."""
    H, W = grid
    offsets = [(0, 0)] * len(animals)
    labels, parts, _ = _render(animals, offsets, grid)
    out = [(labels, parts)]
    for _t in range(1, n_frames):
        proposal = []
        for k, a in enumerate(animals):
            dy, dx = offsets[k]
            sy, sx = a.step
            if rng.random() < 0.25:  # pauses now and then
                sy, sx = 0, 0
            ny, nx = a.cy + dy + sy, a.cx + dx + sx
            if not (a.rx * 0.6 <= nx <= W - 1 - a.rx * 0.6) or not (a.ry * 0.6 <= ny <= H - 1 - a.ry * 0.3):
                a.step = (-a.step[0], -a.step[1])
                sy, sx = 0, 0
            proposal.append((dy + sy, dx + sx))
        # accept moves one object at a time, keeping the frame valid
        cur = list(offsets)
        for k in rng.permutation(len(animals)):
            if proposal[k] == cur[k]:
                continue
            trial = list(cur)
            trial[k] = proposal[k]
            lab, _, full = _render(animals, trial, grid)
            if _valid(lab, full):
                cur = trial
        offsets = cur
        labels, parts, _ = _render(animals, offsets, grid)
        out.append((labels, parts))
    return out


# ----------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smooth_field(rng, grid, sigma: float, k: int) -> np.ndarray:
    """A [H, W, k] zero-mean, unit-std random field smoothed with a Gaussian of `sigma` patches."""
    f = ndimage.gaussian_filter(rng.normal(size=(*grid, k)), sigma=(sigma, sigma, 0), mode="reflect")
    return f / (f.std(axis=(0, 1), keepdims=True) + 1e-9)


class _World:
    """Scene-level appearance shared by every frame (the vectors of each block, background)."""

    def __init__(self, animals, grid, rng: np.random.Generator):
        H, W = grid
        n = len(animals)
        g = rng.normal(size=(16, 16))
        q, _ = np.linalg.qr(g)
        inst = q[:, :n].T if n else np.zeros((0, 16))
        self.inst = _unit(inst + 0.3 * rng.normal(size=inst.shape) / 4.0) if n else inst
        cats = _unit(rng.normal(size=(3, 8)))  # noun, sky, ground
        self.cat_noun, self.cat_sky, self.cat_ground = cats
        self.cat_obj = _unit(self.cat_noun + 0.25 * rng.normal(size=(n, 8)) / math.sqrt(8))
        self.part_head, self.part_body = _unit(rng.normal(size=(2, 4)))
        self.tex_noun = _unit(rng.normal(size=8))
        self.tex_obj = _unit(self.tex_noun + 0.35 * rng.normal(size=(n, 8)) / math.sqrt(8))
        tex_bg = _unit(rng.normal(size=(3, 8)))
        self.layout_sky, self.layout_ground = _unit(rng.normal(size=(2, 4)))
        self.salience = rng.uniform(0.4, 1.0, size=n)
        if n:
            self.salience[int(rng.integers(n))] = 1.0  # the most salient object sets the scale
        self.horizon = rng.uniform(0.2, 0.4) * H
        # background: sky above the horizon, ground below, mixed textures, detail
        yy = np.arange(H)[:, None] * np.ones((1, W))
        sky = 1.0 / (1.0 + np.exp((yy - self.horizon) / 0.8))  # [H, W] in 0..1
        self.bg = np.zeros((H, W, _D))
        self._put(self.bg, "bias", np.ones((H, W, 1)))
        self._put(self.bg, "cat", _unit(sky[..., None] * self.cat_sky + (1 - sky[..., None]) * self.cat_ground))
        w = np.exp(1.5 * _smooth_field(rng, grid, 3.0, 3))
        w = w / w.sum(-1, keepdims=True)
        self._put(self.bg, "tex", _unit(w @ tex_bg))
        self._put(self.bg, "layout", _unit(sky[..., None] * self.layout_sky + (1 - sky[..., None]) * self.layout_ground))
        self._put(self.bg, "other", 0.6 * _smooth_field(rng, grid, 2.0, 8) / math.sqrt(8))
        self.rng = rng

    @staticmethod
    def _put(x: np.ndarray, block: str, v: np.ndarray) -> None:
        o, w = _BLOCKS[block]
        x[..., o : o + w] = v

    def place_clutter(self, frames_labels: list[np.ndarray], grid) -> np.ndarray:
        """2-5 small blobs of background with the noun's texture (and weak noun evidence), on
        patches no object covers in any frame. Returns [H, W] float strength 0..1 (0 = none)."""
        H, W = grid
        rng = self.rng
        occupied = np.zeros(grid, bool)
        for lab in frames_labels:
            occupied |= ndimage.binary_dilation(lab > 0, structure=_FOUR)
        clutter = np.zeros(grid)
        free = np.argwhere(~occupied)
        if len(free) == 0:
            return clutter
        for _ in range(int(rng.integers(2, 6))):
            y, x = free[int(rng.integers(len(free)))]
            strength = rng.uniform(0.1, 0.3)
            clutter[y, x] = strength
            for _k in range(int(rng.integers(0, 3))):  # grow to 1-3 patches
                dy, dx = [(0, 1), (1, 0), (0, -1), (-1, 0)][int(rng.integers(4))]
                yy, xx = y + dy, x + dx
                if 0 <= yy < H and 0 <= xx < W and not occupied[yy, xx]:
                    clutter[yy, xx] = strength
        return clutter

    def place_sinks(self, frames_labels, clutter, grid) -> list[tuple[int, int]]:
        """1-2 sink tokens on background far from every object and clutter patch."""
        occupied = np.zeros(grid, bool)
        for lab in frames_labels:
            occupied |= lab > 0
        occupied |= clutter > 0
        dist = ndimage.distance_transform_edt(~occupied) if occupied.any() else np.ones(grid)
        cands = np.argwhere(dist >= max(1.0, 0.5 * dist.max()))
        picks = self.rng.choice(len(cands), size=min(len(cands), int(self.rng.integers(1, 3))), replace=False)
        return [tuple(int(v) for v in cands[i]) for i in picks]

    def features(self, labels, parts, clutter, sinks) -> np.ndarray:
        """Clean token features [H, W, D] of one frame (before blending and noise)."""
        x = self.bg.copy()
        # clutter: background category, the noun's texture, weak noun evidence
        cm = clutter > 0
        if cm.any():
            t = _unit(self.tex_noun + 0.3 * self.rng.normal(size=(int(cm.sum()), 8)) / math.sqrt(8))
            o, w = _BLOCKS["tex"]
            x[cm, o : o + w] = t
            o, _ = _BLOCKS["ev"]
            x[cm, o] = np.log1p(clutter[cm] * _H_HEAD)
        # objects: boundary patches carry a weaker identity (mixed with their surroundings)
        inner = ndimage.minimum_filter(labels, footprint=_FOUR, mode="nearest") == ndimage.maximum_filter(
            labels, footprint=_FOUR, mode="nearest"
        )
        for k in range(len(self.inst)):
            m = labels == k + 1
            strength = np.where(inner[m], 1.0, 0.7)[:, None]
            head = parts[m] == 2
            self_put = {
                "inst": strength * self.inst[k],
                "cat": np.broadcast_to(self.cat_obj[k], (int(m.sum()), 8)),
                "part": np.where(head[:, None], self.part_head, self.part_body),
                "tex": np.broadcast_to(self.tex_obj[k], (int(m.sum()), 8)),
                "layout": np.broadcast_to(self.layout_ground, (int(m.sum()), 4)),
                "ev": np.log1p(self.salience[k] * np.where(head, _H_HEAD, _H_BODY))[:, None],
                "other": np.zeros((int(m.sum()), 8)),
            }
            for b, v in self_put.items():
                o, w = _BLOCKS[b]
                x[m, o : o + w] = v
        o, _ = _BLOCKS["sink"]
        for y, xx in sinks:
            x[y, xx, o] = 1.0
        return x


def _blend(x: np.ndarray) -> np.ndarray:
    """Patch mixing at boundaries (VAE / patchify): 0.6 self + 0.1 each 4-neighbour, on the
    content channels only."""
    out = x.copy()
    k = np.array([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]])
    for b in _NOISY:
        o, w = _BLOCKS[b]
        for c in range(o, o + w):
            out[..., c] = ndimage.convolve(x[..., c], k, mode="nearest")
    return out


def _add_noise(x: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Add noise eta [H, W, D] to the content blocks of x [H, W, D], then norm-cap each block
    (a stand-in for the q/k RMSNorm of Wan): noise turns a block's direction but never makes
    it longer than its clean length (or 0.5 where the block is empty, e.g. the identity of a
    background patch). So more noise blurs the heads rather than sharpening them."""
    out = x.copy()
    for b in _NOISY:
        o, w = _BLOCKS[b]
        clean = x[..., o : o + w]
        noisy = clean + eta[..., o : o + w]
        cap = np.maximum(np.linalg.norm(clean, axis=-1, keepdims=True), 0.5)
        norm = np.linalg.norm(noisy, axis=-1, keepdims=True)
        out[..., o : o + w] = noisy * np.minimum(1.0, cap / np.maximum(norm, 1e-9))
    return out


# ----------------------------------------------------------------------------------------
# heads: projections, rotary embedding, attention
# ----------------------------------------------------------------------------------------
def _rope_angles(grid) -> torch.Tensor:
    """[HW, 32] rotation angle of each rotary pair at each token (row-major tokens)."""
    H, W = grid
    py = np.repeat(np.arange(H), W).astype(np.float64)
    px = np.tile(np.arange(W), H).astype(np.float64)
    ang = np.concatenate([py[:, None] * _FREQ[None], px[:, None] * _FREQ[None]], axis=1)
    return torch.from_numpy(ang).float()


def _rope(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive dim pairs of v [HW, 64] by the angles behind cos/sin [HW, 32]."""
    a, b = v[:, 0::2], v[:, 1::2]
    out = torch.empty_like(v)
    out[:, 0::2] = a * cos - b * sin
    out[:, 1::2] = a * sin + b * cos
    return out


def _pair_dims(pairs) -> list[int]:
    return [d for p in pairs for d in (2 * p, 2 * p + 1)]


class _Head:
    """One self-attention head and its cross-attention twin: Wq, Wk [D, 64] (self), Wx [D, 64]
    and text keys [512, 64] (cross)."""

    def __init__(self, kind: str, rng: np.random.Generator):
        self.kind = kind
        jit = lambda: rng.uniform(0.85, 1.15)  # noqa: E731
        gains = {k: v * jit() for k, v in _SELF_GAINS[kind].items()}
        scale = math.sqrt(_HEAD_DIM)
        wq = np.zeros((_D, _HEAD_DIM))
        wk = np.zeros((_D, _HEAD_DIM))
        cdims = _pair_dims(_CONTENT_PAIRS)  # 28 slowly rotating dims
        for block in ("inst", "cat", "part", "tex", "layout"):
            if block not in gains:
                continue
            o, w = _BLOCKS[block]
            r = np.linalg.qr(rng.normal(size=(len(cdims), w)))[0].T  # [w, 28] orthonormal rows
            a = math.sqrt(gains[block] * scale)
            wq[o : o + w, cdims] += a * r
            wk[o : o + w, cdims] += a * r
        if "sink" in gains:  # every query (bias) matches the sink channel of the keys
            r = _unit(rng.normal(size=len(cdims)))
            a = math.sqrt(gains["sink"] * scale)
            wq[_BLOCKS["bias"][0], cdims] += a * r
            wk[_BLOCKS["sink"][0], cdims] += a * r
        # positional: the bias feature in the fast rotary pairs -> sum of cos(freq * offset)
        py = gains.get("pos_y", gains.get("pos", 0.0) / 2)
        px = gains.get("pos_x", gains.get("pos", 0.0) / 2)
        for axis_peak, pairs in ((py, range(9)), (px, range(16, 25))):
            wsum = _POS_W.sum()
            for i, p in enumerate(pairs):
                a = math.sqrt(axis_peak * _POS_W[i] / wsum * scale)
                wq[_BLOCKS["bias"][0], 2 * p] += a
                wk[_BLOCKS["bias"][0], 2 * p] += a
        # learned weights are never clean: independent random cross-talk in q and k
        eps = 0.2
        wq += eps * rng.normal(size=wq.shape)
        wk += eps * rng.normal(size=wk.shape)
        self.wq = torch.from_numpy(wq).float()
        self.wk = torch.from_numpy(wk).float()

        # cross-attention: an inner-product-preserving query map plus cross-talk, noun key
        cx = {k: v * jit() for k, v in _CROSS[kind].items()}
        self.blur = cx.pop("blur")  # Gaussian sigma in patches
        qx = np.linalg.qr(rng.normal(size=(_HEAD_DIM, _D)))[0][:, :_D].T  # [D, 64], orthonormal rows
        wx = qx + 0.08 * rng.normal(size=qx.shape)
        v_noun = np.zeros(_D)
        v_noun[_BLOCKS["ev"][0]] = cx["ev"]
        self._noun_parts = cx
        keys = np.zeros((_TEXT_LEN, _D))
        keys[:_PROMPT_LEN] = 0.7 * rng.normal(size=(_PROMPT_LEN, _D)) / math.sqrt(_D / 4)
        keys[:_PROMPT_LEN, 0] += rng.normal(0.0, 0.5, size=_PROMPT_LEN)
        keys[_PROMPT_LEN:] = 0.05 * rng.normal(size=_D)  # zero padding -> one shared (bias) key
        self._v_noun = v_noun
        self.wx = torch.from_numpy(wx).float()
        self._keys_feat = keys
        self._qx = qx

    def set_noun(self, world: _World) -> None:
        """Build the text keys [512, 64]: the noun's key points at the noun's evidence, category,
        texture and head-part directions (as a trained cross-attention would)."""
        v = self._v_noun.copy()
        for block, vec in (("cat", world.cat_noun), ("tex", world.tex_noun), ("part", world.part_head)):
            o, w = _BLOCKS[block]
            v[o : o + w] += self._noun_parts[block] * vec
        keys = self._keys_feat.copy()
        keys[_NOUN_TOKEN] = v
        self.text_keys = torch.from_numpy(keys @ self._qx * math.sqrt(_HEAD_DIM)).float()


def _gauss_matrix(n: int, sigma: float) -> torch.Tensor:
    """[n, n] row-normalised Gaussian blur along one axis."""
    d = np.arange(n)[:, None] - np.arange(n)[None]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return torch.from_numpy(g / g.sum(1, keepdims=True)).float()


def _frame_attention(x: np.ndarray, heads: list[_Head], grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention [nh, HW, HW] and noun cross-attention [nh, HW] from features x [H, W, D]."""
    H, W = grid
    hw = H * W
    xt = torch.from_numpy(x.reshape(hw, _D)).float()
    ang = _rope_angles(grid)
    cos, sin = torch.cos(ang), torch.sin(ang)
    scale = 1.0 / math.sqrt(_HEAD_DIM)
    self_attn = torch.empty((len(heads), hw, hw), dtype=torch.float32)
    cross = torch.empty((len(heads), hw), dtype=torch.float32)
    x3 = torch.from_numpy(x).float()
    blur_cache: dict[float, torch.Tensor] = {}
    for h, head in enumerate(heads):
        q = _rope(xt @ head.wq, cos, sin)
        k = _rope(xt @ head.wk, cos, sin)
        self_attn[h] = torch.softmax((q @ k.T) * scale, dim=-1)
        key = round(head.blur, 3)
        if key not in blur_cache:
            gy, gx = _gauss_matrix(H, head.blur), _gauss_matrix(W, head.blur)
            blur_cache[key] = torch.einsum("ah,hwd,bw->abd", gy, x3, gx).reshape(hw, _D)
        qx = blur_cache[key] @ head.wx
        cross[h] = torch.softmax((qx @ head.text_keys.T) * scale, dim=-1)[:, _NOUN_TOKEN]
    return self_attn, cross


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------
def _head_order(head_types, rng) -> tuple[str, ...]:
    if head_types is None:
        head_types = CROWD_HEAD_TYPES
    head_types = tuple(head_types)
    unknown = set(head_types) - set(_SELF_GAINS)
    if unknown:
        raise ValueError(f"unknown head types {sorted(unknown)}")
    perm = rng.permutation(len(head_types))
    return tuple(head_types[i] for i in perm)


def crowd_head_types(n_heads: int) -> tuple[str, ...]:
    """The 12 types, then the 11 non-instance types repeated, up to `n_heads` entries."""
    rest = [t for t in CROWD_HEAD_TYPES if t != "instance"]
    out = list(CROWD_HEAD_TYPES[:n_heads])
    i = 0
    while len(out) < n_heads:
        out.append(rest[i % len(rest)])
        i += 1
    return tuple(out)


def make_crowd_scene(
    n_instances: int,
    grid: tuple[int, int] = (30, 52),
    *,
    n_frames: int = 1,
    noise: float = 0.5,
    seed: int = 0,
    head_types: tuple[str, ...] | None = None,
) -> SyntheticScene:
    """A crowd scene of `n_instances` (0..8) animals on an H x W latent grid (H, W >= 8).

    Each frame has self_attn [heads, H*W, H*W] (rows sum to 1), cross_attn [heads, H*W] (the
    noun token's column of a softmax over 512 text tokens) and labels [H, W] int32 (0 background,
    1..n objects, every object >= 4 patches and 4-connected in every frame). Heads are
    `head_types` (default CROWD_HEAD_TYPES) in an order shuffled from `seed`, stored in
    `scene.head_types`. Deterministic in all arguments.
    """
    H, W = grid
    if H < 8 or W < 8:
        raise ValueError("grid must be at least 8x8")
    if not 0 <= n_instances <= 8:
        raise ValueError("n_instances must be in 0..8")
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    rng = np.random.default_rng([seed, n_instances, H, W, 7331])
    order = _head_order(head_types, rng)
    animals = _place_animals(n_instances, grid, rng) if n_instances else []
    frames_lp = _trajectories(animals, n_frames, grid, rng)
    world = _World(animals, grid, rng)
    clutter = world.place_clutter([lab for lab, _ in frames_lp], grid)
    sinks = world.place_sinks([lab for lab, _ in frames_lp], clutter, grid)
    heads = []
    for kind in order:
        hd = _Head(kind, rng)
        hd.set_noun(world)
        heads.append(hd)
    sigma = _SIGMA0 * noise
    scene = SyntheticScene(grid=(H, W), noise=noise, head_types=order)
    prev = None
    for labels, parts in frames_lp:
        x = _blend(world.features(labels, parts, clutter, sinks))
        # half white, half spatially smooth noise, correlated over time (rho 0.6)
        fresh = math.sqrt(0.7) * rng.normal(size=(H, W, _D)) + math.sqrt(0.3) * _smooth_field(rng, grid, 4.0, _D)
        eta = fresh if prev is None else 0.6 * prev + 0.8 * fresh
        prev = eta
        x = _add_noise(x, sigma * eta)
        sa, ca = _frame_attention(x, heads, grid)
        scene.frames.append(SyntheticFrame(self_attn=sa, cross_attn=ca, labels=labels.astype(np.int32)))
    return scene


def separation_stats(attn: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Calibration statistic of one head: attn [HW, HW] self-attention, labels [H, W].

    For every query patch inside an object: the attention *per patch* it puts on the other
    patches of its own object (its own patch left out: a head whose q and k share content always
    favours the diagonal, which says nothing about objects), divided by the largest attention
    per patch it puts on any single other object (per patch = size-normalised, "an object of
    the same size"). Returns {"mean", "median", "above_1"} over all object queries (above_1:
    the share of queries whose ratio exceeds 1); NaNs with fewer than two objects.
    """
    lab = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    n = int(lab.max())
    if n < 2:
        return {"mean": float("nan"), "median": float("nan"), "above_1": float("nan")}
    a = attn.float().clone()
    a.fill_diagonal_(0.0)
    onehot = torch.nn.functional.one_hot(lab, n + 1)[:, 1:].float()  # [HW, n]
    size = onehot.sum(0)  # [n]
    qi = lab > 0
    mass = (a @ onehot)[qi]  # [Q, n] attention of each object query on each object
    own_idx = lab[qi] - 1
    own = mass.gather(1, own_idx[:, None])[:, 0] / (size[own_idx] - 1)
    other = (mass / size).scatter(1, own_idx[:, None], float("-inf")).max(1).values
    r = own / other
    return {"mean": float(r.mean()), "median": float(r.median()), "above_1": float((r > 1).float().mean())}


def separation_ratio(attn: torch.Tensor, labels: np.ndarray) -> float:
    """The median of separation_stats (robust to a few near-empty rows): attn [HW, HW], labels [H, W]."""
    return separation_stats(attn, labels)["median"]
