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
CHUNK_ELEMENTS = 1 << 22


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
    h, dv = q.shape[1], v.shape[-1]
    for plan in plans:
        b = plan.batch
        kc = k[b].index_select(1, plan.columns).to(f)  # [H, C, d]
        vc = v[b].index_select(1, plan.columns).to(f)  # [H, C, dv]
        rest = None  # keys outside C, gathered on first need
        n_rows = plan.rows.numel()
        step = max(1, CHUNK_ELEMENTS // max(1, h * max(plan.columns.numel(), dv, q.shape[-1])))
        for i0 in range(0, n_rows, step):
            sl = slice(i0, min(n_rows, i0 + step))
            rows = plan.rows[sl]
            qr = q[b].index_select(1, rows)  # [H, n, d]
            s = torch.matmul(qr.to(f), kc.transpose(-1, -2)).mul_(scale)  # [H, n, C]
            new = plan.new_logits(s, sl)
            kind = plan.kind[:, sl]
            changed = (kind != UNEDITED).any(-1)  # [H, n]
            lr = lse[b].index_select(1, rows)[..., None]  # [H, n, 1]
            o = out[b].index_select(1, rows)  # [H, n, dv]
            a_new = new - lr
            m = a_new.amax(-1, keepdim=True).clamp_min(0)
            em = torch.exp(-m)
            w = torch.exp(a_new - m) - torch.exp((s - lr) - m)
            den = em + w.sum(-1, keepdim=True)
            fixed = (em * o.to(f) + torch.matmul(w, vc)) / den
            c = (den * torch.exp(m))[..., 0]  # total mass after the edit, relative to before
            redo = (changed & ~(c >= guard)).any(0)  # [n]; NaN-safe
            if recompute == "all":
                redo = changed.any(0)
            elif recompute == "suppressed":
                redo = redo | (kind == SUPPRESS).any(-1).any(0)
            result = torch.where(changed[..., None], fixed.to(o.dtype), o)
            if redo.any():
                if rest is None:
                    rest = _rest_keys(k[b], v[b], plan.columns, f)
                idx = redo.nonzero()[:, 0]
                exact = _split_kv(qr.index_select(1, idx).to(f), new.index_select(1, idx), vc, rest, scale, backend)
                result[:, idx] = torch.where(changed[:, idx, None], exact.to(o.dtype), o[:, idx])
            out[b, :, rows] = result
    return out


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
