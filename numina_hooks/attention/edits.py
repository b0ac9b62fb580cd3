"""Column edits: what guidance does to the pre-softmax scores, and how edits combine.

A :class:`ColumnEdit` changes the scores ``s = q . k * scale`` of a few key columns
(a noun's text tokens) on a set of query rows (video tokens) of one batch row, for
all heads or a subset. A list of edits is reduced, per batch row, to a compact plan
over the union of edited rows ``U`` and the union of edited columns ``C``:
``[H, |U|, |C|]`` tensors, never ``[Lq, Lk]``.

Combining edits: edits are applied in list order and each one *assigns* its cells
``(head, row, column)``; on a cell named by several edits **the later edit wins**
(a later boost replaces an earlier boost, it does not add to it). Cells named by
no edit keep their score. Edits on disjoint cells (different nouns on the same
rows, different heads) simply coexist.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Union

import torch

Mode = Literal["suppress", "boost", "set"]
MODES = ("suppress", "boost", "set")

# cell kinds in a plan
UNEDITED, BOOST, SET, SUPPRESS = 0, 1, 2, 3
_KIND = {"boost": BOOST, "set": SET, "suppress": SUPPRESS}


def _as_index(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.numel() == 0 and t.ndim == 1:  # [] arrives as float32
        t = t.long()
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"ColumnEdit.{name} must hold integer indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"ColumnEdit.{name} must be 1-D, got shape {tuple(t.shape)}")
    t = t.to(torch.long).contiguous()
    if t.numel() and torch.unique(t).numel() != t.numel():
        raise ValueError(f"ColumnEdit.{name} has repeated indices: {t.tolist()[:16]}; pass each index once")
    return t


@dataclass(frozen=True, eq=False)
class ColumnEdit:
    """Change the scores of key ``columns`` on query ``rows`` of batch row ``batch``.

    :ivar batch: which batch row of ``q`` the edit applies to.
    :ivar rows: ``[R]`` query indices (video tokens) affected. Lists are accepted.
    :ivar columns: ``[T]`` key indices (text tokens) affected. Lists are accepted.
    :ivar mode:
        * ``"suppress"``: the columns are removed from those rows' softmax (a bias of
          ``-inf``; identical to ``-1e4`` for any realistic scores). ``value`` is ignored.
        * ``"boost"``: ``value`` is added to the scores (``b >= 0`` in the method,
          ``+k * delta(t)``; any finite sign is computed exactly).
        * ``"set"``: the scores are overwritten, ``s := value`` (a target pre-softmax
          score, e.g. the mean score of a reference instance, see
          :func:`pre_softmax_scores`). The implied bias ``value - s`` may be negative.
    :ivar value: scalar, or a tensor broadcast to ``[Hs, R, T]`` where ``Hs`` is the
        number of heads edited (``H`` when ``heads`` is None, else ``len(heads)``):

        * 0-d / Python number: one value for every head, row and column;
        * ``[Hs]``: per head (a 1-D value is always per head);
        * ``[Hs, R]``: per head and row; ``[1, R]``: per row, shared by all heads
          (the reference code's "shared" variant); ``[Hs, 1]``: per head;
        * ``[Hs|1, R|1, T|1]``: per column as well.
    :ivar heads: ``[Hs]`` head indices edited; None means all heads.
    """

    batch: int
    rows: torch.Tensor
    columns: torch.Tensor
    mode: Mode
    value: Union[float, torch.Tensor] = 0.0
    heads: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"ColumnEdit.mode must be one of {MODES}, got {self.mode!r}")
        is_int = isinstance(self.batch, int) and not isinstance(self.batch, bool)
        is_int_tensor = isinstance(self.batch, torch.Tensor) and self.batch.numel() == 1 and not self.batch.is_floating_point()
        if not (is_int or is_int_tensor):
            raise TypeError(f"ColumnEdit.batch must be an int, got {self.batch!r}")
        object.__setattr__(self, "batch", int(self.batch))
        object.__setattr__(self, "rows", _as_index(self.rows, "rows"))
        object.__setattr__(self, "columns", _as_index(self.columns, "columns"))
        if self.heads is not None:
            object.__setattr__(self, "heads", _as_index(self.heads, "heads"))
        self._check_value()

    def _check_value(self) -> None:
        value = self.value
        if isinstance(value, torch.Tensor):
            if value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"ColumnEdit.value must be real, got dtype {value.dtype}")
            if value.ndim > 3:
                raise ValueError(
                    f"ColumnEdit.value has shape {tuple(value.shape)}; expected a scalar, [Hs], [Hs, R] or [Hs, R, T]"
                )
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"ColumnEdit.value must be a number or a tensor, got {type(value).__name__}")
        elif self.mode != "suppress" and not math.isfinite(value):
            raise ValueError(f"ColumnEdit.value must be finite for mode {self.mode!r}, got {value}; use mode='suppress'")

    def with_value(self, value: Union[float, torch.Tensor]) -> "ColumnEdit":
        """The same edit (batch, rows, columns, heads already checked) with another ``value``.

        For callers that apply one edit structure many times with a value that changes per
        call (a guidance schedule): it skips re-checking the index tensors.
        """
        new = copy.copy(self)
        object.__setattr__(new, "value", value)
        new._check_value()
        return new

    @property
    def empty(self) -> bool:
        return self.rows.numel() == 0 or self.columns.numel() == 0 or (
            self.heads is not None and self.heads.numel() == 0
        )

    def head_index(self, num_heads: int) -> torch.Tensor:
        return torch.arange(num_heads) if self.heads is None else self.heads

    def value_grid(self, num_heads: int, dtype: torch.dtype, device) -> torch.Tensor:
        """``value`` broadcast to ``[Hs, R, T]`` (``dtype`` on ``device``)."""
        hs = num_heads if self.heads is None else self.heads.numel()
        r, t = self.rows.numel(), self.columns.numel()
        val = torch.as_tensor(self.value, dtype=dtype, device=device)
        shape = tuple(val.shape)
        if val.ndim == 1:
            if shape[0] not in (1, hs):
                raise ValueError(
                    f"ColumnEdit.value of shape {shape} is read as per-head and needs {hs} entries "
                    f"(heads edited); for one value per row shared by heads pass shape [1, {r}]"
                )
            val = val[:, None, None]
        elif val.ndim == 2:
            if shape[0] not in (1, hs) or shape[1] not in (1, r):
                raise ValueError(f"ColumnEdit.value of shape {shape} does not broadcast to [heads={hs}, rows={r}]")
            val = val[:, :, None]
        elif val.ndim == 3:
            if shape[0] not in (1, hs) or shape[1] not in (1, r) or shape[2] not in (1, t):
                raise ValueError(
                    f"ColumnEdit.value of shape {shape} does not broadcast to [heads={hs}, rows={r}, columns={t}]"
                )
        if self.mode != "suppress" and not torch.isfinite(val).all():
            raise ValueError(f"ColumnEdit.value must be finite for mode {self.mode!r}; use mode='suppress' to remove columns")
        return val.expand(hs, r, t)


def _scale(q: torch.Tensor, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision corrections are computed in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pre_softmax_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    rows,
    columns,
    batch: int,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Scores ``q . k * scale`` of key ``columns`` on query ``rows`` of batch row ``batch``.

    :param q: ``[B, H, Lq, d]``. :param k: ``[B, H, Lk, d]``.
    :param rows: ``[R]`` query indices. :param columns: ``[T]`` key indices.
    :param scale: softmax scale; None means ``1 / sqrt(d)``.
    :returns: ``[H, R, T]`` float32 (float64 for float64 inputs). Only ``H x R x T``
        scores are computed. The mean over ``rows`` of a reference instance is the
        natural "set" target (``ColumnEdit(mode="set", value=...)``).
    """
    f = compute_dtype(q.dtype)
    rows = torch.as_tensor(rows, dtype=torch.long, device=q.device)
    columns = torch.as_tensor(columns, dtype=torch.long, device=k.device)
    qr = q[batch].index_select(1, rows).to(f)
    kc = k[batch].index_select(1, columns).to(f)
    return torch.matmul(qr, kc.transpose(-1, -2)).mul_(_scale(q, scale))


@dataclass
class BatchPlan:
    """The combined edits of one batch row over ``rows x columns`` (unions).

    ``kind[h, i, j]`` is UNEDITED, BOOST, SET or SUPPRESS for head ``h``, query
    ``rows[i]``, key ``columns[j]``; ``value`` is the bias (BOOST) or target (SET).
    """

    batch: int
    rows: torch.Tensor  # [U] sorted
    columns: torch.Tensor  # [C] sorted
    kind: torch.Tensor  # [H, U, C] int8
    value: torch.Tensor  # [H, U, C] compute dtype

    def new_logits(self, scores: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Edited pre-softmax logits ``s + b`` for the plan's cells (``-inf`` = removed).

        :param scores: ``[H, n, C]`` unedited scores of ``self.rows[rows]``.
        """
        kind = self.kind[:, rows]
        val = self.value[:, rows]
        out = torch.where(kind == BOOST, scores + val, scores)
        out = torch.where(kind == SET, val, out)
        return out.masked_fill(kind == SUPPRESS, float("-inf"))


def validate(edits: Sequence[ColumnEdit], q: torch.Tensor, k: torch.Tensor) -> list[ColumnEdit]:
    """Check every edit against the shapes; returns the non-empty edits in order."""
    if q.ndim != 4 or k.ndim != 4:
        raise ValueError(f"q and k must be [B, H, L, d]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    kept = []
    for i, e in enumerate(edits):
        if not isinstance(e, ColumnEdit):
            raise TypeError(f"edits[{i}] is a {type(e).__name__}; expected ColumnEdit")
        if not 0 <= e.batch < b:
            raise IndexError(f"edits[{i}].batch = {e.batch} out of range for a batch of {b}")
        for name, idx, n in (("rows", e.rows, lq), ("columns", e.columns, lk)):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise IndexError(f"edits[{i}].{name} out of range [0, {n}): min {int(idx.min())}, max {int(idx.max())}")
        if e.heads is not None and e.heads.numel() and (int(e.heads.min()) < 0 or int(e.heads.max()) >= h):
            raise IndexError(f"edits[{i}].heads out of range [0, {h}): {e.heads.tolist()}")
        if not e.empty:
            kept.append(e)
    return kept


def build_plans(edits: Sequence[ColumnEdit], q: torch.Tensor, k: torch.Tensor) -> list[BatchPlan]:
    """Reduce validated, non-empty edits to one :class:`BatchPlan` per edited batch row."""
    h = q.shape[1]
    dev = q.device
    f = compute_dtype(q.dtype)
    plans = []
    for b in sorted({e.batch for e in edits}):
        mine = [e for e in edits if e.batch == b]
        rows = torch.unique(torch.cat([e.rows for e in mine])).to(dev)
        cols = torch.unique(torch.cat([e.columns for e in mine])).to(dev)
        kind = torch.zeros(h, rows.numel(), cols.numel(), dtype=torch.int8, device=dev)
        value = torch.zeros(h, rows.numel(), cols.numel(), dtype=f, device=dev)
        for e in mine:
            hi = e.head_index(h).to(dev)[:, None, None]
            ri = torch.searchsorted(rows, e.rows.to(dev))[None, :, None]
            ci = torch.searchsorted(cols, e.columns.to(dev))[None, None, :]
            kind[hi, ri, ci] = _KIND[e.mode]
            if e.mode != "suppress":
                value[hi, ri, ci] = e.value_grid(h, f, dev)
        if cols.numel() == k.shape[2]:
            gone = (kind == SUPPRESS).all(-1)
            if gone.any():
                hh, ii = gone.nonzero()[0].tolist()
                raise ValueError(
                    f"edits suppress every key of batch {b}, head {hh}, row {int(rows[ii])}: "
                    "the softmax of that row is undefined"
                )
        plans.append(BatchPlan(b, rows, cols, kind, value))
    return plans


def dense_bias(
    edits: Sequence[ColumnEdit], q: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None
) -> torch.Tensor:
    """The additive bias implied by ``edits``, materialised: ``[B, H, Lq, Lk]`` float32.

    The reference for tests and the fallback for backends with neither a bias nor a
    log-sum-exp: ``softmax(q k^T * scale + dense_bias(...)) v`` is what
    :func:`~numina_hooks.attention.guided_attention` computes. Suppressed cells are
    ``-inf``; "set" cells are ``target - s``. Allocates ``B*H*Lq*Lk`` floats.
    """
    edits = validate(edits, q, k)
    b, h, lq, _ = q.shape
    bias = torch.zeros(b, h, lq, k.shape[2], dtype=compute_dtype(q.dtype), device=q.device)
    for plan in build_plans(edits, q, k):
        s = pre_softmax_scores(q, k, plan.rows, plan.columns, plan.batch, scale)
        block = torch.where(plan.kind == BOOST, plan.value, torch.zeros_like(s))
        block = torch.where(plan.kind == SET, plan.value - s, block)
        block = block.masked_fill(plan.kind == SUPPRESS, float("-inf"))
        bias[plan.batch, :, plan.rows[:, None], plan.columns[None, :]] = block
    return bias if bias.dtype == torch.float64 else bias.float()
