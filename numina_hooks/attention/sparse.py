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
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from .edits import UNEDITED, SUPPRESS, BatchPlan, compute_dtype
from .lse import attention_with_lse

Recompute = Literal["guarded", "suppressed", "all"]

#: Elements of ``[H, rows, max(|C|, d)]`` work tensors formed at once.
CHUNK_ELEMENTS = 1 << 19


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

    ``out``/``lse`` may be passed when the caller already ran the kernel (``lse`` in
    the compute dtype, natural log). ``out`` is modified in place on edited rows.
    """
    if out is None or lse is None:
        out, lse = attention_with_lse(q, k, v, scale=scale, backend=backend)
    f = compute_dtype(q.dtype)
    h, d, dv = q.shape[1], q.shape[-1], v.shape[-1]
    for plan in plans:
        b = plan.batch
        qb, ob = q[b], out[b]  # [H, Lq, d], [H, Lq, dv]
        lb = lse[b].contiguous()  # kernels may return it strided; index_select would copy it per chunk
        kct = k[b].index_select(1, plan.columns).to(f).transpose(-1, -2).contiguous()  # [H, d, C]
        vc = v[b].index_select(1, plan.columns).to(f)  # [H, C, dv]
        rest = None  # keys outside C, gathered on first need
        n_rows = plan.rows.numel()
        step = min(n_rows, max(1, CHUNK_ELEMENTS // max(1, h * max(plan.columns.numel(), dv, d))))
        # work buffers reused by every chunk: fresh pages cost more than the arithmetic
        ws = _Workspace(q.device)
        for i0 in range(0, n_rows, step):
            sl = slice(i0, min(n_rows, i0 + step))
            rows = plan.rows[sl]
            n = rows.numel()
            qr = ws.gather("q", qb, rows, (h, n, d))  # [H, n, d] in q.dtype
            qf = qr if qr.dtype == f else ws.get("qf", (h, n, d), f).copy_(qr)
            s = torch.matmul(qf, kct).mul_(scale)  # [H, n, C]
            lr = lb.index_select(1, rows)[..., None]  # [H, n, 1]
            new = plan.new_logits(s, sl, lse=lr)
            kind = plan.kind[:, sl]
            changed = (kind != UNEDITED).any(-1)  # [H, n]
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
            o = ws.gather("o", ob, rows, (h, n, dv))  # [H, n, dv] in out.dtype
            redo = (changed & ~(c >= guard)).any(0)  # [n]; NaN-safe
            if recompute == "all":
                redo = changed.any(0)
            elif recompute == "suppressed":
                redo = redo | (kind == SUPPRESS).any(-1).any(0)
            idx = redo.nonzero()[:, 0] if redo.any() else None
            if idx is not None:
                o_redo = o.index_select(1, idx)
            # (em O + sum_j w_j v_j) / den, in place on one float buffer
            of = o if o.dtype == f else ws.get("of", (h, n, dv), f).copy_(o)
            of.mul_(alpha).baddbmm_(w, vc)
            result = of if of.dtype == o.dtype else o.copy_(of)
            if idx is not None:
                if rest is None:
                    rest = _rest_keys(k[b], v[b], plan.columns, f)
                exact = _split_kv(qf.index_select(1, idx), new.index_select(1, idx), vc, rest, scale, backend)
                result[:, idx] = torch.where(changed[:, idx, None], exact.to(result.dtype), o_redo)
            ob.index_copy_(1, rows, result)
    return out


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
        """``src.index_select(1, rows)`` into the buffer ``name``."""
        return torch.index_select(src, 1, rows, out=self.get(name, shape, src.dtype))


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
