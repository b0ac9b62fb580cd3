"""Layout refinement across frames (paper section 4.2, eqs. 5-6).

Per frame, for one noun: while there are too many instances, remove the smallest; while too
few, add one, copying the smallest existing instance as template (a circle of radius
``circle_radius`` when there is none), centred at the argmin over a grid of candidate centres
(spacing ``placement_stride``) of

    C(c) = Co + Cc + lambda * Ct  (lambda = ``temporal_weight``)

- Co: overlap of the placed template with the existing layout, grown by one patch so that a
  new instance never touches (and merges with) an existing one. Overlap is ranked first
  (lexicographically): a candidate with less overlap always wins, so nothing is pasted over
  an existing instance while free space exists.
- Cc: squared distance from the candidate to the centroid of the layout's foreground (the
  frame centre when empty), divided by the squared frame diagonal (so it lies in [0, 1]).
- Ct: squared distance to the centre of the same added instance in the previous frame (the
  j-th addition of a frame follows the j-th of the previous one), divided the same way; 0
  in the first frame.

Added instances stay put: when the previous frame's centre is still collision-free it is kept
as is (the centroid term would otherwise drag the instance a little every frame).
Pixels are painted only where the layout is background; the painted region is the largest
4-connected part of the placed template. Everything removed or added is kept as named data in
``RefinedFrame``.

Borrowed layouts (``borrow_layouts``, not in the paper): before refining, a frame whose
instance count differs from the temporal vote of the counts (the median over ``2 *
temporal_window + 1`` frames, as phase 1 votes) starts from the layout of the nearest frame
whose own count equals that vote (the earlier one on a tie), when there is one: instances
persist across frames, so a frame read with one object missing or split is refined like its
neighbours instead of getting an addition or removal of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from .config import NuminaConfig
from .partition import _grow, grid_disc, temporal_vote

__all__ = ["Edit", "RefinedFrame", "refine_layouts", "refine_frame", "layout_counts",
           "instance_masks", "borrowed_sources"]


@dataclass
class Edit:
    """One added instance.

    kind: "add_copy" (template copied from an existing instance) or "add_circle".
    mask: bool [H, W], the pixels painted as the new instance.
    reference: bool [H, W], the instance the template was copied from (add_copy), else None.
        Phase 2 uses its mean attention score as the target for ``mask``.
    centre: (row, col) of the template centre where it was placed.
    """
    kind: Literal["add_copy", "add_circle"]
    mask: np.ndarray
    reference: np.ndarray | None
    centre: tuple[float, float]

    def __repr__(self) -> str:
        """One line: the kind, where it was placed and how many patches it paints."""
        return (f"Edit(kind={self.kind!r}, centre=({self.centre[0]:g}, {self.centre[1]:g}), "
                f"patches={int(np.count_nonzero(self.mask))})")


@dataclass
class RefinedFrame:
    """The refinement of one frame for one noun.

    labels_before / labels_after: int32 [H, W]; labels_after numbers instances 1..n in raster
    order of their first pixel. removed: bool masks of the removed instances (phase 2 suppresses
    the noun there). added: the additions, in order. borrowed_from: the frame whose layout
    this frame was refined from (``borrow_layouts``; then ``labels_before`` is that layout),
    None when it was its own.
    """
    labels_before: np.ndarray
    labels_after: np.ndarray
    removed: list[np.ndarray] = field(default_factory=list)
    added: list[Edit] = field(default_factory=list)
    borrowed_from: int | None = None

    @property
    def count_before(self) -> int:
        return layout_count(self.labels_before)

    @property
    def count_after(self) -> int:
        return layout_count(self.labels_after)

    def __repr__(self) -> str:
        """One line: the counts before and after, what was removed and added (the arrays
        themselves are the fields)."""
        borrowed = "" if self.borrowed_from is None else f", borrowed_from={self.borrowed_from}"
        return (f"RefinedFrame(count {self.count_before} -> {self.count_after}, removed={len(self.removed)}, "
                f"added={self.added!r}{borrowed})")


def layout_count(labels: np.ndarray) -> int:
    """Number of distinct instance labels (> 0)."""
    return int(np.unique(labels[labels > 0]).size)


def layout_counts(layouts: Sequence) -> list[int]:
    """Instance count of each layout (label arrays or objects with ``.labels``)."""
    return [layout_count(np.asarray(getattr(x, "labels", x))) for x in layouts]


def instance_masks(labels: np.ndarray) -> list[np.ndarray]:
    """Bool masks of the instances, in label order."""
    return [labels == k for k in np.unique(labels[labels > 0])]


def _relabel(labels: np.ndarray) -> np.ndarray:
    flat = labels.ravel()
    out = np.zeros_like(flat, dtype=np.int32)
    fg = np.flatnonzero(flat > 0)
    if fg.size:
        values, first = np.unique(flat[fg], return_index=True)
        order = values[np.argsort(first)]
        lut = {v: i + 1 for i, v in enumerate(order)}
        out[fg] = np.vectorize(lut.get, otypes=[np.int32])(flat[fg])
    return out.reshape(labels.shape)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label
    lab, k = label(mask)
    if k <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _template(labels: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(template offsets [k, 2] relative to its centre, reference mask or None)."""
    masks = instance_masks(labels)
    if masks:
        sizes = [int(m.sum()) for m in masks]
        ref = masks[int(np.argmin(sizes))]
        pts = np.argwhere(ref).astype(np.float64)
        centre = np.round(pts.mean(0))
        return (pts - centre).astype(np.int64), ref
    disc = grid_disc(radius)
    return (np.argwhere(disc) - disc.shape[0] // 2).astype(np.int64), None


def _place(offsets: np.ndarray, centre: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    pts = offsets + np.asarray(centre, dtype=np.int64)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < shape[0]) & (pts[:, 1] >= 0) & (pts[:, 1] < shape[1])
    m = np.zeros(shape, dtype=bool)
    m[pts[ok, 0], pts[ok, 1]] = True
    return m


def _attention_cost(attention: np.ndarray, py: np.ndarray, px: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per candidate: 1 - the mean of ``attention`` (``[H, W]``, scaled to [0, 1] over the
    frame) under its template points inside the frame (``py``, ``px``, ``inside`` ``[C, k]``)."""
    a = np.asarray(attention, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    under = (a[py, px] * inside).sum(1) / np.maximum(inside.sum(1), 1)
    return 1.0 - under


def _add_one(labels: np.ndarray, cfg: NuminaConfig, previous: tuple[float, float] | None,
             attention: np.ndarray | None = None) -> Edit:
    H, W = labels.shape
    offsets, reference = _template(labels, cfg.circle_radius)
    occupied = labels > 0
    blocked = _grow(occupied)
    fg = np.argwhere(occupied)
    c0 = fg.mean(0) if len(fg) else np.array([(H - 1) / 2, (W - 1) / 2])
    diag2 = float(H * H + W * W)
    # candidate centres: a grid, restricted to where the whole template fits if possible
    lo = np.maximum(-offsets.min(0), 0)
    hi = np.array([H - 1, W - 1]) - np.maximum(offsets.max(0), 0)
    if (hi < lo).any():
        lo, hi = np.array([0, 0]), np.array([H - 1, W - 1])
    s = cfg.placement_stride
    ys = np.arange(lo[0], hi[0] + 1, s)
    xs = np.arange(lo[1], hi[1] + 1, s)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    cands = np.stack([cy.ravel(), cx.ravel()], 1)
    if previous is not None:  # the previous centre is always a candidate
        cands = np.vstack([np.round(previous).astype(np.int64)[None], cands])
        cands[0] = np.clip(cands[0], 0, [H - 1, W - 1])
    # overlap of every candidate placement with the grown layout, via the template points
    pts = cands[:, None, :] + offsets[None, :, :]  # [C, k, 2]
    inside = ((pts[..., 0] >= 0) & (pts[..., 0] < H) & (pts[..., 1] >= 0) & (pts[..., 1] < W))
    py = np.clip(pts[..., 0], 0, H - 1)
    px = np.clip(pts[..., 1], 0, W - 1)
    hard = (occupied[py, px] & inside).sum(1)  # pixels of existing instances covered
    soft = (blocked[py, px] & inside).sum(1)  # ... or touched
    outside = (~inside).sum(1)
    cc = ((cands - c0) ** 2).sum(1) / diag2
    ct = ((cands - np.asarray(previous)) ** 2).sum(1) / diag2 if previous is not None else 0.0
    cost = cc + cfg.temporal_weight * ct
    if attention is not None and cfg.placement_attention > 0:
        cost = cost + cfg.placement_attention * _attention_cost(attention, py, px, inside)
    if previous is not None and hard[0] == 0 and soft[0] == 0 and outside[0] == 0:
        best = 0  # stays put
    else:
        best = int(np.lexsort((cost, soft, hard, outside))[0])
    centre = (int(cands[best, 0]), int(cands[best, 1]))
    placed = _place(offsets, centre, (H, W))
    paint = _largest_component(placed & ~occupied)
    if not paint.any():  # no background left under any template: take one pixel
        paint = np.zeros((H, W), dtype=bool)
        free = np.argwhere(~occupied)
        if len(free):
            d = ((free - np.asarray(centre)) ** 2).sum(1)
            y, x = free[int(np.argmin(d))]
        else:  # every pixel belongs to an instance: split one pixel off the largest
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            big = int(np.argmax(sizes))
            if sizes[big] < 2:
                raise ValueError("refine: no room for another instance (every pixel is "
                                 "already a one-pixel instance)")
            y, x = np.argwhere(labels == big)[-1]
        paint[y, x] = True
    kind = "add_copy" if reference is not None else "add_circle"
    return Edit(kind=kind, mask=paint, reference=reference, centre=(float(centre[0]), float(centre[1])))


def refine_frame(labels: np.ndarray, target: int, config: NuminaConfig | None = None,
                 previous_centres: Sequence[tuple[float, float]] = (),
                 attention: np.ndarray | None = None) -> RefinedFrame:
    """Refine one frame's layout to ``target`` instances (see the module docstring).
    ``previous_centres``: centres of the additions in the previous frame, in order.
    ``attention``: the noun's cross-attention map of the frame ``[H, W]`` (used when
    ``config.placement_attention > 0``)."""
    cfg = NuminaConfig.given(config, "refine_frame")
    before = np.asarray(labels)
    if before.ndim != 2:
        raise ValueError(f"refine: labels must be a 2-D [H, W] array, got shape {before.shape}")
    if not np.issubdtype(before.dtype, np.integer):
        raise ValueError(f"refine: labels must be integers (0 background), got {before.dtype}")
    if attention is not None and np.shape(attention) != before.shape:
        raise ValueError(f"refine: attention has shape {np.shape(attention)}; expected the layout's "
                         f"{before.shape} (the noun's cross-attention map of this frame)")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        if not (isinstance(target, (float, np.floating)) and float(target).is_integer()):
            raise ValueError(f"refine: target={target!r} must be a whole number of instances "
                             f"(an int in 0..{before.size})")
    if int(target) < 0 or int(target) > before.size:
        raise ValueError(f"refine: target={target!r} must be in 0..{before.size} (the number of "
                         f"patches of a {before.shape} layout)")
    target = int(target)
    work = np.where(before > 0, before, 0).astype(np.int64)
    frame = RefinedFrame(labels_before=before.astype(np.int32).copy(), labels_after=work)
    while layout_count(work) > target:
        masks = instance_masks(work)
        sizes = [int(m.sum()) for m in masks]
        smallest = masks[int(np.argmin(sizes))]
        frame.removed.append(smallest.copy())
        work[smallest] = 0
    next_id = int(work.max()) + 1
    while layout_count(work) < target:
        j = len(frame.added)
        prev = previous_centres[j] if j < len(previous_centres) else None
        edit = _add_one(work, cfg, prev, attention)
        work[edit.mask] = next_id
        next_id += 1
        frame.added.append(edit)
    frame.labels_after = _relabel(work)
    return frame


def borrowed_sources(counts: Sequence[int], window: int) -> list[int]:
    """For each frame, the frame whose layout it is refined from (see the module docstring):
    itself when its count equals its temporal vote over ``window``, else the nearest frame
    whose own count equals that vote (the earlier one on a tie), else itself."""
    counts = [int(c) for c in counts]
    votes = temporal_vote(counts, window)
    out = []
    for f, (c, v) in enumerate(zip(counts, votes)):
        if c == v:
            out.append(f)
            continue
        agree = [g for g in range(len(counts)) if counts[g] == v]
        out.append(min(agree, key=lambda g: (abs(g - f), g)) if agree else f)
    return out


def refine_layouts(layouts: Sequence, target: int, config: NuminaConfig | None = None,
                   attention: Sequence | None = None) -> list[RefinedFrame]:
    """Refine the layouts of one noun, one per frame in temporal order, to ``target``
    instances each. ``layouts``: int label arrays [H, W] (or ``Layout`` objects). With
    ``config.borrow_layouts`` a frame whose count differs from the temporal vote starts from
    a neighbour's layout (:func:`borrowed_sources`). Additions follow their counterpart of
    the previous frame (temporal term, weight ``config.temporal_weight``). ``attention``: the
    noun's cross-attention map ``[H, W]`` of each frame (``config.placement_attention``)."""
    cfg = NuminaConfig.given(config, "refine_layouts")
    frames = [np.asarray(getattr(layout, "labels", layout)) for layout in layouts]
    sources = borrowed_sources([layout_count(f) for f in frames], cfg.temporal_window) \
        if cfg.borrow_layouts else list(range(len(frames)))
    out: list[RefinedFrame] = []
    previous: list[tuple[float, float]] = []
    for f, src in enumerate(sources):
        frame = refine_frame(frames[src], target, cfg, previous,
                             None if attention is None else attention[f])  # this frame's map
        if src != f:
            frame.borrowed_from = src
        out.append(frame)
        if frame.added:
            previous = [e.centre for e in frame.added]
    return out
