"""The sparse guided path: one fused kernel, then an exact correction of the edited rows.

For a query row with unedited scores ``s``, kernel output ``O`` and log-sum-exp ``L``,
editing the scores of columns ``C`` to ``s_j + b_j`` (``b_j = -inf`` removes column j)
gives exactly::

    p_j = exp(s_j - L)
    c   = 1 + sum_j p_j (e^{b_j} - 1)
    O'  = (O + sum_j p_j (e^{b_j} - 1) v_j) / c

computed here in float32 (float64 for float64 inputs) in a max-shifted form: with
``a_j = s_j + b_j - L`` and ``m = max(0, max_j a_j)`` every exponential is ``<= 1``, so
``b = +100`` is as safe as ``b = +1`` (``e^b`` alone overflows float32 above 88.7).
Only ``[H, rows, |C|]`` scores are formed, in chunks of rows.

When the edit removes most of a row's mass (``c < guard``), the subtraction would
amplify the kernel's own rounding of ``O`` by ``1 / c`` (bf16 errors of 2 to 760 were
seen with c near 0). Such rows are recomputed exactly instead by a split-KV merge:
attention of the row over the keys *outside* ``C`` (a second kernel call on the few
rows, with its LSE ``L_r`` and output ``O_r``), merged with the edited columns in the
log domain, which only ever adds positive weights::

    M  = max(L_r, max_j (s_j + b_j))
    O' = (e^{L_r - M} O_r + sum_j e^{s_j + b_j - M} v_j) / (e^{L_r - M} + sum_j e^{s_j + b_j - M})

Rows and heads that no edit touches are left as the kernel wrote them, bit for bit.

Small calls take a direct path instead (``DIRECT_ELEMENTS``): when the edited rows over
*all* keys make a small ``[H, rows, Lk]`` block (a few hundred tokens, or few edited rows
over a short text), those rows are recomputed outright, ``softmax(s + b) v`` in float32
over every key. That is exact with no correction and no guard to apply, and takes about
40 small ops where the correction takes several hundred: on a 144-token call the fixed
cost of the ops, not the arithmetic, is what a guided call pays.

Layout: ``q``, the kernel's output and its LSE are read and written on the memory layout
they arrive in. Pipelines hand over ``[B, H, L, d]`` views of ``[B, L, H, d]`` tensors
(diffusers' Wan dispatch, DiffSynth, official Wan), and torch's CPU kernel writes its
output and LSE token-major too; there the rows are gathered along the token dimension
of the ``[L, H, d]`` transpose, which is contiguous. (``index_select`` along dim 1 of a
token-major ``[H, L, d]`` view copies the whole tensor on every call: 0.11 s instead of
4 ms for 2000 of 32760 rows at Wan2.1-1.3B size in bfloat16 on one CPU thread.) No transpose or copy of a whole ``q``/``out`` is made.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from .edits import BatchPlan, compute_dtype
from .lse import attention_with_lse

Recompute = Literal["guarded", "suppressed", "all"]

#: Most elements of the ``[H, rows, |C|]`` per-cell work tensors formed at once.
CELL_ELEMENTS = 1 << 15
#: Most elements of the ``[H, rows, d]`` gathered query / output rows formed at once.
ROW_ELEMENTS = 1 << 17
#: On GPUs every chunk costs kernel launches and a host sync (``redo.any()``), which dwarf
#: the arithmetic: chunks are 64x larger there (the first chunk sizes of a CPU cache cost
#: 150-270x the unguided call on an H200 at Wan2.1-1.3B size).
GPU_CHUNK_FACTOR = 64
# Both shrink with the output (1/1024 and 1/256 of its elements, floors 2^13 and 2^14), so
# that the work buffers stay a few percent of what the unguided call allocates anyway.
#: Fewest elements of a cell chunk: on small calls (a few hundred tokens) each chunk's ~40
#: small ops cost far more than its arithmetic, so small calls take one chunk (a floor of
#: 2^10 cut a 144-token call into six chunks; its buffers are tens of KB either way).
CELL_FLOOR = 1 << 13
#: Most elements of the ``[H, edited rows, Lk]`` block for which a batch row takes the
#: direct path (512 KB in float32; at Wan2.1-1.3B size a guided call has thousands of
#: edited rows over 512 text keys, 10^7 elements and more, and takes the correction).
DIRECT_ELEMENTS = 1 << 17


def guided_attention_sparse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plans: list[BatchPlan],
    *,
    scale: float,
    backend: str = "auto",
    guard: float = 0.5,
    recompute: Recompute = "guarded",
    out: Optional[torch.Tensor] = None,
    lse: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Apply ``plans`` to attention of ``q, k, v`` without any ``[Lq, Lk]`` tensor.

    :param q: ``[B, H, Lq, d]``; :param k: ``[B, H, Lk, d]``; :param v: ``[B, H, Lk, dv]``,
        contiguous or views of ``[B, L, H, d]`` tensors (read on their own layout).
    ``out``/``lse`` may be passed when the caller already ran the kernel (``lse`` in
    the compute dtype, natural log). ``out`` is modified in place on edited rows.

    Work is done in two kinds of chunks: the per-cell arithmetic on ``[H, n, |C|]``
    (``CELL_ELEMENTS``, hundreds to thousands of rows at once: few small ops per row),
    and within it the gathers of ``[H, m, d]`` query and output rows (``ROW_ELEMENTS``).
    """
    if out is None or lse is None:
        out, lse = attention_with_lse(q, k, v, scale=scale, backend=backend)
    f = compute_dtype(q.dtype)
    h, d, dv = q.shape[1], q.shape[-1], v.shape[-1]
    ws = _Workspace(q.device)  # work buffers reused by every chunk: fresh pages cost more than the arithmetic
    cell_elements = max(min(CELL_FLOOR, CELL_ELEMENTS), min(CELL_ELEMENTS, out.numel() >> 10))
    row_elements = max(min(1 << 14, ROW_ELEMENTS), min(ROW_ELEMENTS, out.numel() >> 8))
    if q.device.type != "cpu":
        cell_elements *= GPU_CHUNK_FACTOR
        row_elements *= GPU_CHUNK_FACTOR
    for plan in plans:
        if h * plan.rows.numel() * k.shape[2] <= DIRECT_ELEMENTS:
            _direct_rows(q, k, v, plan, scale, out, f)
            continue
        b = plan.batch
        qb, ob = q[b], out[b]  # [H, Lq, d], [H, Lq, dv]
        lb = lse[b]  # [H, Lq], token-major from torch's CPU kernel: gathered like q
        kc = k[b].index_select(1, plan.columns).to(f)  # [H, C, d]
        vc = v[b].index_select(1, plan.columns).to(f)  # [H, C, dv]
        n_cols = plan.columns.numel()
        rest = None  # keys outside C, gathered on first need
        n_rows = plan.rows.numel()
        cell_step = min(n_rows, max(1, cell_elements // max(1, h * n_cols)))
        row_step = max(1, row_elements // max(1, h * max(d, dv)))
        for i0 in range(0, n_rows, cell_step):
            sl = slice(i0, min(n_rows, i0 + cell_step))
            rows = plan.rows[sl]
            n = rows.numel()
            s = ws.get("s", (h, n_cols, n), f)  # transposed scores: k_C q^T is the fast matmul shape
            for j0 in range(0, n, row_step):
                part = rows[j0 : j0 + row_step]
                qr = ws.gather("q", qb, part, (h, part.numel(), d))  # [H, m, d] in q.dtype
                qf = qr if qr.dtype == f else ws.get("qf", qr.shape, f).copy_(qr)
                torch.matmul(kc, qf.transpose(-1, -2), out=s[:, :, j0 : j0 + part.numel()])
            s = s.transpose(-1, -2).mul_(scale)  # [H, n, C]
            lr = _gather_rows(lb, rows)[..., None]  # [H, n, 1]
            new = plan.new_logits(s, sl, lse=lr)
            changed = plan.changed_rows(sl)  # [H, n]
            a_new = new - lr
            m = a_new.amax(-1, keepdim=True).clamp_min(0)
            em = torch.exp(-m)
            w = torch.exp(a_new - m) - torch.exp((s - lr) - m)
            den = em + w.sum(-1, keepdim=True)
            c = (den * torch.exp(m))[..., 0]  # total mass after the edit, relative to before
            # unedited (head, row) pairs get alpha = 1 and no added term: o passes through unchanged
            keep = ~changed[..., None]
            alpha = (em / den).masked_fill(keep, 1.0)
            w = (w / den).masked_fill(keep, 0.0)
            redo = (changed & ~(c >= guard)).any(0)  # [n]; NaN-safe
            if recompute == "all":
                redo = changed.any(0)
            elif recompute == "suppressed":
                redo = redo | plan.suppressed_cells(sl).any(-1).any(0)
            # (em O + sum_j w_j v_j) / den, in place on one float buffer, m rows at a time
            for j0 in range(0, n, row_step):
                part = rows[j0 : j0 + row_step]
                jl = slice(j0, j0 + part.numel())
                o = ws.gather("o", ob, part, (h, part.numel(), dv))  # [H, m, dv] in out.dtype
                of = o if o.dtype == f else ws.get("of", o.shape, f).copy_(o)
                of.mul_(alpha[:, jl]).baddbmm_(w[:, jl], vc)
                _scatter_rows(ob, part, of if of.dtype == o.dtype else o.copy_(of))
            if redo.any():
                # the corrected rows of unchanged heads equal the kernel's (alpha 1, no added term)
                idx = redo.nonzero()[:, 0]
                r_idx = rows[idx]
                if rest is None:
                    rest = _rest_keys(k[b], v[b], plan.columns, f)
                exact = _split_kv(_gather_rows(qb, r_idx).to(f), new.index_select(1, idx), vc, rest, scale, backend)
                cur = _gather_rows(ob, r_idx)
                _scatter_rows(ob, r_idx, torch.where(changed[:, idx, None], exact.to(cur.dtype), cur))
    return out


def _direct_rows(q, k, v, plan: BatchPlan, scale: float, out: torch.Tensor, f: torch.dtype) -> None:
    """Recompute the edited rows of one batch row over every key: ``[H, U, Lk]`` scores in
    ``f``, the plan's edits on its columns, softmax, ``@ v``; written into ``out`` where a
    (head, row) has an edit, the kernel's output kept elsewhere."""
    b, rows = plan.batch, plan.rows
    s = torch.matmul(_gather_rows(q[b], rows).to(f), k[b].to(f).transpose(-1, -2)).mul_(scale)  # [H, U, Lk]
    lse = torch.logsumexp(s, -1, keepdim=True) if plan.n_groups else None  # share edits need it
    s.index_copy_(-1, plan.columns, plan.new_logits(s.index_select(-1, plan.columns), lse=lse))
    o = torch.matmul(torch.softmax(s, -1), v[b].to(f))  # [H, U, dv]
    changed = plan.changed_rows()[..., None]  # [H, U, 1]
    cur = _gather_rows(out[b], rows)
    _scatter_rows(out[b], rows, torch.where(changed, o.to(cur.dtype), cur))


class _Workspace:
    """Flat buffers, one per name, grown on demand and viewed to each chunk's shape."""

    def __init__(self, device):
        self.device = device
        self.buffers: dict = {}

    def get(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = self.buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)

    def gather(self, name: str, src: torch.Tensor, rows: torch.Tensor, shape: tuple) -> torch.Tensor:
        """``src.index_select(1, rows)`` (``src`` ``[H, L, x]``, result ``shape = [H, n, x]``)
        into the buffer ``name``, along whichever dimension ``src`` is laid out on.

        A token-major ``src`` (``stride(1) > stride(0)``) is gathered as ``[n, H, x]`` from
        its ``[L, H, x]`` transpose and returned as the ``[H, n, x]`` view of that.
        """
        if _token_major(src):
            h, n, x = shape
            buf = self.get(name, (n, h, x), src.dtype)
            return torch.index_select(src.transpose(0, 1), 0, rows, out=buf).transpose(0, 1)
        return torch.index_select(src, 1, rows, out=self.get(name, shape, src.dtype))


def _token_major(t: torch.Tensor) -> bool:
    """True when the token dimension (1) of ``[H, L, ...]`` ``t`` is the outer one in memory."""
    return t.shape[0] > 1 and t.shape[1] > 1 and t.stride(1) > t.stride(0)


def _gather_rows(src: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``src.index_select(1, rows)`` for ``[H, L, ...]`` ``src``, on its own layout."""
    if _token_major(src):
        return src.transpose(0, 1).index_select(0, rows).transpose(0, 1)
    return src.index_select(1, rows)


def _scatter_rows(dst: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.index_copy_(1, rows, src)`` for ``[H, L, x]`` ``dst``, on its own layout."""
    if _token_major(dst):
        dst.transpose(0, 1).index_copy_(0, rows, src.transpose(0, 1))
    else:
        dst.index_copy_(1, rows, src)


def _rest_keys(k: torch.Tensor, v: torch.Tensor, columns: torch.Tensor, f: torch.dtype):
    """``k``, ``v`` (``[H, Lk, d]``) without ``columns``, in dtype ``f``."""
    keep = torch.ones(k.shape[1], dtype=torch.bool, device=k.device)
    keep[columns] = False
    idx = keep.nonzero()[:, 0]
    return k.index_select(1, idx).to(f), v.index_select(1, idx).to(f)


def _split_kv(qr, new, vc, rest, scale, backend):
    """Exact attention of rows ``qr`` ``[H, g, d]`` over (rest keys) + (columns C with logits ``new``)."""
    k_rest, v_rest = rest
    h, g = qr.shape[:2]
    if k_rest.shape[1]:
        o_r, l_r = attention_with_lse(qr[None], k_rest[None], v_rest[None], scale=scale, backend=_exact(backend))
        o_r, l_r = o_r[0].to(new.dtype), l_r[0][..., None].to(new.dtype)
    else:
        o_r = torch.zeros(h, g, vc.shape[-1], dtype=new.dtype, device=new.device)
        l_r = torch.full((h, g, 1), float("-inf"), dtype=new.dtype, device=new.device)
    mx = torch.maximum(l_r, new.amax(-1, keepdim=True))
    wr = torch.exp(l_r - mx)
    wc = torch.exp(new - mx)
    return (wr * o_r + torch.matmul(wc, vc)) / (wr + wc.sum(-1, keepdim=True))


def _exact(backend: str) -> str:
    # the recompute runs in float32/float64, which the half-precision-only kernels refuse
    return "auto" if backend in ("flash-attn", "flash-attn3", "torch-cuda-flash", "sage") else backend
