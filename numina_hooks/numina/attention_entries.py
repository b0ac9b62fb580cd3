"""Entries of one frame's self-attention, read on demand: from a ready map or from q/k.

The adaptive partition (``partition.py``) reads three things of a frame's ``[heads, N, N]``
softmax map ``A`` (``N = H * W``): the entries of the 4-neighbour bundles (the same pairs in
every head), small square blocks ``A[head, rows, rows]`` of sampled region members (the
containment lift), and the mean of a few rows (attention-sink keys). Two sources give them:

* :class:`MapSelfAttention` gathers them from a ready ``[heads, N, N]`` map;
* :class:`QKSelfAttention` computes them from the frame's queries and keys. One pass over
  row chunks computes every row's log-sum-exp (the softmax normaliser) and gathers the
  neighbour entries on the way; blocks and rows are later computed from q/k directly. No
  ``[heads, N, N]`` tensor is kept (the pass holds one ``chunk x N`` block of one head), the
  work runs on the device q/k live on, and only the small results reach the CPU.

Both return float32 values on the CPU; the q/k source agrees with the map to float32
rounding (the map's softmax divides by the row sum, this one subtracts the log-sum-exp).
The q/k source works in base 2: ``log2(e)`` is folded into the scaled queries once, so every
entry is ``2^(q_i . k_j - lse2_i)`` (``exp2`` took 0.3x the time of ``exp`` on this project's
CPU, and the normaliser raises every entry of the frame once); ``lse`` gives the natural one.

**Own keys.** With ``exclude_own_key=True`` both read the rows with each row's entry on its
own key removed and the rest renormalised: ``A'[i, j] = A[i, j] / (1 - A[i, i])`` for
``j != i``, ``A'[i, i] = 0``. A token's attention to itself says nothing about which other
tokens belong with it, yet heads whose queries and keys share a per-token component (texture,
noise) spend most of each row on its own key, which leaves every other entry of the row, and
so every affinity to a neighbour, small and noisy. The q/k source leaves the own key out of
the normaliser itself (exact); the map source divides by ``1 - A[i, i]`` (floored at
``OWN_KEY_FLOOR``).
"""

from __future__ import annotations

import functools
import math

import torch

from ..views import float32_copy
from .heads import _refuse_nan_inf

__all__ = ["MapSelfAttention", "QKSelfAttention", "CHUNK_ELEMENTS", "OWN_KEY_FLOOR", "row_scores"]

#: float32 scores held at once by the q/k source's normaliser pass (one head's row chunk).
CHUNK_ELEMENTS = 1 << 20  # 4 MB: in a core's L2 where it is that large, in L3 on the AMD EPYC
# this project measures on (1 MB L2), where chunks of 128-672 rows at 30x52 timed alike

#: Smallest share a map row keeps off its own key when the own key is left out (a row with
#: everything on itself has no neighbours to read; the floor keeps its entries finite).
OWN_KEY_FLOOR = 1e-6

#: log2(e) and ln(2): the normaliser pass works in base 2 (``QKSelfAttention``)
LOG2E, LN2 = 1.0 / math.log(2.0), math.log(2.0)

#: Whether ``row_scores`` may use oneDNN's float32 matrix product on the CPU (cleared for the
#: process the first time the operator is missing or refuses its inputs).
_ONEDNN = [True]


def row_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q @ k.T`` for ``q`` ``[r, d]`` and ``k`` ``[n, d]`` -> ``[r, n]``, in their dtype.

    On the CPU in float32 this is oneDNN's matrix product (``torch.ops.mkldnn._linear_pointwise``,
    the operator torch's compiler uses for linear layers) where torch has it and oneDNN is
    enabled (``torch.backends.mkldnn``), else ``torch.mm`` (MKL). Both are float32 products with
    float32 accumulation; on the AMD EPYC this project measures on, MKL runs a narrower code
    path and oneDNN took 0.45x its time for a frame's scores at 30x52 (12 heads of 128: 36 ms
    against 82 ms, one thread), the results equal bit for bit there."""
    if (_ONEDNN[0] and q.device.type == "cpu" and q.dtype == torch.float32 and k.dtype == torch.float32
            and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))):  # no gradient there
        try:
            return torch.ops.mkldnn._linear_pointwise(q, k, None, "none", [], "")
        except (AttributeError, RuntimeError, NotImplementedError):  # no such operator in this build
            _ONEDNN[0] = False
    return torch.mm(q, k.t())


@functools.lru_cache(maxsize=8)
def _diagonal_index(n: int, offsets: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The places ``r * n + r + d`` in a flat ``[n, n]`` map of the diagonals ``offsets``
    (long ``[D * n]``, offset by offset; a place off the map clamped onto it) and which of
    them lie off it (long, their places in ``[D * n]``; None when none does). Cached: do not
    modify them."""
    if any(d == 0 for d in offsets):
        raise ValueError(f"offsets={offsets}: offset 0 is each row's own key; expected offsets != 0")
    r = torch.arange(n)
    d = torch.tensor(offsets, dtype=torch.long)[:, None]
    col = r[None, :] + d  # [D, n]
    outside = (col < 0) | (col >= n)
    lin = (r[None, :] * n + col.clamp(0, n - 1)).reshape(-1)
    return lin, (torch.nonzero(outside.reshape(-1))[:, 0] if bool(outside.any()) else None)


class MapSelfAttention:
    """Entries of a ready map ``self_attn`` ``[heads, N, N]`` (rows sum to 1, any float
    dtype, any device); with ``exclude_own_key`` each row without its own key (module
    docstring).

    Every entry read is checked: a NaN/inf among them raises ``ValueError`` naming ``name``
    and how many entries of the whole map are NaN/inf (the map itself is not scanned
    beforehand: ``heads.attention_rows(..., sampled=True)``)."""

    def __init__(self, self_attn: torch.Tensor, *, exclude_own_key: bool = False,
                 name: str = "self_attn"):
        if self_attn.dim() != 3 or self_attn.shape[1] != self_attn.shape[2]:
            raise ValueError(f"self_attn has shape {tuple(self_attn.shape)}; expected "
                             "[heads, N, N] (one frame's self-attention, N = H * W)")
        self.map = self_attn
        self.heads, self.n = int(self_attn.shape[0]), int(self_attn.shape[1])
        self.exclude_own_key = bool(exclude_own_key)
        self.name = name
        # 1 / what each row keeps off its own key, [heads, N] on the CPU (None: rows as they are)
        self._inv_kept = None
        if self.exclude_own_key:
            own = self._finite(self_attn.diagonal(dim1=1, dim2=2).float().cpu())
            self._inv_kept = 1.0 / (1.0 - own).clamp_min(OWN_KEY_FLOOR)

    def _finite(self, vals: torch.Tensor) -> torch.Tensor:
        """``vals`` (entries read from the map) as they are; ``ValueError`` when one is NaN/inf."""
        if not bool(torch.isfinite(vals.sum())):  # NaN/inf propagate through a sum
            _refuse_nan_inf(self.map, self.name)
        return vals

    def _renormalised(self, vals: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
                      ) -> torch.Tensor:
        """``vals`` ``[heads, P]`` (float32 entries at ``rows``/``cols`` of every head,
        modified in place) without the own key: divided by the row's kept share, 0 where
        ``rows == cols``."""
        if self._inv_kept is None:
            return vals
        # index_select: 3x faster than advanced indexing for [heads, P]
        vals.mul_(self._inv_kept.index_select(1, rows))
        own = torch.nonzero(rows == cols)[:, 0]
        if len(own):  # the few own entries zeroed by index: not a pass over every entry
            vals.index_fill_(1, own, 0.0)
        return vals

    def _every_head_at(self, lin: torch.Tensor) -> torch.Tensor:
        """The entries at flat places ``lin`` (long ``[P]``, ``row * N + col``) of every head's
        map, float32 ``[heads, P]`` on the CPU, unchecked."""
        flat = self.map.reshape(self.heads, self.n * self.n)
        lin = lin.to(flat.device)
        if flat.device.type == "cpu":
            # one 1-D gather per head: the [heads, P] advanced index over the [heads, N*N] map
            # took twice as long on the CPU (a frame's bundles at 30x52: 9.8 ms against 18-20 ms)
            return torch.stack([row.index_select(0, lin) for row in flat]).float()
        return flat[:, lin].float().cpu()

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``A[:, rows, cols]`` for long ``rows``/``cols`` ``[P]`` -> float32 ``[heads, P]``."""
        vals = self._every_head_at(rows * self.n + cols)
        return self._renormalised(self._finite(vals), rows.cpu(), cols.cpu())

    def diagonals(self, offsets: tuple[int, ...]) -> torch.Tensor:
        """``A[:, r, r + d]`` of every row ``r`` for each offset ``d`` of ``offsets`` (a tuple
        of ints, none 0: no own key) -> float32 ``[heads, D, N]`` on the CPU, 0 where
        ``r + d`` leaves the map; rows without their own key renormalised as ``pairs`` does,
        entry for entry; ``ValueError`` when one read is NaN/inf.

        The 4-neighbour bundles of a frame (``partition.edge_weights``) lie on a few
        diagonals of every head's map (offsets within two rows of the grid): one gather per
        head of those diagonals, by a cached index, reads each diagonal once (at 30x52: 16
        diagonals; a frame's edge weights in 0.82x the time of gathering the bundles'
        distinct entries across the map, on one thread of a 2-core Intel Xeon)."""
        n = self.n
        lin, outside = _diagonal_index(n, tuple(int(d) for d in offsets))
        vals = self._finite(self._every_head_at(lin))
        if outside is not None:  # the few places off the map (a few rows at either end)
            vals.index_fill_(1, outside, 0.0)
        vals = vals.view(self.heads, len(offsets), n)
        if self._inv_kept is not None:
            vals.mul_(self._inv_kept[:, None, :])
        return vals

    def _gathered(self, heads: torch.Tensor, rows: torch.Tensor, check: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw map entries of ``blocks`` (own keys as they are), float32 ``[G, S, S]`` on
        the map's device, and each member's row among the heads' rows, long ``[G, S]`` on
        the CPU. ``check=False``: NaN/inf left for the caller to find (``block_sums``)."""
        n = self.n
        heads, rows = heads.cpu(), rows.cpu()
        row_of = heads[:, None] * n + rows  # [G, S]: each member's row among the heads' rows
        # the [G, S, S] places in int32 where the map allows: half the memory to write and
        # read back (index_select takes either; ``take``, for a strided map, only int64)
        small = self.map.numel() <= torch.iinfo(torch.int32).max and self.map.is_contiguous()
        kind = torch.int32 if small else torch.int64
        lin = ((row_of * n).to(kind)[:, :, None] + rows.to(kind)[:, None, :]).to(self.map.device)
        if self.map.is_contiguous():
            # a 1-D index_select on the flat view (no copy): on the CPU it gathered a
            # frame's blocks at 30x52 in 0.4x the time of ``take`` (2.2-2.6 ms against
            # 5.3-6.8 ms, 0.8M entries), and ``take`` in 0.6x that of advanced indexing
            vals = self.map.view(-1).index_select(0, lin.reshape(-1)).view(lin.shape)
        else:  # ``take`` reads a strided map as flat without copying it
            vals = torch.take(self.map, lin)
        return (self._finite(vals.float()) if check else vals.float()), row_of

    def blocks(self, heads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``A[heads[g], rows[g, a], rows[g, b]]`` for long ``heads`` ``[G]`` and ``rows``
        ``[G, S]`` -> float32 ``[G, S, S]``."""
        vals, row_of = self._gathered(heads, rows)
        vals, rows = vals.cpu(), rows.cpu()
        if self._inv_kept is not None:  # three operations: a frame reads about 40 blocks
            vals.mul_(torch.take(self._inv_kept, row_of)[:, :, None])
            vals.masked_fill_(rows[:, :, None] == rows[:, None, :], 0.0)
        return vals

    def block_sums(self, heads: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted row sums of the blocks ``blocks(heads, rows)`` and their diagonals:
        (``sum_b A[g, a, b] * weights[g, b]``, ``A[g, a, a]``), both float32 ``[G, S]``, for
        long ``heads`` ``[G]``, ``rows`` ``[G, S]`` and float32 ``weights`` ``[G, S]``. The
        tokens of ``rows[g]`` must be distinct where ``weights[g]`` is not 0; padding slots
        of weight 0 may repeat one, and their own sums are then not meaningful (weigh them
        by 0 too).

        The same figures as reducing ``blocks``, in fewer passes over the ``G * S * S``
        entries: one gather and one batched product; the own-key renormalisation is applied
        to the ``[G, S]`` sums, not to every entry (0.4x the time of ``blocks`` and the
        reductions for a frame's containment lift at 30x52). The entries are checked through
        the sums: a NaN/inf entry makes its row's sum NaN/inf (0 times NaN is NaN), and only
        then are the entries themselves searched (a pass over them all took 0.55 ms of a
        frame's layout at 30x52)."""
        vals, row_of = self._gathered(heads, rows, check=False)
        weights = weights.float().cpu()
        on_diagonal = vals.diagonal(dim1=1, dim2=2)  # each row's own token (distinct rows)
        own = on_diagonal.cpu().clone()
        if self._inv_kept is not None:
            # the own entry left out before the sum (a row holding nearly all of its mass
            # there would otherwise lose the rest to float32 cancellation), the rest
            # renormalised on the [G, S] sums
            on_diagonal.zero_()
            own.zero_()
        sums = torch.bmm(vals, weights.to(vals.device)[:, :, None])[:, :, 0].cpu()
        if not bool(torch.isfinite(sums.sum())):
            # a NaN/inf entry, or sums past the float range: only the first is refused
            # (the own entries left out above were checked when the source was made)
            self._finite(vals)
        if self._inv_kept is not None:
            sums.mul_(torch.take(self._inv_kept, row_of))
        return sums, own

    def mean_rows(self, pick: torch.Tensor) -> torch.Tensor:
        """Mean of rows ``pick`` (long ``[R]``) -> float32 ``[heads, N]``."""
        # index_select, not advanced indexing: 0.4 ms against 2.1 ms for 64 rows at 30x52
        on = pick.to(self.map.device)
        rows = self._finite(self.map.index_select(1, on).float())  # [heads, R, N]
        if self._inv_kept is None:
            return rows.mean(1).cpu()
        rows[:, torch.arange(len(pick), device=rows.device), on] = 0.0
        # each row renormalised and the rows averaged in one batched product
        weights = self._inv_kept[:, pick.cpu()].to(rows.device) / len(pick)  # [heads, R]
        return torch.bmm(weights[:, None, :], rows)[:, 0].cpu()


class QKSelfAttention:
    """Entries of ``softmax(q k^T * scale)`` per head, computed from ``q``, ``k``
    ``[heads, N, d]`` (any float dtype; the work runs on their device in float32).

    :param pairs: optional long ``(rows, cols)`` ``[P]`` entries gathered during the
        normaliser pass (the neighbour bundles), so that :meth:`pairs` costs nothing more.
    :param chunk_elements: float32 scores held at once (one head's ``rows x N`` block);
        default ``CHUNK_ELEMENTS``.
    :param name: what the map is, for the error raised when it is constant.
    :param exclude_own_key: each row without its own key (module docstring): the own key
        is left out of the normaliser, its entry is 0.
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, scale: float, *,
                 pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
                 chunk_elements: int | None = None, name: str = "self-attention",
                 exclude_own_key: bool = False):
        if q.dim() != 3 or k.shape != q.shape:
            raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must both be "
                             "[heads, N, d] (one frame's queries and keys)")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale={scale}: expected a finite number > 0 (the kernel's "
                             "softmax scale, usually head_dim ** -0.5)")
        self.heads, self.n = int(q.shape[0]), int(q.shape[1])
        if exclude_own_key and self.n < 2:
            raise ValueError(f"{name} has {self.n} token per frame: without its own key a row "
                             "has nothing left to read. Check the grid (it needs more than one "
                             "patch)")
        self.device = q.device
        # the scale and log2(e) folded into q once: the scores are in base-2 units and every
        # entry below is 2^(q_i . k_j - lse2_i). torch's ``exp2`` ran at 0.3x the time of
        # ``exp`` on this project's CPU (29M entries, one thread: 7 ms against 24 ms), and the
        # normaliser pass raises every entry of the frame once
        self._q = float32_copy(q).mul_(float(scale) * LOG2E)
        self._k = float32_copy(k)
        self._pairs = pairs
        self._pair_values = None
        self.exclude_own_key = bool(exclude_own_key)
        chunk = CHUNK_ELEMENTS if chunk_elements is None else int(chunk_elements)
        self.lse2 = self._normaliser_pass(max(1, chunk), name)  # [heads, N], base 2

    @property
    def lse(self) -> torch.Tensor:
        """Each row's log-sum-exp (natural log, of the scaled scores) ``[heads, N]``."""
        return self.lse2 * LN2

    def _normaliser_pass(self, chunk_elements: int, name: str) -> torch.Tensor:
        h, n = self.heads, self.n
        rows_per_chunk = max(1, min(n, chunk_elements // max(n, 1)))
        lse = torch.empty(h, n, device=self.device)
        ones = torch.empty(h, n, dtype=torch.bool, device=self.device)
        starts = list(range(0, n, rows_per_chunk))
        if self._pairs is not None:
            # per chunk: which pairs have their row in it, and where they sit in its block
            rows, cols = (t.to(self.device) for t in self._pairs)
            order = torch.argsort(rows, stable=True)
            bounds = torch.searchsorted(rows[order], torch.tensor(starts + [n], device=self.device))
            bounds = bounds.tolist()
            picks = [order[bounds[c]:bounds[c + 1]] for c in range(len(starts))]
            local = [(rows[sel] - r0) * n + cols[sel] for sel, r0 in zip(picks, starts)]
            # each head's logits gathered chunk by chunk in ``order`` (the chunks' picks one
            # after the other), put back in the pairs' order once at the end
            sorted_logits = torch.empty(h, rows.numel(), device=self.device)
        for head in range(h):
            k_head = self._k[head]
            for c, r0 in enumerate(starts):
                r1 = min(n, r0 + rows_per_chunk)
                s = row_scores(self._q[head, r0:r1], k_head)  # base-2 scores
                if self.exclude_own_key:  # row r0 + i's own key is column r0 + i
                    s.diagonal(offset=r0).fill_(-math.inf)
                if self._pairs is not None:
                    # a 1-D index_select on the flat chunk: a third of the time of advanced
                    # indexing; the chunk's picks sit at bounds[c]:bounds[c + 1] of ``order``
                    torch.index_select(s.view(-1), 0, local[c],
                                       out=sorted_logits[head, bounds[c]:bounds[c + 1]])
                top = s.amax(1, keepdim=True)
                total = s.sub_(top).exp2_().sum(1)
                # every logit of a row equal: 2^0 = 1 exactly, N times (N - 1 without
                # the own key)
                ones[head, r0:r1] = total == (n - 1 if self.exclude_own_key else n)
                lse[head, r0:r1] = top[:, 0] + total.log2()
        if bool(ones.all()):
            raise ValueError(
                f"{name} is constant (every one of its {h * n * n} entries is {1.0 / n:.6g}): "
                "it holds no layout to read. Check that the attention was captured at the "
                "right step, layer and token columns, and that the grid has more than one patch")
        if self._pairs is not None:
            back = torch.empty_like(order)
            back[order] = torch.arange(len(order), device=self.device)
            logits = sorted_logits.index_select(1, back)  # the pairs' order
            self._pair_values = torch.exp2(logits - lse[:, rows]).cpu()
        return lse

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``A[:, rows, cols]`` for long ``rows``/``cols`` ``[P]`` -> float32 ``[heads, P]``."""
        if self._pairs is not None and (rows is self._pairs[0] and cols is self._pairs[1] or (
                torch.equal(rows.cpu(), self._pairs[0].cpu())
                and torch.equal(cols.cpu(), self._pairs[1].cpu()))):
            return self._pair_values
        rows, cols = rows.to(self.device), cols.to(self.device)
        out = torch.empty(self.heads, rows.numel())
        step = max(1, CHUNK_ELEMENTS // (self._q.shape[2] * self.heads))
        for p0 in range(0, rows.numel(), step):
            r, c = rows[p0:p0 + step], cols[p0:p0 + step]
            logit = (self._q[:, r] * self._k[:, c]).sum(-1)
            if self.exclude_own_key:
                logit = logit.masked_fill(r == c, -math.inf)
            out[:, p0:p0 + step] = torch.exp2(logit - self.lse2[:, r]).cpu()
        return out

    def blocks(self, heads: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``A[heads[g], rows[g, a], rows[g, b]]`` for long ``heads`` ``[G]`` and ``rows``
        ``[G, S]`` -> float32 ``[G, S, S]`` (one small ``q k^T`` product per block)."""
        heads, rows = heads.to(self.device), rows.to(self.device)
        g, s = rows.shape
        out = torch.empty(g, s, s)
        step = max(1, CHUNK_ELEMENTS // max(1, s * self._q.shape[2]))
        for g0 in range(0, g, step):
            r = rows[g0:g0 + step]
            # rows of the flat [heads * N, d] q/k: index_select, not advanced indexing (half the time)
            at = (heads[g0:g0 + step, None] * self.n + r).reshape(-1)
            qb = self._q.view(-1, self._q.shape[2]).index_select(0, at).view(*r.shape, -1)  # [g, S, d]
            kb = self._k.view(-1, self._k.shape[2]).index_select(0, at).view(*r.shape, -1)
            logit = torch.bmm(qb, kb.transpose(1, 2))
            if self.exclude_own_key:
                logit.masked_fill_(r[:, :, None] == r[:, None, :], -math.inf)
            logit -= self.lse2.view(-1).index_select(0, at).view(*r.shape, 1)
            out[g0:g0 + step] = logit.exp2_().cpu()
        return out

    def block_sums(self, heads: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``MapSelfAttention.block_sums``: (``sum_b A[g, a, b] * weights[g, b]``,
        ``A[g, a, a]``), float32 ``[G, S]``, from the blocks computed from q/k."""
        vals = self.blocks(heads, rows)
        sums = torch.bmm(vals, weights.float().cpu()[:, :, None])[:, :, 0]
        return sums, vals.diagonal(dim1=1, dim2=2).clone()

    def mean_rows(self, pick: torch.Tensor) -> torch.Tensor:
        """Mean of rows ``pick`` (long ``[R]``) -> float32 ``[heads, N]``."""
        pick = pick.to(self.device)
        out = torch.empty(self.heads, self.n)
        for head in range(self.heads):
            s = row_scores(self._q[head, pick], self._k[head])
            if self.exclude_own_key:
                s[torch.arange(len(pick), device=s.device), pick] = -math.inf
            out[head] = s.sub_(self.lse2[head, pick][:, None]).exp2_().mean(0).cpu()
        return out

