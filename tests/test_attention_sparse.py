"""The sparse-bias guided attention against an independent float64 dense reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from numina_hooks.attention import (
    BACKENDS,
    ColumnEdit,
    attention_with_lse,
    dense_bias,
    guided_attention,
    pre_softmax_scores,
)
from numina_hooks.attention import lse as lse_mod
from numina_hooks.attention import sparse as sparse_mod

# tolerance against the float64 reference of the same (rounded) inputs, see _err
ATOL = {torch.float32: 3e-5, torch.bfloat16: 3e-2, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(autouse=True, params=["correction", "direct"])
def path(request, monkeypatch):
    """Every test runs on both ways the sparse path computes edited rows: the correction of
    the kernel's output (large calls) and the direct recompute over all keys (small calls),
    whatever its size; tests of the correction alone pin ``path`` to "correction"."""
    monkeypatch.setattr(sparse_mod, "DIRECT_ELEMENTS", 0 if request.param == "correction" else 1 << 40)
    return request.param


def _qkv(b=2, h=3, lq=48, lk=24, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (lq, lk, lk))
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _grid(value, hs, r, t):
    """The documented value broadcast, written independently of the package."""
    val = torch.as_tensor(value, dtype=torch.float64)
    if val.ndim == 1:
        val = val[:, None, None]
    elif val.ndim == 2:
        val = val[:, :, None]
    return val.expand(hs, r, t)


def reference(q, k, v, edits, scale=None):
    """softmax(q k^T scale + bias) v in float64, the bias built cell by cell (later edit wins)."""
    q, k, v = q.double(), k.double(), v.double()
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    logits = s.clone()
    for e in edits:
        heads = torch.arange(q.shape[1]) if e.heads is None else e.heads
        if not (len(heads) and len(e.rows) and len(e.columns)):
            continue
        hi, ri, ci = heads[:, None, None], e.rows[None, :, None], e.columns[None, None, :]
        cell = s[e.batch][hi, ri, ci]
        if e.mode == "suppress":
            new = torch.full_like(cell, -math.inf)
        elif e.mode == "boost":
            new = cell + _grid(e.value, len(heads), len(e.rows), len(e.columns))
        else:
            new = _grid(e.value, len(heads), len(e.rows), len(e.columns)).clone()
        logits[e.batch][hi, ri, ci] = new
    return torch.softmax(logits, -1) @ v


def _err(out, ref):
    """Largest error, relative to max(1, |ref|): bf16 rounds a 20 to the nearest 0.125."""
    return ((out.double() - ref).abs() / ref.abs().clamp_min(1)).max().item()


# ---- every mode, every value shape, both dtypes ----------------------------------------


VALUE_SHAPES = {
    "scalar": lambda h, r: 2.5,
    "0-d": lambda h, r: torch.tensor(-1.5),
    "[H]": lambda h, r: torch.linspace(-2, 3, h),
    "[H,R]": lambda h, r: torch.randn(h, r, generator=torch.Generator().manual_seed(3)) * 3,
    "[1,R] shared": lambda h, r: torch.randn(1, r, generator=torch.Generator().manual_seed(4)) * 3,
    "[H,1]": lambda h, r: torch.arange(h, dtype=torch.float32)[:, None],
    "[1,R,T]": lambda h, r: torch.randn(1, r, 3, generator=torch.Generator().manual_seed(5)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["suppress", "boost", "set"])
@pytest.mark.parametrize("shape", list(VALUE_SHAPES))
def test_every_mode_and_value_shape_matches_float64(mode, shape, dtype):
    q, k, v = _qkv(dtype=dtype)
    rows = torch.arange(5, 30, 2)
    e = ColumnEdit(1, rows, torch.tensor([3, 4, 9]), mode, VALUE_SHAPES[shape](q.shape[1], len(rows)))
    ref = reference(q, k, v, [e])
    for method in ("sparse", "dense"):
        assert _err(guided_attention(q, k, v, [e], method=method), ref) < ATOL[dtype], method


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_subset_and_per_head_set_target(dtype):
    q, k, v = _qkv(h=4, dtype=dtype)
    rows = torch.tensor([0, 7, 8, 40])
    heads = torch.tensor([3, 1])
    target = pre_softmax_scores(q, k, torch.arange(10, 20), torch.tensor([2, 5]), 0).mean(dim=(1, 2))[heads]
    edits = [ColumnEdit(0, rows, torch.tensor([2, 5]), "set", target, heads=heads)]
    out = guided_attention(q, k, v, edits)
    assert _err(out, reference(q, k, v, edits)) < ATOL[dtype]
    plain, _ = attention_with_lse(q, k, v)
    assert torch.equal(out[:, [0, 2]], plain[:, [0, 2]])  # heads not edited are untouched


def test_pre_softmax_scores_are_the_scores():
    q, k, _ = _qkv()
    rows, cols = torch.tensor([4, 1, 30]), torch.tensor([0, 23])
    s = pre_softmax_scores(q, k, rows, cols, batch=1, scale=0.3)
    full = q[1].double() @ k[1].double().transpose(-1, -2) * 0.3
    assert s.shape == (3, 3, 2) and s.dtype == torch.float32
    torch.testing.assert_close(s.double(), full[:, rows][:, :, cols], atol=1e-5, rtol=0)


def test_shared_bias_variant_as_boost():
    """The reference code's variant: one bias shared by heads, target - mean-over-heads score."""
    q, k, v = _qkv()
    rows, cols = torch.arange(10, 20), torch.tensor([1, 2])
    s = pre_softmax_scores(q, k, rows, cols, batch=0)
    shared = (4.0 - s.mean(0, keepdim=True))  # [1, R, T]
    e = ColumnEdit(0, rows, cols, "boost", shared)
    assert _err(guided_attention(q, k, v, [e]), reference(q, k, v, [e])) < ATOL[torch.float32]


# ---- adversarial ------------------------------------------------------------------------


def _dominant_columns(dtype, lq=64, lk=32, d=32, strength=10.0):
    """Noun columns aligned with the queries so that they carry ~all the softmax mass."""
    q, k, v = _qkv(b=1, h=2, lq=lq, lk=lk, d=d, dtype=torch.float32, seed=7)
    cols = torch.tensor([5, 6])
    u = torch.nn.functional.normalize(torch.randn(d, generator=torch.Generator().manual_seed(8)), dim=0)
    q = q + 4 * u
    k[:, :, cols] = strength * u
    v[:, :, cols] *= 20  # the removed values are big: cancellation would show
    return q.to(dtype), k.to(dtype), v.to(dtype), cols


@pytest.mark.parametrize("path", ["correction"], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_suppressing_columns_that_carry_most_of_the_mass(dtype, path):
    q, k, v, cols = _dominant_columns(dtype)
    s = pre_softmax_scores(q, k, torch.arange(64), torch.arange(32), 0)
    mass = torch.softmax(s, -1)[..., cols].sum(-1)
    assert mass.median() > 0.9  # the case is as adversarial as intended
    e = ColumnEdit(0, torch.arange(0, 64, 2), cols, "suppress")
    ref = reference(q, k, v, [e])
    assert _err(guided_attention(q, k, v, [e]), ref) < ATOL[dtype]
    if dtype == torch.bfloat16:
        # without the guard the correction divides the kernel's bf16 rounding by c ~ 0
        assert _err(guided_attention(q, k, v, [e], guard=0.0), ref) > 3 * ATOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [-1e4, -30.0, 30.0, 100.0])
def test_extreme_biases(bias, dtype):
    q, k, v = _qkv(dtype=dtype)
    rows, cols = torch.arange(0, 48, 3), torch.tensor([0, 11, 12])
    e = ColumnEdit(0, rows, cols, "boost", bias)
    out = guided_attention(q, k, v, [e])
    assert torch.isfinite(out).all()
    assert _err(out, reference(q, k, v, [e])) < ATOL[dtype]
    if bias == -1e4:  # a bias of -1e4 is a suppression
        sup = guided_attention(q, k, v, [ColumnEdit(0, rows, cols, "suppress")])
        torch.testing.assert_close(out, sup, atol=ATOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_set_far_above_and_below_the_scores(dtype):
    q, k, v = _qkv(dtype=dtype)
    rows, cols = torch.arange(20), torch.tensor([2, 3])
    edits = [ColumnEdit(0, rows, cols, "set", 90.0), ColumnEdit(1, rows, cols, "set", -80.0)]
    assert _err(guided_attention(q, k, v, edits), reference(q, k, v, edits)) < ATOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rows_and_batches_without_edits_are_bit_identical(dtype):
    q, k, v = _qkv(b=3, dtype=dtype)
    rows = torch.tensor([3, 4, 5, 17])
    edits = [
        ColumnEdit(1, rows, torch.tensor([1, 2]), "suppress"),
        ColumnEdit(1, torch.tensor([5, 30]), torch.tensor([7]), "boost", 50.0),
    ]
    out = guided_attention(q, k, v, edits)
    plain, _ = attention_with_lse(q, k, v)
    untouched = torch.ones(q.shape[2], dtype=torch.bool)
    untouched[[3, 4, 5, 17, 30]] = False
    assert torch.equal(out[:, :, untouched], plain[:, :, untouched])
    assert torch.equal(out[[0, 2]], plain[[0, 2]])
    assert not torch.equal(out[1], plain[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_edits_is_plain_attention(dtype):
    q, k, v = _qkv(dtype=dtype)
    plain = F.scaled_dot_product_attention(q, k, v)
    empty = [
        ColumnEdit(0, torch.tensor([], dtype=torch.long), torch.tensor([1]), "suppress"),
        ColumnEdit(1, torch.tensor([1, 2]), torch.tensor([], dtype=torch.long), "boost", 3.0),
        ColumnEdit(1, torch.tensor([1, 2]), torch.tensor([4]), "boost", 3.0, heads=torch.tensor([], dtype=torch.long)),
    ]
    for edits in ([], empty):
        assert torch.equal(guided_attention(q, k, v, edits), plain)
        assert torch.equal(guided_attention(q, k, v, edits, method="dense"), plain)


# ---- overlapping edits ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_different_nouns_on_shared_rows(dtype):
    """A row suppressed for one noun and boosted / set for others: the combined bias."""
    q, k, v = _qkv(dtype=dtype)
    edits = [
        ColumnEdit(0, torch.arange(0, 30), torch.tensor([1, 2]), "suppress"),
        ColumnEdit(0, torch.arange(10, 40), torch.tensor([5, 6, 7]), "boost", 8.0),
        ColumnEdit(0, torch.arange(20, 48), torch.tensor([12]), "set", torch.randn(3, 28)),
        ColumnEdit(1, torch.arange(0, 48), torch.tensor([0]), "boost", 1.0, heads=torch.tensor([2])),
    ]
    ref = reference(q, k, v, edits)
    for recompute in ("guarded", "suppressed", "all"):
        assert _err(guided_attention(q, k, v, edits, recompute=recompute), ref) < ATOL[dtype], recompute
    assert _err(guided_attention(q, k, v, edits, method="dense"), ref) < ATOL[dtype]


def test_later_edit_wins_on_the_same_cells():
    q, k, v = _qkv()
    rows, cols = torch.arange(10), torch.tensor([3, 4])
    boost_then_set = [ColumnEdit(0, rows, cols, "boost", 50.0), ColumnEdit(0, rows, cols, "set", 1.0)]
    only_set = [ColumnEdit(0, rows, cols, "set", 1.0)]
    torch.testing.assert_close(guided_attention(q, k, v, boost_then_set), guided_attention(q, k, v, only_set))
    suppress_then_boost = [ColumnEdit(0, rows, cols, "suppress"), ColumnEdit(0, rows[:5], cols[:1], "boost", 2.0)]
    ref = reference(q, k, v, suppress_then_boost)
    assert _err(guided_attention(q, k, v, suppress_then_boost), ref) < ATOL[torch.float32]
    twice = [ColumnEdit(0, rows, cols, "boost", 2.0), ColumnEdit(0, rows, cols, "boost", 2.0)]
    torch.testing.assert_close(guided_attention(q, k, v, twice), guided_attention(q, k, v, twice[:1]))


def test_dense_bias_is_the_documented_bias():
    q, k, _ = _qkv()
    edits = [ColumnEdit(0, [1, 2], [3], "suppress"), ColumnEdit(0, [2], [4], "set", 7.0), ColumnEdit(1, [0], [5], "boost", 2.0)]
    bias = dense_bias(edits, q, k)
    s = pre_softmax_scores(q, k, [2], [4], 0)
    assert bias.shape == (2, 3, 48, 24) and bias.dtype == torch.float32
    assert torch.isneginf(bias[0, :, [1, 2], 3]).all()
    torch.testing.assert_close(bias[0, :, 2, 4], 7.0 - s[:, 0, 0])
    assert (bias[1, :, 0, 5] == 2.0).all()
    assert torch.count_nonzero(bias) == 2 * 3 + 3 + 3


# ---- generated row/column sets -----------------------------------------------------------


@st.composite
def edit_lists(draw, b=2, h=2, lq=24, lk=12):
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(["suppress", "boost", "set"]))
        rows = draw(st.lists(st.integers(0, lq - 1), min_size=0, max_size=lq, unique=True))
        cols = draw(st.lists(st.integers(0, lk - 1), min_size=1, max_size=lk // 2, unique=True))
        heads = draw(st.one_of(st.none(), st.lists(st.integers(0, h - 1), min_size=1, max_size=h, unique=True)))
        hs = h if heads is None else len(heads)
        value = draw(
            st.one_of(
                st.floats(-40, 100, allow_nan=False),
                st.lists(st.floats(-20, 60, allow_nan=False), min_size=hs, max_size=hs).map(torch.tensor),
            )
        )
        edits.append(ColumnEdit(draw(st.integers(0, b - 1)), rows, cols, mode, value, heads=heads))
    return edits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=edit_lists(), seed=st.integers(0, 2**16))
def test_generated_edits_match_float64(edits, seed):
    q, k, v = _qkv(b=2, h=2, lq=24, lk=12, d=8, seed=seed)
    ref = reference(q, k, v, edits)
    assert _err(guided_attention(q, k, v, edits), ref) < 5e-5
    assert _err(guided_attention(q, k, v, edits, method="dense"), ref) < 5e-5


# ---- the log-sum-exp kernels --------------------------------------------------------------


def _check_lse_backend(name, device="cpu", dtype=torch.float32, atol=None):
    q, k, v = _qkv(b=2, h=2, lq=70, lk=40, d=64, dtype=dtype)
    q, k, v = q.to(device), k.to(device), v.to(device)
    out, lse = attention_with_lse(q, k, v, scale=0.2, backend=name)
    s = q.double() @ k.double().transpose(-1, -2) * 0.2
    assert out.dtype == q.dtype and lse.dtype == torch.float32 and lse.shape == (2, 2, 70)
    torch.testing.assert_close(lse.double(), torch.logsumexp(s, -1), atol=atol or 1e-4, rtol=0)
    torch.testing.assert_close(out.double(), torch.softmax(s, -1) @ v.double(), atol=atol or 1e-4, rtol=0)
    e = ColumnEdit(0, torch.arange(0, 70, 3), torch.tensor([1, 5]), "boost", 30.0)
    f = [ColumnEdit(1, torch.arange(0, 70, 2), torch.tensor([2, 3]), "suppress")]
    ref = reference(q.cpu(), k.cpu(), v.cpu(), [e] + f, scale=0.2)
    assert _err(guided_attention(q, k, v, [e] + f, scale=0.2, backend=name).cpu(), ref) < (atol or 1e-4) * 3


@pytest.mark.parametrize("name", ["torch-cpu-flash", "math"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_lse_backends(name, dtype):
    _check_lse_backend(name, dtype=dtype, atol=None if dtype == torch.float32 else 3e-2)


def test_math_backend_in_row_chunks(monkeypatch):
    monkeypatch.setattr(lse_mod, "MATH_CHUNK_ELEMENTS", 2 * 2 * 40 * 8)  # 8 rows at a time
    _check_lse_backend("math")


@pytest.mark.parametrize(
    "name,module", [("flash-attn", "flash_attn"), ("flash-attn3", "flash_attn_interface"), ("xformers", "xformers.ops"), ("sage", "sageattention")]
)
def test_optional_gpu_backends(name, module):
    pytest.importorskip(module)
    if not torch.cuda.is_available():
        pytest.skip(f"{name} needs CUDA")
    _check_lse_backend(name, device="cuda", dtype=torch.bfloat16, atol=5e-2 if name == "sage" else 2e-2)


@pytest.mark.parametrize("name", ["torch-cuda-flash", "torch-cuda-efficient"])
def test_torch_cuda_backends(name):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _check_lse_backend(name, device="cuda", dtype=torch.bfloat16, atol=2e-2)


def test_missing_backend_says_what_to_install():
    missing = [b for b in BACKENDS.values() if b.module and not b.installed()]
    if not missing:
        pytest.skip("every optional backend is installed")
    q, k, v = _qkv()
    for b in missing:
        with pytest.raises(ImportError, match="not installed") as info:
            guided_attention(q, k, v, [], backend=b.name)
        assert b.install in str(info.value)
    assert any("numina-hooks[flash-attn]" in b.install for b in BACKENDS.values())


def test_auto_picks_the_cpu_flash_kernel():
    from numina_hooks.attention import choose_backend

    assert choose_backend(torch.zeros(1, 1, 2, 8)) == "torch-cpu-flash"
    assert choose_backend(torch.zeros(1, 1, 2, 8, dtype=torch.bfloat16)) == "torch-cpu-flash"


def test_a_kernel_refusing_other_value_heads_still_runs_equal_ones(monkeypatch):
    """torch's CPU flash kernel refuses v with another head size than q; "auto" falls back
    for that call and keeps the fast kernel for calls whose heads are equal."""
    from numina_hooks.attention import choose_backend

    monkeypatch.setattr(lse_mod, "_FAILED", set())
    q, k, v = _qkv(h=2, lq=6, lk=5, d=8)
    out, _ = attention_with_lse(q, k, v[..., :3])  # dv 3 != d 8: served by another backend
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v[..., :3]), atol=1e-6)
    assert choose_backend(q) == "torch-cpu-flash"


# ---- bad input --------------------------------------------------------------------------


def test_bad_input_errors_name_the_problem():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="mode"):
        ColumnEdit(0, [1], [1], "scale")
    with pytest.raises(ValueError, match="repeated"):
        ColumnEdit(0, [1, 1], [1], "boost", 1.0)
    with pytest.raises(ValueError, match="finite"):
        ColumnEdit(0, [1], [1], "boost", math.inf)
    with pytest.raises(IndexError, match="rows out of range"):
        guided_attention(q, k, v, [ColumnEdit(0, [48], [1], "boost", 1.0)])
    with pytest.raises(IndexError, match="batch"):
        guided_attention(q, k, v, [ColumnEdit(2, [1], [1], "boost", 1.0)])
    with pytest.raises(ValueError, match=r"per-head.*\[1, 2\]"):
        guided_attention(q, k, v, [ColumnEdit(0, [1, 2], [1], "set", torch.ones(2))])
    with pytest.raises(ValueError, match="every key"):
        guided_attention(q, k, v, [ColumnEdit(0, [1], list(range(24)), "suppress")])
    with pytest.raises(ValueError, match="unknown attention backend"):
        guided_attention(q, k, v, [], backend="cudnn-magic")
    with pytest.raises(ValueError, match="method"):
        guided_attention(q, k, v, [], method="fast")


# ---- memory: nothing of size queries x keys -----------------------------------------------


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        res = func(*args, **(kwargs or {}))
        for t in res if isinstance(res, (tuple, list)) else (res,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return res


@pytest.mark.parametrize("path", ["correction"], indirect=True)
def test_sparse_path_allocates_nothing_of_size_queries_by_keys(path):
    lq, lk, h, d = 16384, 512, 2, 16
    q, k, v = _qkv(b=1, h=h, lq=lq, lk=lk, d=d)
    rows = torch.arange(0, lq, 3)  # a third of the rows, every mode
    edits = [
        ColumnEdit(0, rows[::3], torch.tensor([5, 6, 7, 8]), "suppress"),
        ColumnEdit(0, rows[1::3], torch.tensor([5, 6, 7, 8]), "boost", 30.0),
        ColumnEdit(0, rows[2::3], torch.tensor([5, 6, 7, 8]), "set", torch.randn(h, len(rows[2::3]))),
    ]
    qk_bytes = h * lq * lk * 4
    with LargestTensor() as sparse:
        guided_attention(q, k, v, edits, recompute="all")
    assert sparse.largest <= q.nbytes < qk_bytes / 16
    with LargestTensor() as dense:  # the detector does see a [Lq, Lk] tensor
        guided_attention(q[:, :, :2048], k, v, [ColumnEdit(0, rows[:100], [5], "suppress")], method="dense")
    assert dense.largest >= h * 2048 * lk * 4


def test_strided_inputs_as_attention_views_hand_them_over():
    """Views of [B, L, H, d] tensors (what adapters see) work without a copy by the caller."""
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in _qkv())
    assert not q.is_contiguous()
    edits = [ColumnEdit(0, torch.arange(0, 48, 2), [1, 2], "suppress"), ColumnEdit(1, torch.arange(9), [3], "set", 2.0)]
    assert _err(guided_attention(q, k, v, edits), reference(q, k, v, edits)) < ATOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("recompute", ["guarded", "all"])
def test_token_major_views_every_mode(dtype, recompute):
    """[B, H, L, d] views of [B, L, H, d] tensors (diffusers Wan, DiffSynth, official Wan):
    every mode, several chunks of rows, both batch rows, against the float64 dense path;
    rows no edit touches are the unguided kernel's output on the same views, bit for bit."""
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in _qkv(lq=160, dtype=dtype))
    assert q.stride(2) > q.stride(1)
    cols = torch.tensor([3, 4])
    edits = [
        ColumnEdit(0, torch.arange(0, 160, 3), cols, "suppress"),
        ColumnEdit(0, torch.arange(1, 160, 3), cols, "boost", 4.0),
        ColumnEdit(1, torch.arange(0, 90, 2), cols, "share", 0.6),
        ColumnEdit(1, torch.arange(1, 90, 2), [7], "set", 2.0, heads=[0, 2]),
    ]
    ref = guided_attention(q.double(), k.double(), v.double(), edits, method="dense")
    out = guided_attention(q, k, v, edits, recompute=recompute)
    assert _err(out, ref) < ATOL[dtype]
    plain, _ = attention_with_lse(q, k, v)
    assert torch.equal(out[0, :, 2::3], plain[0, :, 2::3])
    assert torch.equal(out[1, :, 90:], plain[1, :, 90:])


@pytest.mark.parametrize("path", ["correction"], indirect=True)
def test_token_major_views_in_row_chunks(monkeypatch, path):
    """Many small chunks over the token-major buffers give the same result as one chunk."""
    from numina_hooks.attention import sparse

    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in _qkv(b=1, lq=200))
    edits = [ColumnEdit(0, torch.arange(0, 200, 2), [2, 5], "boost", 3.0), ColumnEdit(0, torch.arange(1, 200, 4), [9], "suppress")]
    whole = guided_attention(q, k, v, edits)
    monkeypatch.setattr(sparse, "CELL_ELEMENTS", 3 * 3 * 20)  # 20 rows a chunk of cells
    monkeypatch.setattr(sparse, "ROW_ELEMENTS", 3 * 16 * 7)  # 7 rows a gather
    chunked = guided_attention(q, k, v, edits)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert _err(chunked, reference(q, k, v, edits)) < ATOL[torch.float32]


def test_reused_edit_structure_with_new_values_matches_a_fresh_build():
    """Guidance reuses one edit structure with a new value per step: the cached plan
    gives what validating and building from scratch gives, and in-place changes to the
    index tensors are seen."""
    from numina_hooks.attention import PLANS

    q, k, v = _qkv(lq=40)
    rows, cols = torch.arange(0, 38, 3), torch.tensor([2, 5])
    base = [
        ColumnEdit(1, rows, cols, "suppress"),
        ColumnEdit(1, rows + 1, cols, "boost", 0.0),
        ColumnEdit(0, rows, [7], "share", 0.5),
        ColumnEdit(0, rows[:5], [8], "share", 0.2),
        ColumnEdit(0, rows[5:], [9], "set", 0.0, heads=[1]),
    ]
    PLANS.clear()
    for step, (boost, share, target) in enumerate([(1.0, 0.3, torch.tensor([2.0])), (4.0, 0.7, torch.tensor([-1.0]))]):
        edits = [base[0], base[1].with_value(boost), base[2].with_value(share), base[3], base[4].with_value(target)]
        hits = PLANS.hits
        out = guided_attention(q, k, v, edits)
        assert PLANS.hits == hits + (step > 0)
        ref = guided_attention(q.double(), k.double(), v.double(), edits, method="dense")
        assert _err(out, ref) < ATOL[torch.float32]
    with pytest.raises(ValueError, match="summing to"):
        guided_attention(q, k, v, [base[0], base[1], base[2].with_value(0.9), base[3]])
    # a reused structure checks each call's values as a fresh build does
    reused = [base[0], base[1].with_value(1.0), base[2].with_value(0.3), base[3], base[4]]
    guided_attention(q, k, v, reused)
    with pytest.raises(ValueError, match="must be finite"):
        guided_attention(q, k, v, reused[:4] + [base[4].with_value(torch.tensor([float("nan")]))])
    with pytest.raises(ValueError, match="per-head"):
        guided_attention(q, k, v, reused[:4] + [base[4].with_value(torch.tensor([1.0, 2.0]))])
    with pytest.raises(ValueError, match="not shares"):
        guided_attention(q, k, v, reused[:2] + [base[2].with_value(torch.tensor(1.5)), base[3], base[4]])
    # per-head values on all heads (guidance's template copies), overlapping a later suppress
    per_head = [base[0], ColumnEdit(1, rows + 1, [2, 7], "set", 0.0), ColumnEdit(1, rows[:4] + 1, [7], "suppress")]
    for target in (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 4.0, -1.0])):
        edits = [base[1].with_value(2.0), per_head[0], per_head[1].with_value(target), per_head[2]]  # set wins on column 2
        ref = guided_attention(q.double(), k.double(), v.double(), edits, method="dense")
        assert _err(guided_attention(q, k, v, edits), ref) < ATOL[torch.float32]
    with pytest.raises(ValueError, match="must be finite"):
        guided_attention(q, k, v, [per_head[0], per_head[1].with_value(torch.tensor([1.0, float("inf"), 0.0])), per_head[2]])
    base[1].rows[0] = 39  # in place: the structure is built again, and checked
    edits = [base[0], base[1].with_value(1.0)]
    assert _err(guided_attention(q, k, v, edits), reference(q, k, v, edits)) < ATOL[torch.float32]
    base[1].rows[0] = 40
    with pytest.raises(IndexError, match="rows out of range"):
        guided_attention(q, k, v, edits)


def test_suppressed_columns_leave_the_softmax_entirely():
    """Suppression is a bias of -inf (there is no strength to set): a suppressed row attends
    exactly as if the suppressed keys did not exist, and other rows are untouched."""
    q, k, v = _qkv(b=1, lq=12, lk=10)
    rows, cols = torch.tensor([1, 4, 7]), torch.tensor([2, 5, 6])
    out = guided_attention(q, k, v, [ColumnEdit(0, rows, cols, "suppress")])
    kept = torch.tensor([j for j in range(10) if j not in cols.tolist()])
    without = F.scaled_dot_product_attention(q[:, :, rows], k[:, :, kept], v[:, :, kept])
    torch.testing.assert_close(out[:, :, rows], without, atol=ATOL[torch.float32], rtol=0)
    others = torch.tensor([i for i in range(12) if i not in rows.tolist()])
    plain = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[:, :, others], plain[:, :, others], atol=ATOL[torch.float32], rtol=0)
    bias = dense_bias([ColumnEdit(0, rows, cols, "suppress")], q, k)
    assert torch.isneginf(bias[0][:, rows][:, :, cols]).all()


@pytest.mark.parametrize("path", ["correction"], indirect=True)
def test_small_calls_take_the_direct_path_and_large_ones_the_correction(path, monkeypatch):
    """With the shipped limit a 144-token call recomputes its edited rows over every key
    (no correction arithmetic runs) and a call past the limit corrects the kernel's output;
    both give the float64 reference."""
    monkeypatch.undo()  # the shipped DIRECT_ELEMENTS
    calls = []
    real = sparse_mod._direct_rows
    monkeypatch.setattr(sparse_mod, "_direct_rows", lambda *a: calls.append(1) or real(*a))
    q, k, v = _qkv(b=1, h=4, lq=144, lk=24, d=32)
    edits = [ColumnEdit(0, torch.arange(0, 144, 2), [3, 4], "share", 0.5), ColumnEdit(0, torch.arange(1, 60, 2), [3, 4], "suppress")]
    ref = guided_attention(q.double(), k.double(), v.double(), edits, method="dense")
    assert _err(guided_attention(q, k, v, edits), ref) < ATOL[torch.float32]
    assert calls == [1]
    monkeypatch.setattr(sparse_mod, "DIRECT_ELEMENTS", 4 * 100 * 24)  # under the 4 x 102 x 24 edited block
    assert _err(guided_attention(q, k, v, edits), ref) < ATOL[torch.float32]
    assert calls == [1]
