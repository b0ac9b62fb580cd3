"""A third family of synthetic attention scenes: softmax attention of token features.

The first two families write attention maps directly (``synthetic_scenes.py``: logits per head
type; ``synthetic_shared_scenes.py``: rows mixed from a shared and an own component). This one
computes them the way a transformer does, from the dot products of per-token query and key
features, so that their structure (and how noise enters it) comes from a different place:

- every patch token carries four feature groups, each a unit-scale vector: an *instance*
  embedding (one random direction per object, another for the background), a *category*
  embedding (one direction for all objects, another for the background), a *position*
  embedding (random Fourier features of the patch coordinates: their dot product is a Gaussian
  kernel of the distance, length scale 2.5 patches) and a *texture* (white noise, drawn anew for
  every head and frame). The instance and category groups are blurred over the grid (Gaussian,
  sigma 0.6 patches), so that a token on an object's edge is a mixture of both sides;
- head ``h``'s queries and keys are the feature groups weighed by the head's gains
  ``(instance, category, position, texture)``; its logits are ``q . k``, its map their softmax
  over the frame's keys. Head kinds (12 heads like Wan2.1-1.3B, order shuffled per scene):
  one *instance* head (instance and position gains), one *mixed* (a weaker instance gain on a
  category gain), two *category*, four *positional* (different gains), two *diffuse* (small
  gains), one *sink* (one key with a large bias that every row attends to) and one *texture*
  head (texture dominated). ``noise`` scales every head's texture gain;
- cross-attention of the noun: the softmax over 16 text tokens of ``features . token``, the
  noun's token aligned with the object category (several heads with their own gains, blur
  and a clutter field added to the noun's logit), read in the noun's column.

Objects are random blobs (``random_instance_masks``) that may be placed next to each other
(``close``) and drift across frames. Seeded: ``make_feature_scene(..., seed=s)`` is
reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from synthetic_scenes import SyntheticFrame, SyntheticScene, _gaussian_blur, moved_labels
from synthetic_shared_scenes import drifting_scene

__all__ = ["make_feature_scene", "FEATURE_HEAD_TYPES"]

FEATURE_HEAD_TYPES: tuple[str, ...] = (
    "instance", "mixed", "category", "category", "positional", "positional", "positional",
    "positional", "diffuse", "diffuse", "sink", "texture",
)

# gains (instance, category, position, texture) of each head kind; texture is scaled by noise
_GAINS = {
    "instance": (2.4, 0.6, 1.3, 1.0),
    "mixed": (1.2, 1.8, 1.2, 1.0),
    "category": (0.3, 2.2, 1.2, 1.0),
    "positional": (0.0, 0.4, 2.0, 1.0),
    "diffuse": (0.3, 0.3, 0.5, 0.6),
    "sink": (0.3, 0.5, 1.0, 1.0),
    "texture": (0.2, 0.3, 0.6, 2.2),
}
_DIM = 32  # per feature group
_LENGTH = 2.5  # position kernel length scale, patches


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, _DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _position_features(rng: np.random.Generator, grid: tuple[int, int]) -> np.ndarray:
    """Random Fourier features [H * W, DIM]: p_i . p_j ~ exp(-|y_i - y_j|^2 / (2 L^2))."""
    H, W = grid
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pos = np.stack([ys.ravel(), xs.ravel()], 1)
    omega = rng.normal(scale=1.0 / _LENGTH, size=(2, _DIM))
    phase = rng.uniform(0, 2 * np.pi, size=_DIM)
    return np.sqrt(2.0 / _DIM) * np.cos(pos @ omega + phase)


def _blurred(feat: np.ndarray, grid: tuple[int, int], sigma: float) -> np.ndarray:
    """Each feature channel of ``feat`` [H * W, D] blurred over the grid, rows renormalised."""
    H, W = grid
    img = feat.reshape(H, W, -1)
    out = np.stack([_gaussian_blur(img[..., c], sigma) for c in range(img.shape[-1])], -1)
    out = out.reshape(H * W, -1)
    return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9)


def _frame(rng: np.random.Generator, labels: np.ndarray, noise: float, types: tuple[str, ...],
           inst_emb: np.ndarray, cat_emb: np.ndarray, pos: np.ndarray, text: np.ndarray,
           clutter: np.ndarray, gen: torch.Generator, qk: list | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame's self- and cross-attention maps; with ``qk`` (a list), the queries and keys
    they are the softmax of (scale 1) are appended to it as a dict: ``self_q``/``self_k``
    ``[heads, N, 4 * DIM + 1]`` (the last channel carries the sink head's key bias) and
    ``cross_q`` ``[heads, N, DIM + 1]``/``cross_k`` ``[heads, T, DIM + 1]`` (the last channel
    carries the noun column's clutter and speckle). The random draws are the same either
    way, so a scene's maps do not depend on ``qk``."""
    H, W = labels.shape
    N = H * W
    lab = labels.reshape(-1)
    inst = _blurred(inst_emb[lab], (H, W), 0.6)
    cat = _blurred(cat_emb[(lab > 0).astype(np.int64)], (H, W), 0.6)
    groups = torch.from_numpy(np.stack([inst, cat, pos])).float()  # [3, N, D]
    heads, self_q, self_k = [], [], []
    for kind in types:
        gi, gc, gp, gt = _GAINS[kind]
        tex = torch.randn(N, _DIM, generator=gen) / np.sqrt(_DIM)
        # texture: off-diagonal logits of std gt^2 * noise, a self spike of sqrt(DIM) times that
        feat = torch.cat([gi * groups[0], gc * groups[1], gp * groups[2],
                          gt * np.sqrt(noise) * _DIM ** 0.25 * tex], 1)
        logits = feat @ feat.t()
        bias = torch.zeros(N, 1)
        if kind == "sink":
            key = int(rng.integers(N))
            logits[:, key] += 8.0
            bias[key] = 8.0
        heads.append(torch.softmax(logits, dim=-1))
        if qk is not None:
            self_q.append(torch.cat([feat, torch.ones(N, 1)], 1))
            self_k.append(torch.cat([feat, bias], 1))
    self_attn = torch.stack(heads)
    # cross-attention: features . text tokens, softmax over the tokens, the noun's column
    cross, cross_q = [], []
    for h in range(len(types)):
        gain = float(rng.uniform(1.2, 2.2))
        blur = float(rng.uniform(1.5, 2.5))
        c = _blurred(cat_emb[(lab > 0).astype(np.int64)], (H, W), blur)
        logits = gain * (c @ text.T)  # [N, T]
        extra = 1.2 * clutter.reshape(-1) + noise * 0.3 * rng.normal(size=N)
        logits[:, 0] += extra
        cross_q.append(np.concatenate([gain * c, extra[:, None]], 1))
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        cross.append(p[:, 0])
    cross_attn = torch.from_numpy(np.stack(cross).astype(np.float32))
    if qk is not None:
        column = np.zeros((len(text), 1))
        column[0] = 1.0  # the noun's column gets the clutter and speckle
        keys = torch.from_numpy(np.concatenate([text, column], 1)).float()
        qk.append({"self_q": torch.stack(self_q), "self_k": torch.stack(self_k),
                   "cross_q": torch.from_numpy(np.stack(cross_q)).float(),
                   "cross_k": keys[None].expand(len(types), -1, -1)})
    return self_attn, cross_attn


def make_feature_scene(n_instances: int, grid: tuple[int, int] = (30, 52), *, n_frames: int = 1,
                       noise: float = 0.5, seed: int = 0, drift: float = 0.5,
                       radius: tuple[float, float] | None = None, close: float = 0.3,
                       head_types: tuple[str, ...] = FEATURE_HEAD_TYPES,
                       shuffle_heads: bool = True, with_qk: bool = False,
                       shape: str = "blob") -> SyntheticScene:
    """A seeded scene of the feature family (see the module docstring).

    Args:
        n_instances: objects to place; fewer when the grid is too crowded (``frame.count``
            is always the truth).
        grid: (H, W) in patches.
        noise: scales every head's texture gain (0.25 mild, 0.5 moderate, 1.0 hard) and the
            cross-attention speckle.
        radius: blob radius range in patches; default (2, 4) scaled by H / 30 (at least
            (1.4, 2.4)).
        close: probability that a blob is placed next to an earlier one (a 1-patch seam).
        shuffle_heads: shuffle the head order per scene (the truth is in ``head_types``).
        with_qk: also keep each frame's queries and keys (``scene.qk``, one dict per frame:
            see ``_frame``), to feed the maps' own q/k to the layout reader.
        shape: the objects' shape, ``"blob"`` or ``"bar"`` (``synthetic_scenes.SHAPES``).
    """
    rng = np.random.default_rng(seed)
    masks, velocity, scene, gen = drifting_scene(rng, n_instances, grid, noise=noise, drift=drift,
                                                 radius=radius, close=close, head_types=head_types,
                                                 shuffle_heads=shuffle_heads, shape=shape)
    inst_emb = _unit(rng, len(masks) + 1)  # 0: background
    cat_emb = _unit(rng, 2)  # 0: background, 1: the objects' category
    pos = _position_features(rng, grid)
    text = _unit(rng, 16)
    text[0] = cat_emb[1] - cat_emb[0]  # the noun's token points at the category
    text[0] /= np.linalg.norm(text[0])
    field = _gaussian_blur(rng.normal(size=grid), 3.0)
    clutter = (field - field.min()) / (np.ptp(field) + 1e-9)
    scene.qk = [] if with_qk else None
    for f in range(n_frames):
        labels = moved_labels(masks, velocity, f, grid)
        self_attn, cross_attn = _frame(rng, labels, noise, scene.head_types, inst_emb, cat_emb,
                                       pos, text, clutter, gen, scene.qk)
        scene.frames.append(SyntheticFrame(self_attn, cross_attn, labels))
    return scene
