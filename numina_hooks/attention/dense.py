"""The dense guided path: materialise the bias and call torch SDPA with it.

The reference implementation (tests) and the fallback for a backend that gives
neither a bias argument nor a log-sum-exp. It allocates ``B x H x Lq x Lk`` float32:
805 MB a call for Wan2.1-1.3B cross-attention (12 heads x 32760 x 512).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .edits import ColumnEdit, dense_bias


def guided_attention_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    edits: Sequence[ColumnEdit],
    *,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + dense_bias(edits)) v`` via ``F.scaled_dot_product_attention``."""
    bias = dense_bias(edits, q, k, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
