"""Exact attention that also returns the log-sum-exp of each query row.

``attention_with_lse(q, k, v)`` runs one fused kernel and returns ``(out, lse)``:

    out = softmax(q @ k^T * scale) @ v           # [B, H, Lq, d], q.dtype
    lse = logsumexp(q @ k^T * scale, dim=-1)     # [B, H, Lq], natural log, float32

Kernels are chosen from a registry of backends with declared capabilities (device,
dtypes, head dim). Every backend's LSE is normalised to natural-log float32
``[B, H, Lq]`` (float64 for float64 inputs): xformers and torch's efficient kernel pad
it to a multiple of 32 rows, which is sliced off. ``backend="auto"`` picks the first
available backend that fits, in the order of :data:`AUTO_ORDER`; naming a backend
that is not installed raises :class:`ImportError` saying what to install.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .edits import compute_dtype

LseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], "tuple[torch.Tensor, torch.Tensor]"]

#: Score elements materialised at once by the ``math`` backend (64 MB in float32).
MATH_CHUNK_ELEMENTS = 1 << 24

_HALF = frozenset({torch.float16, torch.bfloat16})
_ALL = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


@dataclass(frozen=True)
class Backend:
    """One kernel that returns ``(out, lse)``.

    :ivar name: registry key, the value of ``backend=``.
    :ivar fn: ``fn(q, k, v, scale) -> (out, lse)`` on ``[B, H, L, d]`` tensors.
    :ivar devices: device types it runs on (``"cpu"``, ``"cuda"``).
    :ivar dtypes: input dtypes it accepts.
    :ivar max_head_dim: largest head dim it accepts (None: any).
    :ivar module: the module it imports (None: torch only).
    :ivar install: what to install when ``module`` is missing.
    :ivar exact: False for quantised kernels (SageAttention): never chosen by "auto".
    """

    name: str
    fn: LseFn
    devices: frozenset
    dtypes: frozenset
    max_head_dim: Optional[int] = None
    module: Optional[str] = None
    install: str = ""
    exact: bool = True

    def installed(self) -> bool:
        if self.module is None:
            return True
        try:
            importlib.import_module(self.module)
        except Exception:  # ImportError, or a broken build raising at import
            return False
        return True

    def supports(self, q: torch.Tensor) -> bool:
        return (
            q.device.type in self.devices
            and q.dtype in self.dtypes
            and (self.max_head_dim is None or q.shape[-1] <= self.max_head_dim)
        )


# ---- the kernels --------------------------------------------------------------


def _torch_cpu_flash(q, k, v, scale):
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return out, lse


def _torch_cuda_flash(q, k, v, scale):
    res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    return res[0], res[1]


def _torch_cuda_efficient(q, k, v, scale):
    res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=scale)
    return res[0], res[1]


def _flash_attn2(q, k, v, scale):
    from flash_attn import flash_attn_func

    out, lse, _ = flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        dropout_p=0.0, softmax_scale=scale, causal=False, return_attn_probs=True,
    )
    return out.transpose(1, 2), lse


def _flash_attn3(q, k, v, scale):
    from flash_attn_interface import flash_attn_func

    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    try:  # newer FA3 builds return the LSE only on request
        res = flash_attn_func(*args, softmax_scale=scale, causal=False, return_attn_probs=True)
    except TypeError:
        res = flash_attn_func(*args, softmax_scale=scale, causal=False)
    if not isinstance(res, (tuple, list)) or len(res) < 2:
        raise RuntimeError("this FlashAttention-3 build does not return the softmax LSE")
    return res[0].transpose(1, 2), res[1]


def _xformers(q, k, v, scale):
    from xformers.ops import fmha

    out, lse = fmha.memory_efficient_attention_forward_requires_grad(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=None, scale=scale
    )
    return out.transpose(1, 2), lse


def _sage(q, k, v, scale):
    from sageattention import sageattn

    out, lse = sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale, return_lse=True)
    return out, lse


def _math(q, k, v, scale):
    """Plain torch, in row chunks: bounded memory on any device and dtype."""
    f = compute_dtype(q.dtype)
    b, h, lq, _ = q.shape
    lk = k.shape[2]
    out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h, lq, dtype=f, device=q.device)
    kf, vf = k.to(f), v.to(f)
    step = max(1, MATH_CHUNK_ELEMENTS // max(1, b * h * lk))
    for i in range(0, lq, step):
        s = torch.matmul(q[:, :, i : i + step].to(f), kf.transpose(-1, -2)).mul_(scale)
        l_ = torch.logsumexp(s, dim=-1)
        out[:, :, i : i + step] = torch.matmul(s.sub_(l_[..., None]).exp_(), vf).to(q.dtype)
        lse[:, :, i : i + step] = l_
    return out, lse


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("torch-cpu-flash", _torch_cpu_flash, frozenset({"cpu"}), _ALL),
        Backend("torch-cuda-flash", _torch_cuda_flash, frozenset({"cuda"}), _HALF, max_head_dim=256),
        Backend(
            "flash-attn", _flash_attn2, frozenset({"cuda"}), _HALF, max_head_dim=256,
            module="flash_attn", install="pip install 'numina-hooks[flash-attn]'",
        ),
        Backend(
            "flash-attn3", _flash_attn3, frozenset({"cuda"}), _HALF, max_head_dim=256,
            module="flash_attn_interface",
            install="build FlashAttention-3 (the hopper/ folder of the flash-attention repository)",
        ),
        Backend(
            "xformers", _xformers, frozenset({"cuda"}), frozenset({torch.float16, torch.bfloat16, torch.float32}),
            module="xformers.ops", install="pip install 'numina-hooks[xformers]'",
        ),
        Backend(
            "torch-cuda-efficient", _torch_cuda_efficient, frozenset({"cuda"}),
            frozenset({torch.float16, torch.bfloat16, torch.float32}),
        ),
        Backend(
            "sage", _sage, frozenset({"cuda"}), _HALF, max_head_dim=128,
            module="sageattention", install="pip install sageattention", exact=False,
        ),
        Backend("math", _math, frozenset({"cpu", "cuda", "mps", "xpu"}), _ALL),
    )
}

#: Order in which ``backend="auto"`` tries backends (SageAttention is quantised: explicit only).
AUTO_ORDER = (
    "torch-cpu-flash",
    "flash-attn3",
    "flash-attn",
    "torch-cuda-flash",
    "xformers",
    "torch-cuda-efficient",
    "math",
)

# ((device type, dtype, q head dim, v head dim), backend) combinations that raised at run time: skipped by "auto"
_FAILED: set = set()


def available_backends() -> list[str]:
    """Names of the backends whose modules import on this machine."""
    return [name for name, b in BACKENDS.items() if b.installed()]


def get_backend(name: str) -> Backend:
    """The registered backend ``name``; raises ImportError when its module is missing."""
    try:
        b = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; choose 'auto' or one of {sorted(BACKENDS)}") from None
    if not b.installed():
        raise ImportError(f"attention backend {name!r} needs the module {b.module!r}, which is not installed: {b.install}")
    return b


def _failure_key(q: torch.Tensor, dv: Optional[int] = None) -> tuple:
    """What a kernel's run-time refusal is remembered for: device, dtype and the head dims
    of q and v (a kernel refusing value heads of another size still runs equal ones)."""
    return (q.device.type, q.dtype, q.shape[-1], q.shape[-1] if dv is None else dv)


def _candidates(q: torch.Tensor, backend: str, dv: Optional[int] = None) -> list[Backend]:
    if backend != "auto":
        b = get_backend(backend)
        if not b.supports(q):
            raise ValueError(
                f"attention backend {backend!r} does not run {q.dtype} on {q.device.type} with head dim {q.shape[-1]} "
                f"(it supports devices {sorted(b.devices)}, dtypes {sorted(str(d) for d in b.dtypes)}"
                f"{'' if b.max_head_dim is None else f', head dim <= {b.max_head_dim}'}); use backend='auto'"
            )
        return [b]
    key = _failure_key(q, dv)
    return [
        BACKENDS[n]
        for n in AUTO_ORDER
        if BACKENDS[n].supports(q) and (key, n) not in _FAILED and BACKENDS[n].installed()
    ]


def _normalise(out, lse, q, v, name):
    b, h, lq, _ = q.shape
    if lse.ndim == 4 and lse.shape[-1] == 1:
        lse = lse[..., 0]
    if lse.shape[:2] != (b, h) or lse.shape[2] < lq:
        raise RuntimeError(f"backend {name!r} returned an LSE of shape {tuple(lse.shape)}; expected [{b}, {h}, >={lq}]")
    lse = lse[:, :, :lq].to(compute_dtype(q.dtype))
    if out.dtype != q.dtype:
        out = out.to(q.dtype)
    return out, lse


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention and the log-sum-exp of its scores, from one fused kernel.

    :param q: ``[B, H, Lq, d]``. :param k: ``[B, H, Lk, d]``. :param v: ``[B, H, Lk, dv]``.
    :param scale: softmax scale; None means ``1 / sqrt(d)``.
    :param backend: ``"auto"`` or a name in :data:`BACKENDS`.
    :returns: ``out [B, H, Lq, dv]`` in ``q.dtype`` and ``lse [B, H, Lq]`` float32 (float64
        for float64 inputs), natural log. Equivalent plain PyTorch::

            s = (q @ k.transpose(-1, -2)) * scale
            out, lse = torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"q, k, v must be [B, H, L, d]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    cands = _candidates(q, backend, v.shape[-1])
    if not cands:
        raise RuntimeError(f"no attention backend runs {q.dtype} on {q.device.type}")
    for i, b in enumerate(cands):
        try:
            out, lse = b.fn(q, k, v, scale)
        except (RuntimeError, NotImplementedError, TypeError):
            if backend != "auto" or i == len(cands) - 1:
                raise
            _FAILED.add((_failure_key(q, v.shape[-1]), b.name))
            continue
        return _normalise(out, lse, q, v, b.name)
    raise AssertionError("unreachable")


def choose_backend(q: torch.Tensor, backend: str = "auto") -> str:
    """The name of the backend ``attention_with_lse`` would try first for ``q``."""
    cands = _candidates(q, backend)
    return cands[0].name if cands else "none"
