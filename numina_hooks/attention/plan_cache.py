"""Edit plans reused across calls: build the index structure once, refill the values.

Guidance applies the same edit structure (rows, columns, heads, modes of one layout)
to every cross-attention layer of every guided step; only the values change with the
step. :class:`PlanCache` keys a structure on the identity and in-place version of the
edits' index tensors, so a hit skips what costs per call: the range checks (a read of
each index tensor's min and max, a device sync on GPU), the unions, the searchsorted
positions and the kind/group scatters. A hit refills only the ``[H, U, C]`` values, and
not even those when the values are the ones of the entry's last call (the same numbers,
or the same value tensors unchanged in place): guidance passes one step's edits to every
layer of that step. The cache holds the index and value tensors it keys on, so their ids
cannot be reused while an entry stands.
"""

from __future__ import annotations

import numbers
import threading
from collections import OrderedDict
from typing import Optional, Sequence

import torch

from .edits import BatchPlan, ColumnEdit, build_plans, compute_dtype, validate

#: structures kept (a few per layout of the tokens is what guidance needs)
MAX_ENTRIES = 8


def _index_key(t: Optional[torch.Tensor]):
    return None if t is None else (id(t), t._version)


def _value_key(edits):
    """What identifies the edits' values: numbers by value, tensors by identity and in-place version."""
    return tuple(
        (id(e.value), e.value._version) if isinstance(e.value, torch.Tensor) else float(e.value) for e in edits
    )


class _Entry:
    __slots__ = ("held", "kept", "plans", "slots", "last")

    def __init__(self, held, kept, plans, slots):
        self.held = held  # the index tensors keyed on (kept alive)
        self.kept = kept  # positions of the non-empty edits
        self.plans = plans  # BatchPlan per edited batch row, structure only (value None)
        self.slots = slots  # per plan: [(edit position, (hi, ri, ci))] of the edits that carry a value
        self.last = None  # (value key, the values keyed on (kept alive), refilled plans) of the last hit


class PlanCache:
    """``plans(edits, q, k)`` -> ``(non-empty edits, [BatchPlan])``, equal to
    ``validate`` + ``build_plans`` but reusing the structure of earlier calls."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: "OrderedDict[tuple, _Entry]" = OrderedDict()
        self._lock = threading.Lock()  # pipelines on several threads share the module's cache
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()

    def plans(self, edits: Sequence[ColumnEdit], q: torch.Tensor, k: torch.Tensor):
        key = self._key(edits, q, k)
        with self._lock:
            entry = None if key is None else self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is None:
            self.misses += 1
            kept = validate(edits, q, k)
            plans = build_plans(kept, q, k)
            if key is not None:
                self._store(key, edits, kept, plans, q)
            return kept, plans
        self.hits += 1
        kept = [edits[i] for i in entry.kept]
        vkey = _value_key(edits)
        last = entry.last
        if last is not None and last[0] == vkey:
            return kept, last[2]
        plans = [self._refill(plan, slots, edits, q) for plan, slots in zip(entry.plans, entry.slots)]
        entry.last = (vkey, [e.value for e in edits], plans)
        return kept, plans

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _key(edits, q, k):
        if q.ndim != 4 or k.ndim != 4:
            return None  # validate raises the error
        parts = [q.device, q.dtype, tuple(q.shape[:3]), k.shape[2]]
        for e in edits:
            if not isinstance(e, ColumnEdit):
                return None
            parts.append((e.batch, e.mode, _index_key(e.rows), _index_key(e.columns), _index_key(e.heads)))
        return tuple(parts)

    def _store(self, key, edits, kept, plans, q) -> None:
        h = q.shape[1]
        dev = q.device
        position = {id(e): i for i, e in enumerate(edits)}
        slots = []
        for plan in plans:
            mine = []
            for e in kept:
                if e.batch != plan.batch or e.mode == "suppress":
                    continue
                hi = e.head_index(h).to(dev)[:, None, None]
                ri = torch.searchsorted(plan.rows, e.rows.to(dev))[None, :, None]
                ci = torch.searchsorted(plan.columns, e.columns.to(dev))[None, None, :]
                mine.append((position[id(e)], (hi, ri, ci)))
            slots.append(_Slots(mine, _owned_cells(plan, kept, h, dev)))
        held = [t for e in edits for t in (e.rows, e.columns, e.heads) if t is not None]
        skeletons = [BatchPlan(p.batch, p.rows, p.columns, p.kind, None, p.group, p.n_groups) for p in plans]
        with self._lock:
            self._entries[key] = _Entry(held, [position[id(e)] for e in kept], skeletons, slots)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    @staticmethod
    def _refill(plan: BatchPlan, slots: "_Slots", edits, q) -> BatchPlan:
        h = q.shape[1]
        f = compute_dtype(q.dtype)
        value = torch.zeros(plan.kind.shape, dtype=f, device=plan.kind.device)
        table = _per_head_table(slots, edits, h, f, q.device)
        if table is not None:
            # every value is a number or one per head: one gather and one scatter for all edits
            value.view(-1)[slots.cells] = table.view(-1)[slots.source]
            shares = [edits[i].value for i, _ in slots if edits[i].mode == "share"]
            if plan.n_groups > 1 and not (all(isinstance(s, numbers.Real) for s in shares) and sum(shares) < 1):
                _check_share_sums(plan, value)
            return BatchPlan(plan.batch, plan.rows, plan.columns, plan.kind, value, plan.group, plan.n_groups)
        shares, tensors, share_tensors = [], [], []
        for i, (hi, ri, ci) in slots:
            e = edits[i]
            if isinstance(e.value, numbers.Real):  # checked when the edit was made
                value[hi, ri, ci] = float(e.value)
            else:
                grid = _grid(e, h, f, q.device)
                value[hi, ri, ci] = grid
                tensors.append(grid)
                if e.mode == "share":
                    share_tensors.append(grid)
            if e.mode == "share":
                shares.append(e.value)
        # the value checks of ColumnEdit.value_grid, one device read for all edits
        bad = bool(tensors) and not bool(torch.isfinite(torch.cat([t.reshape(-1) for t in tensors])).all())
        if share_tensors and not bad:
            x = torch.cat([t.reshape(-1) for t in share_tensors])
            bad = not bool(((x > 0) & (x < 1)).all())
        if bad:
            for i, _ in slots:
                edits[i].value_grid(h, f, q.device)  # raises the error naming the value
        if plan.n_groups > 1 and not (all(isinstance(s, numbers.Real) for s in shares) and sum(shares) < 1):
            _check_share_sums(plan, value)
        return BatchPlan(plan.batch, plan.rows, plan.columns, plan.kind, value, plan.group, plan.n_groups)


class _Slots(list):
    """``[(edit position, (hi, ri, ci))]`` of a plan's value-carrying edits, in order, and
    the cells whose value each one sets last (later edits win, a later suppress clears):
    ``cells`` (flat positions in ``[H, U, C]``) and ``source`` (``slot * H + head``)."""

    def __init__(self, items, owned):
        super().__init__(items)
        self.cells, self.source = owned


def _owned_cells(plan: BatchPlan, kept, h: int, dev):
    owner = torch.full(tuple(plan.kind.shape), -1, dtype=torch.long, device=dev)
    j = 0
    for e in kept:
        if e.batch != plan.batch:
            continue
        hi = e.head_index(h).to(dev)[:, None, None]
        ri = torch.searchsorted(plan.rows, e.rows.to(dev))[None, :, None]
        ci = torch.searchsorted(plan.columns, e.columns.to(dev))[None, None, :]
        owner[hi, ri, ci] = -1 if e.mode == "suppress" else j
        j += e.mode != "suppress"
    cells = (owner.view(-1) >= 0).nonzero()[:, 0]
    head = cells // (owner.shape[1] * owner.shape[2])
    return cells, owner.view(-1)[cells] * h + head


def _per_head_table(slots: "_Slots", edits, h: int, f, device) -> Optional[torch.Tensor]:
    """``[slots, H]`` values when every edit's value is a number or one per head (all heads
    edited), with ``ColumnEdit.value_grid``'s checks made at once; None otherwise."""
    numbers_at, tensors_at, tensors = [], [], []
    for j, (i, _) in enumerate(slots):
        e = edits[i]
        if isinstance(e.value, numbers.Real):
            numbers_at.append(j)
        elif e.heads is None and e.value.ndim <= 1 and e.value.numel() in (1, h):
            tensors_at.append(j)
            tensors.append(e.value.reshape(-1).to(device=device, dtype=f).expand(h))
        else:
            return None
    table = torch.empty(len(slots), h, dtype=f, device=device)
    if numbers_at:
        table[numbers_at] = torch.tensor([float(edits[slots[j][0]].value) for j in numbers_at], dtype=f)[:, None].to(device)
    if tensors:
        stacked = torch.stack(tensors)
        table[tensors_at] = stacked
        shares = [k for k, j in enumerate(tensors_at) if edits[slots[j][0]].mode == "share"]
        ok = torch.isfinite(stacked).all()
        if shares:
            x = stacked[shares]
            ok = ok & ((x > 0) & (x < 1)).all()
        if not bool(ok):
            for j in tensors_at:
                edits[slots[j][0]].value_grid(h, f, device)  # raises the error naming the value
    return table


def _grid(e: ColumnEdit, num_heads: int, dtype, device) -> torch.Tensor:
    """``e.value`` broadcast to ``[Hs, R, T]`` as :meth:`ColumnEdit.value_grid` does, without
    its value checks (made once for all edits by the caller); a shape it refuses goes to
    ``value_grid`` for the error."""
    val = e.value.to(device=device, dtype=dtype)
    hs = num_heads if e.heads is None else e.heads.numel()
    r, t = e.rows.numel(), e.columns.numel()
    if val.ndim == 1:
        val = val[:, None, None]
    elif val.ndim == 2:
        val = val[:, :, None]
    if val.ndim == 3 and e.mode == "share" and val.shape[2] != 1:
        return e.value_grid(num_heads, dtype, device)  # raises
    try:
        return val.expand(hs, r, t)
    except RuntimeError:
        return e.value_grid(num_heads, dtype, device)  # raises


def _check_share_sums(plan: BatchPlan, value: torch.Tensor) -> None:
    """The check ``build_plans`` makes: share targets meeting on a row sum to less than 1."""
    total = sum(value.masked_fill(plan.group != g, 0).amax(-1) for g in range(plan.n_groups))  # [H, U]
    if (total >= 1).any():
        hh, ii = (total >= 1).nonzero()[0].tolist()
        raise ValueError(
            f"share edits on batch {plan.batch}, head {hh}, row {int(plan.rows[ii])} ask for shares summing to "
            f"{float(total[hh, ii]):.3g}; targets of edits sharing a row must sum to less than 1"
        )
