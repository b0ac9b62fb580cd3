"""Attention math for guidance: exact attention with a sparse column bias.

One public operation, :func:`guided_attention`::

    from numina_hooks.attention import ColumnEdit, guided_attention

    edits = [
        ColumnEdit(batch=0, rows=removed_rows, columns=cat_tokens, mode="suppress"),
        ColumnEdit(batch=0, rows=added_rows, columns=cat_tokens, mode="boost", value=k * delta),
        # or: raise the noun's softmax share on those rows to at least 40%
        ColumnEdit(batch=0, rows=added_rows, columns=cat_tokens, mode="share", value=0.4),
    ]
    out = guided_attention(q, k, v, edits)   # q [B, H, Lq, d], k/v [B, H, Lk, d]

It equals this plain PyTorch, without ever building the ``[B, H, Lq, Lk]`` bias::

    bias = dense_bias(edits, q, k, scale)                       # -inf where suppressed
    out = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, -1) @ v

See ``docs/attention.md`` for the numerics and the benchmark.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence

import torch

from .dense import guided_attention_dense
from .edits import ColumnEdit, dense_bias, pre_softmax_scores, pre_softmax_spread, validate
from .lse import AUTO_ORDER, BACKENDS, Backend, attention_with_lse, available_backends, choose_backend
from .plan_cache import PlanCache
from .sparse import Recompute, guided_attention_sparse

#: edit structures reused across calls (guidance repeats one per layer and step)
PLANS = PlanCache()

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "ColumnEdit",
    "PLANS",
    "PlanCache",
    "attention_with_lse",
    "available_backends",
    "choose_backend",
    "dense_bias",
    "guided_attention",
    "pre_softmax_scores",
    "pre_softmax_spread",
]


def guided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    edits: Sequence[ColumnEdit],
    *,
    scale: Optional[float] = None,
    method: Literal["sparse", "dense"] = "sparse",
    backend: str = "auto",
    guard: float = 0.5,
    recompute: Recompute = "guarded",
) -> torch.Tensor:
    """Attention with the pre-softmax scores changed by ``edits``, computed exactly.

    :param q: ``[B, H, Lq, d]`` queries.
    :param k: ``[B, H, Lk, d]`` keys. :param v: ``[B, H, Lk, dv]`` values.
    :param edits: :class:`ColumnEdit` s, applied in order; on a ``(head, row, column)``
        cell named by several edits the later one wins. Empty edits are ignored.
    :param scale: softmax scale; None means ``1 / sqrt(d)``.
    :param method: ``"sparse"``: one fused kernel with its log-sum-exp, then an exact
        float32 correction of the edited rows (memory ``O(H x rows x |columns|)``);
        ``"dense"``: the materialised bias through torch SDPA (reference, fallback).
    :param backend: kernel for the sparse path, ``"auto"`` or a name in ``BACKENDS``
        (see :func:`attention_with_lse`); ignored by ``method="dense"``.
    :param guard: rows whose softmax mass after the edit falls below ``guard`` times
        the mass before (a suppression of dominant columns) are recomputed exactly by
        a split-KV merge rather than corrected, bounding rounding amplification by
        ``1 / guard``.
    :param recompute: which edited rows take the exact split-KV path: ``"guarded"``
        (those below ``guard``), ``"suppressed"`` (also every row with a suppressed
        column), or ``"all"``.
    :returns: ``[B, H, Lq, dv]`` in ``q.dtype``. Rows and heads with no edit are the
        kernel's plain output, bit for bit; no edits at all gives plain attention.
    """
    if method not in ("sparse", "dense"):
        raise ValueError(f"method must be 'sparse' or 'dense', got {method!r}")
    if recompute not in ("guarded", "suppressed", "all"):
        raise ValueError(f"recompute must be 'guarded', 'suppressed' or 'all', got {recompute!r}")
    if not guard >= 0:
        raise ValueError(f"guard must be >= 0, got {guard}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if method == "dense":
        return guided_attention_dense(q, k, v, validate(edits, q, k), scale=scale)
    edits, plans = PLANS.plans(edits, q, k)  # validate + build_plans, structure reused across calls
    out, lse = attention_with_lse(q, k, v, scale=scale, backend=backend)
    if not edits:
        return out
    return guided_attention_sparse(
        q, k, v, plans, scale=scale, backend=backend, guard=guard, recompute=recompute, out=out, lse=lse
    )
