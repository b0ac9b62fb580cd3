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

``"share"`` edits are the one kind whose bias depends on the row: each one raises the
joint softmax share of its columns to at least ``value``, with one bias for all its
columns, solved in closed form from the row's log-sum-exp ``L`` and the scores of the
edited columns only (see :func:`share_biases`). It is how guidance states a strength that
means the same on every model ("the noun holds at least 40% of the attention here").
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Union

import torch

Mode = Literal["suppress", "boost", "set", "share"]
MODES = ("suppress", "boost", "set", "share")

# cell kinds in a plan
UNEDITED, BOOST, SET, SUPPRESS, SHARE = 0, 1, 2, 3, 4
_KIND = {"boost": BOOST, "set": SET, "suppress": SUPPRESS, "share": SHARE}


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
          ``-inf``: the columns get exactly zero weight). ``value`` is ignored.
        * ``"boost"``: ``value`` is added to the scores (``b >= 0`` in the method,
          ``+k * delta(t)``; any finite sign is computed exactly).
        * ``"set"``: the scores are overwritten, ``s := value`` (a target pre-softmax
          score, e.g. the mean score of a reference instance, see
          :func:`pre_softmax_scores`). The implied bias ``value - s`` may be negative.
        * ``"share"``: ``value`` is a target share ``p`` in (0, 1): on each edited
          (head, row), one bias ``b >= 0`` is added to all the edit's columns, the
          smallest that makes their joint softmax share at least ``p``
          (``b = max(0, logit(p) - logit(share before))``, from the row's log-sum-exp).
          Rows already at ``p`` or above keep their scores. The share is exact after
          every other edit of the row; several share edits on one row are solved jointly
          (their targets must sum to less than 1). ``value`` may vary per head and row,
          not per column.
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
        elif self.mode == "share" and not 0.0 < value < 1.0:
            raise ValueError(
                f"ColumnEdit.value={value} is not a share: mode 'share' takes a target softmax share "
                "strictly between 0 and 1 (e.g. 0.4)"
            )

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
        if self.mode == "share":
            if val.ndim == 3 and val.shape[2] != 1:
                raise ValueError(
                    f"ColumnEdit.value of shape {shape} varies per column; mode 'share' takes one target "
                    f"share per head and row: pass a scalar, [{hs}], [{hs}, {r}] or [1, {r}]"
                )
            if not ((val > 0) & (val < 1)).all():
                bad = val[~((val > 0) & (val < 1))].flatten()[:4].tolist()
                raise ValueError(
                    f"ColumnEdit.value holds {bad}, not shares: mode 'share' takes target softmax shares "
                    "strictly between 0 and 1"
                )
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


def pre_softmax_spread(
    q: torch.Tensor,
    k: torch.Tensor,
    rows,
    batch: int,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Standard deviation over all keys of the scores ``q . k * scale`` of query ``rows``.

    :param q: ``[B, H, Lq, d]``. :param k: ``[B, H, Lk, d]``. :param rows: ``[R]`` query indices.
    :returns: ``[H, R]`` float32 (float64 for float64 inputs): the spread of each row's
        logits, the scale guidance biases can be stated in. Exact, from the keys' mean and
        centred second moment (``[H, d, d]``): no ``[R, Lk]`` score tensor is formed.
    """
    f = compute_dtype(q.dtype)
    rows = torch.as_tensor(rows, dtype=torch.long, device=q.device)
    qr = q[batch].index_select(1, rows).to(f)  # [H, R, d]
    kb = k[batch].to(f)  # [H, Lk, d]
    kc = kb - kb.mean(dim=1, keepdim=True)
    cov = torch.matmul(kc.transpose(-1, -2), kc) / kb.shape[1]  # [H, d, d]
    var = (torch.matmul(qr, cov) * qr).sum(-1).clamp_min(0)  # [H, R]
    return var.sqrt().mul_(_scale(q, scale))


class ShareLayout:
    """What the share solve needs of a plan's structure and targets, computed once per plan
    (the plan cache hands every layer of a step the same refilled plan): per (head, row),
    ``[H, n, ...]``.

    share: bool ``[H, n, C]`` the share cells (not_share: the others); slot: long ``[H, n, C]``
    each cell's group, the spare slot G for cells outside every group; gather: long
    ``[H, n, C]`` each cell's group clamped to 0 (for reading a group's bias back); has: bool
    ``[H, n, G]`` the group has a cell in the row (no_cell: it has none); target: ``[H, n, G]``
    its target share (0 where none); log_target: its log; log_free: ``[H, n]`` the log of
    what every group's target leaves of the row, ``log(1 - sum_g target)``.
    """

    __slots__ = ("share", "not_share", "slot", "gather", "has", "no_cell", "has_all", "target",
                 "log_target", "log_free")

    def __init__(self, kind: torch.Tensor, value: torch.Tensor, group: torch.Tensor, n_groups: int):
        self.share = kind == SHARE
        self.not_share = ~self.share
        self.slot = group.long() % (n_groups + 1)  # -1 (no group) -> the spare slot G
        self.gather = group.clamp_min(0).long()
        shape = (*kind.shape[:-1], n_groups + 1)
        present = torch.zeros(shape, dtype=value.dtype, device=value.device)
        present = present.scatter_reduce_(-1, self.slot, torch.ones_like(value), "amax", include_self=True)
        self.has_all = present > 0  # [H, n, G + 1], the spare slot included
        self.has = self.has_all[..., :n_groups]
        self.no_cell = ~self.has
        target = torch.zeros(shape, dtype=value.dtype, device=value.device)
        self.target = target.scatter_reduce_(-1, self.slot, value, "amax", include_self=True)[..., :n_groups]
        self.log_target = torch.log(self.target)
        self.log_free = torch.log(1 - (self.target * self.has).sum(-1))

    def rows(self, sl: slice) -> "ShareLayout":
        """The same for the plan's rows ``sl`` (views)."""
        if sl == slice(None):
            return self
        out = ShareLayout.__new__(ShareLayout)
        for name in self.__slots__:
            setattr(out, name, getattr(self, name)[:, sl])
        return out


def _group_log_mass(a: torch.Tensor, layout: ShareLayout, n_groups: int) -> torch.Tensor:
    """Per (head, row, share group): the log-sum-exp of ``a`` over the group's cells (-inf
    for none), ``[H, n, G]``; cells outside every group go to a spare slot G that is
    dropped."""
    shape = (*a.shape[:-1], n_groups + 1)
    peak = torch.full(shape, float("-inf"), dtype=a.dtype, device=a.device)
    peak = peak.scatter_reduce_(-1, layout.slot, a, "amax", include_self=True)
    peak = peak.masked_fill_(~layout.has_all, 0.0)
    mass = torch.zeros(shape, dtype=a.dtype, device=a.device)
    mass = mass.scatter_add_(-1, layout.slot, torch.exp(a - peak.gather(-1, layout.slot)))
    return (torch.log(mass) + peak)[..., :n_groups]


def share_biases(
    scores: torch.Tensor,
    edited: torch.Tensor,
    lse: torch.Tensor,
    kind: torch.Tensor,
    value: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    layout: Optional[ShareLayout] = None,
) -> torch.Tensor:
    """The bias of every "share" cell, solved in closed form per (head, row).

    :param scores: ``[H, n, C]`` unedited scores of the plan's columns.
    :param edited: ``[H, n, C]`` the same after every other edit (share cells unchanged).
    :param lse: ``[H, n, 1]`` log-sum-exp of the unedited rows over *all* keys.
    :param kind: ``[H, n, C]`` cell kinds; :param value: ``[H, n, C]`` target shares.
    :param group: ``[H, n, C]`` index of the share edit owning each cell, -1 elsewhere.
    :param layout: ``ShareLayout(kind, value, group, n_groups)`` when the caller keeps one
        (made here otherwise).
    :returns: ``[H, n, C]`` bias, 0 outside share cells.

    With ``E_g`` the mass of group g's columns and ``R`` the rest of the row after the
    other edits (both relative to ``e^L``), a group given bias ``b_g`` holds
    ``e^{b_g} E_g / Z``. Boosting the groups of a set ``A`` to exactly their targets gives
    ``Z = (R + sum_{g not in A} E_g) / (1 - sum_{g in A} p_g)`` and
    ``b_g = log(p_g Z / E_g)``; groups whose ``b_g`` comes out negative already exceed
    their target: they leave ``A`` and the solve repeats (at most ``n_groups`` times).
    """
    lay = layout if layout is not None else ShareLayout(kind, value, group, n_groups)
    neg = float("-inf")
    share = lay.share
    a = scores - lse  # log mass of each cell before any edit, relative to the row (<= 0)
    a_other_new = (edited - lse).masked_fill_(share, neg)
    m = a_other_new.amax(-1, keepdim=True).clamp_min_(0)  # every exponential below is <= 1
    # the row's mass outside the share cells after the other edits: all of it (e^-m), less
    # the plan's cells before any edit, plus its non-share cells after theirs
    rest = torch.exp(-m) - torch.exp(a - m).sum(-1, keepdim=True) + torch.exp(a_other_new.sub_(m)).sum(-1, keepdim=True)
    log_rest = (torch.log(rest.clamp_min_(0)) + m)[..., 0]  # [H, n]; -inf when nothing else is left
    log_e = _group_log_mass(a, lay, n_groups)  # [H, n, G]
    log_p_e = lay.log_target - log_e
    # every group with a cell boosted (A = all of them: nothing of theirs is left in the
    # numerator), the common case and the first round of the solve
    b = log_p_e + (log_rest - lay.log_free)[..., None]
    drop = lay.has & ~(b >= 0)  # NaN-safe
    if drop.any():
        active = lay.has & ~drop
        for _ in range(n_groups):
            others = torch.logsumexp(log_e.masked_fill(active | lay.no_cell, neg), -1)
            num = torch.logaddexp(log_rest, others)
            den = 1 - (lay.target * active).sum(-1)
            b = log_p_e + (num - torch.log(den))[..., None]
            drop = active & ~(b >= 0)
            if not drop.any():
                break
            active &= ~drop
        b = torch.where(active, b, torch.zeros_like(b))
    # a share cell reads its own group's bias (a group with a cell, so b is defined there)
    return torch.gather(b, -1, lay.gather).masked_fill_(lay.not_share, 0.0)


@dataclass
class BatchPlan:
    """The combined edits of one batch row over ``rows x columns`` (unions).

    ``kind[h, i, j]`` is UNEDITED, BOOST, SET, SUPPRESS or SHARE for head ``h``, query
    ``rows[i]``, key ``columns[j]``; ``value`` is the bias (BOOST), target (SET) or
    target share (SHARE). ``group[h, i, j]`` numbers the share edit owning a SHARE cell
    (-1 elsewhere; None when the plan has no share edit).
    """

    batch: int
    rows: torch.Tensor  # [U] sorted
    columns: torch.Tensor  # [C] sorted
    kind: torch.Tensor  # [H, U, C] int8
    value: torch.Tensor  # [H, U, C] compute dtype
    group: Optional[torch.Tensor] = None  # [H, U, C] int16
    n_groups: int = 0
    #: derived from ``kind`` and ``value`` on first use (the plan's tensors are not changed
    #: after it is made: a refill makes a new plan)
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def _masks(self) -> tuple:
        """(boost, set, suppress) bool ``[H, U, C]`` and ``changed`` bool ``[H, U]`` (any
        edited cell)."""
        got = self._derived.get("masks")
        if got is None:
            kind = self.kind
            got = self._derived["masks"] = (kind == BOOST, kind == SET, kind == SUPPRESS,
                                            (kind != UNEDITED).any(-1))
        return got

    def suppressed_cells(self, rows: slice = slice(None)) -> torch.Tensor:
        """bool ``[H, n, C]``: the suppressed cells of ``self.rows[rows]``."""
        return self._masks()[2][:, rows]

    def changed_rows(self, rows: slice = slice(None)) -> torch.Tensor:
        """bool ``[H, n]``: the (head, row)s of ``self.rows[rows]`` with an edited cell."""
        return self._masks()[3][:, rows]

    def share_layout(self, rows: slice = slice(None)) -> ShareLayout:
        got = self._derived.get("share")
        if got is None:
            got = self._derived["share"] = ShareLayout(self.kind, self.value, self.group, self.n_groups)
        return got.rows(rows)

    def new_logits(
        self, scores: torch.Tensor, rows: slice = slice(None), lse: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Edited pre-softmax logits ``s + b`` for the plan's cells (``-inf`` = removed).

        :param scores: ``[H, n, C]`` unedited scores of ``self.rows[rows]``.
        :param lse: ``[H, n, 1]`` the rows' log-sum-exp over all keys; needed only by
            share edits.
        """
        boost, set_, suppress, _ = self._masks()
        val = self.value[:, rows]
        out = torch.where(boost[:, rows], scores + val, scores)
        out = torch.where(set_[:, rows], val, out)
        out = out.masked_fill(suppress[:, rows], float("-inf"))
        if self.n_groups:
            if lse is None:
                raise ValueError("share edits need the rows' log-sum-exp: pass lse=[H, n, 1]")
            out = out + share_biases(scores, out, lse, self.kind[:, rows], val, self.group[:, rows],
                                     self.n_groups, self.share_layout(rows))
        return out


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
        group = None
        n_groups = 0
        if any(e.mode == "share" for e in mine):
            group = torch.full((h, rows.numel(), cols.numel()), -1, dtype=torch.int16, device=dev)
        for e in mine:
            hi = e.head_index(h).to(dev)[:, None, None]
            ri = torch.searchsorted(rows, e.rows.to(dev))[None, :, None]
            ci = torch.searchsorted(cols, e.columns.to(dev))[None, None, :]
            kind[hi, ri, ci] = _KIND[e.mode]
            if e.mode != "suppress":
                value[hi, ri, ci] = e.value_grid(h, f, dev)
            if group is not None:
                group[hi, ri, ci] = n_groups if e.mode == "share" else -1
                n_groups += e.mode == "share"
        if n_groups > 1:
            total = sum(value.masked_fill(group != g, 0).amax(-1) for g in range(n_groups))  # [H, U]
            if (total >= 1).any():
                hh, ii = (total >= 1).nonzero()[0].tolist()
                raise ValueError(
                    f"share edits on batch {b}, head {hh}, row {int(rows[ii])} ask for shares summing to "
                    f"{float(total[hh, ii]):.3g}; targets of edits sharing a row must sum to less than 1"
                )
        if cols.numel() == k.shape[2]:
            gone = (kind == SUPPRESS).all(-1)
            if gone.any():
                hh, ii = gone.nonzero()[0].tolist()
                raise ValueError(
                    f"edits suppress every key of batch {b}, head {hh}, row {int(rows[ii])}: "
                    "the softmax of that row is undefined"
                )
        plans.append(BatchPlan(b, rows, cols, kind, value, group, n_groups))
    return plans


def dense_bias(
    edits: Sequence[ColumnEdit], q: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None
) -> torch.Tensor:
    """The additive bias implied by ``edits``, materialised: ``[B, H, Lq, Lk]`` float32.

    The reference for tests and the fallback for backends with neither a bias nor a
    log-sum-exp: ``softmax(q k^T * scale + dense_bias(...)) v`` is what
    :func:`~numina_hooks.attention.guided_attention` computes. Suppressed cells are
    ``-inf``; "set" cells are ``target - s``; "share" cells the solved bias (from the
    rows' log-sum-exp, computed here from all their scores). Allocates ``B*H*Lq*Lk`` floats.
    """
    edits = validate(edits, q, k)
    b, h, lq, _ = q.shape
    bias = torch.zeros(b, h, lq, k.shape[2], dtype=compute_dtype(q.dtype), device=q.device)
    for plan in build_plans(edits, q, k):
        s = pre_softmax_scores(q, k, plan.rows, plan.columns, plan.batch, scale)
        block = torch.where(plan.kind == BOOST, plan.value, torch.zeros_like(s))
        block = torch.where(plan.kind == SET, plan.value - s, block)
        block = block.masked_fill(plan.kind == SUPPRESS, float("-inf"))
        if plan.n_groups:
            every_key = torch.arange(k.shape[2], device=k.device)
            lse = torch.logsumexp(pre_softmax_scores(q, k, plan.rows, every_key, plan.batch, scale), -1, keepdim=True)
            block = torch.where(plan.kind == SHARE, plan.new_logits(s, lse=lse) - s, block)
        bias[plan.batch, :, plan.rows[:, None], plan.columns[None, :]] = block
    return bias if bias.dtype == torch.float64 else bias.float()
