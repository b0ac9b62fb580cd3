"""Phase 2 as a plugin: layout-guided cross-attention.

:class:`GuidancePlan` turns the refined layouts into token indices once;
:class:`LayoutGuidance` applies it in the cross-attention of the conditional
branch of every block while ``config.guidance_active(step)``:

"The noun's columns" are those the plan was built with: the whole counted phrase under
``guide_tokens="phrase"`` (default), the noun alone under "noun" (paper).

* removed regions (with ``suppress_outside``, every row outside the noun's refined
  layout): the noun's columns are suppressed (``mode="suppress"``);
* circle additions: the noun's columns are boosted, with a strength set by
  ``config.boost_mode``: ``"mass"`` raises their softmax share on each added row and head
  to at least ``boost_mass * delta(t)`` (edit mode ``"share"``, solved per row from the
  log-sum-exp); ``"logit_spread"`` adds ``boost_spread * delta(t) * std(row logits)``;
  ``"absolute"`` adds the paper's ``boost_bias * delta(t)`` (``"boost"``);
* template-copy additions: the noun's pre-softmax scores are set to the mean
  score of the reference instance (per head, or shared by heads) times
  ``delta(t)`` (``"set"``).

The unconditional branch, text rows and every other column are untouched.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np
import torch

from ..attention import ColumnEdit, guided_attention, pre_softmax_scores, pre_softmax_spread
from ..hookspecs import hookimpl
from .config import NuminaConfig


@dataclass
class CopyGroup:
    """Template-copy additions of one frame: rows to set, rows of the reference instance."""

    rows: torch.Tensor  # [R] video token indices (frame offset included)
    reference_rows: torch.Tensor  # [Rref]


@dataclass
class NounPlan:
    columns: torch.Tensor  # [T] text token columns
    suppress_rows: torch.Tensor  # [R]
    boost_rows: torch.Tensor  # [R]
    copies: list = field(default_factory=list)  # list[CopyGroup]

    @property
    def empty(self) -> bool:
        return self.suppress_rows.numel() == 0 and self.boost_rows.numel() == 0 and not self.copies


@dataclass
class GuidancePlan:
    """Everything phase 2 changes, as token indices. ``nouns``: noun -> :class:`NounPlan`."""

    nouns: dict
    frame_tokens: int

    @property
    def empty(self) -> bool:
        return all(p.empty for p in self.nouns.values())


def _rows(mask: np.ndarray, frame: int, hw: int) -> torch.Tensor:
    return torch.from_numpy(np.flatnonzero(mask.reshape(-1)) + frame * hw).long()


def plan_from_refinement(refined: dict, columns: dict[str, list[int]], grid: tuple[int, int],
                         suppress_outside: bool | str = False, boost_copies: bool = False) -> GuidancePlan:
    """Build the plan from ``refine_layouts`` output: noun -> list of per-frame refinements.

    ``suppress_outside``: True suppresses each noun on every row of a frame outside its
    refined layout (``labels_after``), not only in its removed regions; "edited" does so
    only in frames where the noun's layout was edited (an instance added or removed).
    ``boost_copies``: copied additions are boosted like circles instead of copying their
    reference's score (``target_mode="boost"``)."""
    hw = grid[0] * grid[1]
    nouns = {}
    for noun, frames in refined.items():
        suppress, boost, copies = [], [], []
        for f, rf in enumerate(frames):
            added_here = np.zeros(grid, dtype=bool)
            for edit in rf.added:
                added_here |= edit.mask
                if edit.kind == "add_circle" or edit.reference is None or boost_copies:
                    boost.append(_rows(edit.mask, f, hw))
                else:
                    copies.append(CopyGroup(rows=_rows(edit.mask, f, hw), reference_rows=_rows(edit.reference, f, hw)))
            edited = bool(rf.added) or bool(rf.removed)
            if suppress_outside is True or (suppress_outside == "edited" and edited):
                suppress.append(_rows((rf.labels_after == 0) & ~added_here, f, hw))
                continue
            for mask in rf.removed:
                # an addition placed over a removed region wins there
                suppress.append(_rows(mask & ~added_here, f, hw))
        nouns[noun] = NounPlan(
            columns=torch.as_tensor(columns[noun], dtype=torch.long),
            suppress_rows=torch.cat(suppress) if suppress else torch.zeros(0, dtype=torch.long),
            # additions may share a patch (a frame left without background), a row is boosted once
            boost_rows=torch.unique(torch.cat(boost)) if boost else torch.zeros(0, dtype=torch.long),
            copies=[c for c in copies if c.rows.numel() and c.reference_rows.numel()],
        )
    return GuidancePlan(nouns=nouns, frame_tokens=hw)


def _overlap_split(plan: GuidancePlan) -> dict:
    """Per noun whose circle additions overlap another noun's: ``[1, R]`` = 1 / (number of
    nouns added on each of its boost rows), so that targets of boost_mode='mass' sharing a
    row sum to boost_mass * delta (each noun an equal part), never to 1 or more."""
    boosted = [(name, p.boost_rows) for name, p in plan.nouns.items() if p.boost_rows.numel()]
    if len(boosted) < 2:
        return {}
    every = torch.cat([rows for _, rows in boosted])
    rows, counts = torch.unique(every, return_counts=True)
    split = {}
    for name, mine in boosted:
        n = counts[torch.searchsorted(rows, mine)]
        if (n > 1).any():
            split[name] = (1.0 / n.float())[None, :]
    return split


# boost_mode -> (edit mode, placeholder value) of the cached boost edit
_BOOST_EDIT = {"mass": ("share", 0.5), "logit_spread": ("boost", 0.0), "absolute": ("boost", 0.0)}


def _local_edit(edit, shard, keep_empty: bool = False):
    """``edit`` restricted to the rows ``shard`` holds, in local indices, and the bool mask
    of the rows kept (None, None for no edit; None for an edit with no row here unless
    ``keep_empty``). A per-row value (``[Hs|1, R, ...]``) is restricted alike."""
    if edit is None:
        return None, None
    held, local = shard.local_rows(edit.rows)
    if local.numel() == 0 and not keep_empty:
        return None, held
    value = edit.value
    if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == edit.rows.numel():
        value = value[:, held]
    return dataclasses.replace(edit, rows=local, value=value), held


class LayoutGuidance:
    """Return the guided attention output for the cond rows of every cross view."""

    def __init__(self, plan: GuidancePlan, config: NuminaConfig, num_steps: int):
        self.plan = plan
        self.config = config
        self.num_steps = num_steps
        self.guided_calls = 0
        self.guided_steps: set[int] = set()
        self._cache: dict = {}  # (video offset, text offset, batch row) -> fixed edits per noun
        self._split = _overlap_split(plan)  # noun -> [1, R] share of the target where additions overlap
        self._step_edits = None  # (step and token layout, edits) when the step's layers share them

    def edits_for(self, view) -> list[ColumnEdit]:
        """The edits of one cross view (empty when guidance is off at this step)."""
        cfg = self.config
        step = view.step
        # the step-based schedule, so that guidance_floor means the same share of steps on
        # every model (a flow-matching sigma with Wan's shift stays high for ~80% of steps)
        if step is None or not cfg.guidance_active(step, self.num_steps):
            return []
        q0, c0 = view.video_queries.start, view.text_keys.start
        shard = getattr(view, "shard", None)
        batches = tuple(view.rows_of("cond"))
        key = (step, q0, c0, batches, None if shard is None else (shard.offset, shard.length))
        if self._step_edits is not None and self._step_edits[0] == key:
            return self._step_edits[1]  # every layer of a step gets the same edit objects
        delta = cfg.delta(step, self.num_steps)
        edits = []
        per_view = False  # values read from this view's q/k: not shared by the step's layers
        for batch in batches:
            for noun, fixed in self._fixed_edits(q0, c0, batch, shard):
                suppress, boost, copies, split = fixed
                if suppress is not None:
                    edits.append(suppress)
                if boost is not None:
                    edits.append(self._boost_edit(view, boost, delta, split))
                    per_view |= cfg.boost_mode == "logit_spread"
                if copies:
                    edits.extend(self._copy_edits(view, batch, copies, delta))
                    per_view = True
        self._step_edits = None if per_view else (key, edits)
        return edits

    def active(self, view) -> bool:
        """Whether this step of the plan edits anything, on any rank (under context
        parallelism every rank must then answer the call itself, even without local rows:
        the model's kernel would wait for the others)."""
        step = view.step
        return (step is not None and self.config.guidance_active(step, self.num_steps)
                and any(not p.empty for p in self.plan.nouns.values()))

    def _fixed_edits(self, q0: int, c0: int, batch: int, shard=None) -> list:
        """Per noun: (suppress edit, boost edit, [(set edit, reference rows)], boost split)
        with the token offsets of a view applied; built once per layout of the tokens, then
        reused. With a ``shard`` (context parallelism) the edited rows are this rank's, in
        local indices (an edit with none here is None; a set edit keeps its place with no
        rows, since its target is read from reference rows anywhere in the sequence)."""
        key = (q0, c0, batch, None if shard is None else (shard.offset, shard.length))
        cached = self._cache.get(key)
        if cached is None:
            cached = []
            for name, noun in self.plan.nouns.items():
                cols = noun.columns + c0
                split = self._split.get(name)
                suppress = ColumnEdit(batch, noun.suppress_rows + q0, cols, "suppress") \
                    if noun.suppress_rows.numel() else None
                boost = ColumnEdit(batch, noun.boost_rows + q0, cols, *_BOOST_EDIT[self.config.boost_mode]) \
                    if noun.boost_rows.numel() else None
                copies = [(ColumnEdit(batch, g.rows + q0, cols, "set", 0.0), g.reference_rows + q0) for g in noun.copies]
                if shard is not None:
                    suppress, _ = _local_edit(suppress, shard)
                    boost, held = _local_edit(boost, shard)
                    if split is not None and held is not None:
                        split = split[:, held]
                    copies = [(_local_edit(edit, shard, keep_empty=True)[0], ref) for edit, ref in copies]
                cached.append((name, (suppress, boost, copies, split)))
            self._cache[key] = cached
        return cached

    def _boost_edit(self, view, boost: ColumnEdit, delta: float, split=None) -> ColumnEdit:
        """The boost of circle additions at intensity ``delta``, in the configured units.

        ``split``: ``[1, R]`` fraction of the target share this noun takes on each row (``1/n``
        where the additions of ``n`` nouns overlap), or None where no addition overlaps."""
        cfg = self.config
        if cfg.boost_mode == "mass":
            target = cfg.boost_mass * delta  # target share of the noun's columns
            return boost.with_value(target if split is None else split * target)
        if cfg.boost_mode == "logit_spread":
            spread = pre_softmax_spread(view.q, view.k, boost.rows, boost.batch, view.scale)  # [H, R]
            return boost.with_value(spread * (cfg.boost_spread * delta))
        return boost.with_value(cfg.boost_bias * delta)

    def _copy_edits(self, view, batch: int, copies: list, delta: float) -> list[ColumnEdit]:
        """"set" edits whose targets are the mean reference scores, one score matmul for all groups."""
        cols = copies[0][0].columns
        refs = [ref for _, ref in copies]
        # reference rows index the whole sequence (gathered under context parallelism)
        q = view.full_q() if getattr(view, "shard", None) is not None else view.q
        scores = pre_softmax_scores(q, view.k, torch.cat(refs), cols, batch, view.scale)  # [H, sum R, T]
        out = []
        for (edit, _), part in zip(copies, scores.split([r.numel() for r in refs], dim=1)):
            if edit.rows.numel() == 0:  # none of its rows on this rank
                continue
            target = part.mean(dim=(1, 2))  # [heads]
            if self.config.target_mode == "shared":
                target = target.mean().expand_as(target)
            out.append(edit.with_value(target * delta))
        return out

    @hookimpl
    def on_attention(self, view):
        if view.kind != "cross":
            return None
        edits = self.edits_for(view)
        if not edits and not (getattr(view, "shard", None) is not None and self.active(view)):
            return None
        self.guided_calls += 1
        self.guided_steps.add(view.step)
        return guided_attention(view.q, view.k, view.v, edits, scale=view.scale, method=self.config.guidance)
