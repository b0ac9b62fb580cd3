"""One prepared run of the checks that need a GPU; writes ``gpu_check.json`` and ``gpu_check.md``.

    python benchmarks/gpu_check.py --out OUTDIR                  # CUDA, full sizes
    python benchmarks/gpu_check.py --quick --device cpu --out D  # every size shrunk, < 1 min on CPU

``scripts/gpu-check.sh OUTDIR`` runs the first line on a machine with one CUDA GPU.
Five sections, each in its own ``try``: a failing one records its error text in the JSON
and the others still run; the JSON and the table are rewritten after every section, so a
run killed part-way still reports what it finished.

1. ``lse_backends``: every backend of ``numina_hooks.attention.lse`` (installed or not)
   on bfloat16 q/k/v: max abs error of ``out`` and ``lse`` of ``attention_with_lse``
   against a float64 reference, next to the error of plain ``F.scaled_dot_product_attention``.
   Shapes: Wan2.1-1.3B cross-attention (1 x 12 heads x 32760 queries x 512 keys, dim 128)
   and a square self-attention block (4096 x 4096).
2. ``guided_attention``: one cross-attention call at Wan2.1-1.3B size in bfloat16 --
   ``unguided`` (torch SDPA), ``sparse/mixed`` and ``sparse/share`` (``guided_attention``,
   the edits of ``bench_guided_attention.py``, 30% of the rows) and ``dense/mixed`` (the
   materialised bias through SDPA) -- on contiguous ``[B, H, L, d]`` and on ``[B, H, L, d]``
   views of ``[B, L, H, d]`` tensors (what diffusers' Wan dispatch passes). Time: CUDA
   events, every variant once per round in an order rotated each round, the median of
   the per-round ratios to ``unguided``. Memory: rise of ``torch.cuda.max_memory_allocated``
   during one call (output included), ratio to ``unguided``'s. Errors against float64 on
   the first 1024 queries.
3. ``numina_vs_plain``: a randomly initialised full-size Wan2.1-1.3B
   ``WanTransformer3DModel`` (30 blocks, 12 x 128, ffn 8960, text dim 4096; bfloat16; a
   one-layer UMT5 text encoder and a tiny VAE of the same strides, no weights loaded),
   480 x 832, 81 frames (21 x 60 x 104 latents, 32760 tokens), 5 steps, output latents:
   the unhooked pipeline against NUMINA with counts the layout does not have (phase 2 must
   run with guided steps; the JSON says whether it did). Wall clock (synchronised), transformer
   forwards (a forward pre-hook) and peak ``max_memory_allocated``; per-round ratios, order
   rotated, after one plain warm-up. Two rounds; the second is skipped when it would end
   past ``--deadline`` seconds from the start (default 330).
4. ``compile_graphs``: ``torch._dynamo.explain`` graph and graph-break counts of a small
   Wan transformer forward: plain, attached with no plugin, attached with an observer plugin.
5. ``identify_reader``: phase 1's reader from q/k on the device at Wan2.1-1.3B's grid
   (30x52, 12 heads of 128, bfloat16, 3 frames of ``bench_identify.reader_views``): seconds
   per frame and noun, the frame's bare q.k products on the device, and whether its layouts
   equal those read on the CPU (issue 16's reader, "on the device the model runs on"); and
   whether ``layout_from_attention`` on maps that live on the device gives the CPU's layout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402
from memory import peak_memory  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import hookimpl, testing  # noqa: E402
from numina_hooks.attention import BACKENDS, attention_with_lse, available_backends, choose_backend, guided_attention  # noqa: E402

_T0 = time.perf_counter()
PROMPT = "three cats chasing two dogs in a park"
MISMATCH = {"cats": 5, "dogs": 4}  # a random layout never has these counts in all 21 frames


def log(msg: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"[{now} +{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


def sizes(quick: bool) -> dict:
    """Every size the run uses; ``quick`` shrinks them to a CPU smoke run."""
    if quick:
        return dict(heads=4, dim=64, video=1024, text=64, self_tokens=512, rounds=2,
                    reader=dict(grid=(15, 26), frames=2, rounds=2),
                    wan=dict(layers=2, heads=2, head_dim=12, ffn=32, text_dim=32, height=64, width=64, frames=9,
                             steps=4, text_len=24, rounds=1),
                    compile=dict(layers=1, heads=2, head_dim=12, text_dim=32))
    return dict(heads=12, dim=128, video=21 * 30 * 52, text=512, self_tokens=4096, rounds=15,
                reader=dict(grid=(30, 52), frames=3, rounds=7),
                wan=dict(layers=30, heads=12, head_dim=128, ffn=8960, text_dim=4096, height=480, width=832,
                         frames=81, steps=5, text_len=512, rounds=2),
                compile=dict(layers=2, heads=2, head_dim=64, text_dim=64))


# ---------------------------------------------------------------------------- timing helpers


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Seconds of one call: CUDA events on a GPU, perf_counter otherwise."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        del out
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    out = fn()
    del out
    return time.perf_counter() - t0


def peak_rise(fn, device: str) -> int:
    """Rise of the peak allocated memory while ``fn()`` runs (its output included)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return peak
    with peak_memory(device) as mem:
        out = fn()
    del out
    return mem["peak_bytes"]


def rotated_rounds(variants: dict, device: str, rounds: int, base: str) -> dict:
    """Every variant once per round, order rotated by one each round; per-round ratios to ``base``."""
    names = list(variants)
    for fn in variants.values():  # warm-up
        timed(fn, device)
    seconds = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            seconds[n].append(timed(variants[n], device))
    ratios = {n: [s / b for s, b in zip(seconds[n], seconds[base])] for n in names if n != base}
    return {
        "median_ms": {n: statistics.median(s) * 1e3 for n, s in seconds.items()},
        "time_ratio": {n: statistics.median(r) for n, r in ratios.items()},
        "time_ratio_per_round": ratios,
    }


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref).abs().max().item()


# ---------------------------------------------------------------------------- 1. LSE backends


def _reference(q, k, v):
    q64, k64, v64 = q.double(), k.double(), v.double()
    s = torch.matmul(q64, k64.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(s, -1) @ v64, torch.logsumexp(s, -1)


def check_lse_backends(device: str, sz: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    h, d = sz["heads"], sz["dim"]
    shapes = {"cross": (sz["video"], sz["text"]), "self": (sz["self_tokens"], sz["self_tokens"])}
    installed = set(available_backends())
    result = {"installed": sorted(installed), "shapes": {}, "backends": {}}
    for shape_name, (lq, lk) in shapes.items():
        q = torch.randn(1, h, lq, d, generator=g).to(device, torch.bfloat16)
        k, v = (torch.randn(1, h, lk, d, generator=g).to(device, torch.bfloat16) for _ in range(2))
        ref_out, ref_lse = _reference(q, k, v)
        result["shapes"][shape_name] = {
            "q": list(q.shape), "k": list(k.shape), "auto_backend": choose_backend(q),
            "unguided_sdpa_max_abs_error_out": max_err(F.scaled_dot_product_attention(q, k, v), ref_out),
        }
        for name, backend in BACKENDS.items():
            row = result["backends"].setdefault(name, {"exact": backend.exact})
            if name not in installed:
                row[shape_name] = {"status": f"not installed ({backend.install})"}
                continue
            if not backend.supports(q):
                row[shape_name] = {"status": f"does not run bfloat16 on {q.device.type}"}
                continue
            try:
                out, lse = attention_with_lse(q, k, v, backend=name)
                row[shape_name] = {
                    "status": "ok",
                    "max_abs_error_out": max_err(out, ref_out),
                    "max_abs_error_lse": max_err(lse, ref_lse),
                    "lse_dtype": str(lse.dtype).replace("torch.", ""),
                    "lse_shape_ok": tuple(lse.shape) == tuple(ref_lse.shape),
                }
            except Exception as exc:  # noqa: BLE001 - a failing backend is a finding, not a stop
                row[shape_name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
            log(f"  lse {shape_name} {name}: {row[shape_name]}")
        del q, k, v, ref_out, ref_lse
    return result


# ---------------------------------------------------------------------------- 2. guided attention


def _qkv(layout: str, sz: dict, device: str, g: torch.Generator):
    h, d = sz["heads"], sz["dim"]
    if layout == "contiguous":
        q = torch.randn(1, h, sz["video"], d, generator=g).to(device, torch.bfloat16)
        k, v = (torch.randn(1, h, sz["text"], d, generator=g).to(device, torch.bfloat16) for _ in range(2))
        return q, k, v
    # [B, L, H, d] projections, viewed as [B, H, L, d]: what diffusers' Wan dispatch hands over
    q = torch.randn(1, sz["video"], h, d, generator=g).to(device, torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(1, sz["text"], h, d, generator=g).to(device, torch.bfloat16).transpose(1, 2) for _ in range(2))
    return q, k, v


def _on(device: str, edits: list) -> list:
    """The edits with their index and value tensors on ``device`` (as guidance builds them)."""
    from numina_hooks.attention import ColumnEdit

    def mv(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    return [ColumnEdit(e.batch, mv(e.rows), mv(e.columns), e.mode, mv(e.value), mv(e.heads)) for e in edits]


def _guided_errors(q, k, v, edits, rows: int = 1024) -> dict:
    from numina_hooks.attention import ColumnEdit

    sub = [ColumnEdit(e.batch, e.rows[e.rows < rows], e.columns, e.mode, e.value, e.heads) for e in edits]
    q64, k64, v64 = q[:, :, :rows].double(), k.double(), v.double()
    ref = guided_attention(q64, k64, v64, sub, method="dense")
    return {
        "sparse": max_err(guided_attention(q, k, v, edits)[:, :, :rows], ref),
        "dense": max_err(guided_attention(q, k, v, edits, method="dense")[:, :, :rows], ref),
        "unguided_sdpa_no_edits": max_err(F.scaled_dot_product_attention(q, k, v)[:, :, :rows],
                                          F.scaled_dot_product_attention(q64, k64, v64)),
    }


def check_guided_attention(device: str, sz: dict) -> dict:
    from bench_guided_attention import EDITED_FRACTION, make_edits

    spec = dict(batch=1, heads=sz["heads"], dim=sz["dim"], text=sz["text"], video=sz["video"], joint=False, row=0)
    result = {"edited_fraction": EDITED_FRACTION, "rounds": sz["rounds"], "layouts": {}}
    for layout in ("contiguous", "wan-views"):
        g = torch.Generator().manual_seed(0)
        q, k, v = _qkv(layout, sz, device, g)
        edits = {mix: _on(device, make_edits(mix, spec, q, k, g)) for mix in ("mixed", "share")}
        variants = {
            "unguided": lambda: F.scaled_dot_product_attention(q, k, v),
            "sparse/mixed": lambda: guided_attention(q, k, v, edits["mixed"]),
            "sparse/share": lambda: guided_attention(q, k, v, edits["share"]),
            "dense/mixed": lambda: guided_attention(q, k, v, edits["mixed"], method="dense"),
        }
        run = {"q": list(q.shape), "q_stride": list(q.stride()), "k": list(k.shape), "backend": choose_backend(q)}
        run["max_abs_error_vs_float64"] = {mix: _guided_errors(q, k, v, e) for mix, e in edits.items()}
        run.update(rotated_rounds(variants, device, sz["rounds"], "unguided"))
        mem = {n: peak_rise(fn, device) for n, fn in variants.items()}
        run["peak_rise_mib"] = {n: m / 2**20 for n, m in mem.items()}
        run["memory_ratio"] = {n: m / max(mem["unguided"], 1) for n, m in mem.items() if n != "unguided"}
        result["layouts"][layout] = run
        log(f"  guided {layout}: time {fmt(run['time_ratio'])} memory {fmt(run['memory_ratio'])}")
        del q, k, v, edits, variants
    return result


def fmt(d: dict) -> dict:
    return {k: round(x, 3) for k, x in d.items()}


# ---------------------------------------------------------------------------- 3. NUMINA vs plain


def build_wan_pipeline(cfg: dict, device: str, dtype=torch.bfloat16):
    """A diffusers ``WanPipeline``: random transformer of ``cfg``'s size, one-layer UMT5 of
    width ``text_dim``, tiny VAE with Wan's strides (4x in time, 8x in space)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = testing.tiny_tokenizer()
    with torch.device(device):
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=cfg["text_dim"], d_kv=8, d_ff=64, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )).eval()
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=cfg["heads"], attention_head_dim=cfg["head_dim"],
            in_channels=16, out_channels=16, text_dim=cfg["text_dim"], freq_dim=256, ffn_dim=cfg["ffn"],
            num_layers=cfg["layers"], cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
            rope_max_seq_len=1024,
        ).eval()
        to_dtype_keeping_fp32_modules(transformer, dtype)
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_dtype_keeping_fp32_modules(model, dtype) -> None:
    """Cast ``model`` to ``dtype`` but keep its ``_keep_in_fp32_modules`` (rope, time
    embedder, norms, scale-shift tables) in float32, as ``from_pretrained(torch_dtype=...)`` does."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point():
            t.data = t.data.to(torch.float32 if keep.intersection(name.split(".")) else dtype)


class _Forwards:
    """Transformer forwards, counted by a torch forward pre-hook (nothing of numina-hooks)."""

    def __init__(self, module):
        self.n = 0
        self._h = module.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.n += 1

    def remove(self):
        self._h.remove()


def check_numina_vs_plain(device: str, sz: dict) -> dict:
    from numina_hooks.numina.config import NuminaConfig

    cfg = sz["wan"]
    t0 = time.perf_counter()
    pipe = build_wan_pipeline(cfg, device)
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    log(f"  built the pipeline ({n_params / 1e9:.3f} B transformer parameters) in {time.perf_counter() - t0:.1f} s")
    call = dict(height=cfg["height"], width=cfg["width"], num_frames=cfg["frames"], num_inference_steps=cfg["steps"],
                guidance_scale=5.0, max_sequence_length=cfg["text_len"], output_type="latent")
    result = {
        "config": {**cfg, "transformer_parameters": n_params, "dtype": "bfloat16", "prompt": PROMPT,
                   "counts_asked": MISMATCH, "guidance_scale": 5.0},
        "reports": [],
    }

    def run(mode: str):
        forwards = _Forwards(pipe.transformer)
        gen = torch.Generator().manual_seed(0)
        report = None
        try:
            if mode == "plain":
                with peak_memory(device) as mem, torch.no_grad():
                    sync(device)
                    t = time.perf_counter()
                    out = pipe(prompt=PROMPT, generator=gen, **call)
                    sync(device)
                    dt = time.perf_counter() - t
            else:
                handle = numina_hooks.attach(pipe, config=NuminaConfig())
                try:
                    with peak_memory(device) as mem, torch.no_grad():
                        sync(device)
                        t = time.perf_counter()
                        out = handle(prompt=PROMPT, counts=MISMATCH, generator=gen, **call)
                        sync(device)
                        dt = time.perf_counter() - t
                finally:
                    handle.detach()
                report = out.numina
            finite = bool(torch.isfinite(out.frames).all())
            del out
        finally:
            forwards.remove()
        return dt, forwards.n, mem["peak_total_bytes"], mem["peak_bytes"], finite, report

    modes = ("plain", "numina")
    log("  warm-up: plain")
    run("plain")
    seconds = {m: [] for m in modes}
    rows = {}
    for r in range(cfg["rounds"]):
        round_s = sum(seconds["plain"][-1:]) + sum(seconds["numina"][-1:])
        if r and time.perf_counter() - _T0 + 1.5 * round_s > sz["deadline_s"]:
            log(f"  stopping after {r} round(s): another would pass the deadline of {sz['deadline_s']:.0f} s")
            break
        for m in modes[r % 2:] + modes[: r % 2]:
            dt, calls, peak_total, peak_rise_, finite, report = run(m)
            seconds[m].append(dt)
            rows[m] = {"transformer_forwards": calls, "peak_allocated_mib": peak_total / 2**20,
                       "peak_rise_mib": peak_rise_ / 2**20, "output_finite": finite}
            if report is not None:
                result["reports"].append({
                    "phase2_ran": report.phase2_ran, "reason": report.reason,
                    "guided_steps": list(report.guided_steps), "model_calls": dict(report.model_calls),
                    "counts_found": {n: [int(c) for c in v] for n, v in report.counts_found.items()},
                    "edits": report.edits, "timings": {k: float(x) for k, x in report.timings.items()},
                })
            log(f"  round {r} {m}: {dt:.2f} s, {calls} forwards, peak {peak_total / 2**20:.0f} MiB")
    ratios = [n / p for n, p in zip(seconds["numina"], seconds["plain"])]
    result["cases"] = {m: {**rows[m], "seconds": statistics.median(seconds[m]), "seconds_per_round": seconds[m]}
                       for m in modes}
    result["rounds_done"] = len(ratios)
    result["numina_time_ratio"] = statistics.median(ratios)
    result["numina_time_ratio_per_round"] = ratios
    result["numina_forwards_ratio"] = rows["numina"]["transformer_forwards"] / rows["plain"]["transformer_forwards"]
    result["numina_memory_ratio"] = rows["numina"]["peak_allocated_mib"] / rows["plain"]["peak_allocated_mib"]
    last = result["reports"][-1]
    result["phase2_guided"] = bool(last["phase2_ran"] and last["guided_steps"])
    del pipe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------- 4. compile graphs


class _Observer:
    def __init__(self):
        self.views = 0

    @hookimpl
    def on_attention(self, view):
        self.views += 1


def _explain(model, inputs: dict) -> dict:
    torch._dynamo.reset()
    t = time.perf_counter()
    ex = torch._dynamo.explain(model)(**inputs)
    return {
        "graph_count": ex.graph_count,
        "graph_break_count": ex.graph_break_count,
        "break_reasons": [str(getattr(b, "reason", b))[:300] for b in ex.break_reasons][:8],
        "seconds": time.perf_counter() - t,
    }


def check_compile_graphs(device: str, sz: dict) -> dict:
    from diffusers import WanTransformer3DModel

    c = sz["compile"]
    torch._logging.set_logs(dynamo=logging.ERROR)  # the graph breaks go into the JSON, not the log
    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=c["heads"], attention_head_dim=c["head_dim"], in_channels=16,
            out_channels=16, text_dim=c["text_dim"], freq_dim=256, ffn_dim=64, num_layers=c["layers"],
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        ).eval()
        to_dtype_keeping_fp32_modules(model, torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 3, 8, 8, generator=g).to(device, torch.bfloat16),
        timestep=torch.tensor([500.0], device=device),
        encoder_hidden_states=torch.randn(1, 16, c["text_dim"], generator=g).to(device, torch.bfloat16),
        return_dict=False,
    )
    result = {"config": dict(c, latents=[1, 16, 3, 8, 8], text_tokens=16)}
    cases = {"plain": [], "attached-idle": None, "attached-observer": "observer"}
    for name, plugin in cases.items():
        try:
            with torch.no_grad():
                if name == "plain":
                    result[name] = _explain(model, inputs)
                else:
                    observer = _Observer() if plugin else None
                    with numina_hooks.attach(model, *([observer] if observer else [])) as handle:
                        row = _explain(model, inputs)
                        row["bypassed_calls"] = dict(handle.bypassed_calls)
                    if observer is not None:
                        row["observer_views"] = observer.views
                    result[name] = row
        except Exception as exc:  # noqa: BLE001
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-3000:]}
        r = result[name]
        log(f"  compile {name}: " + (f"failed: {r['error'][:300]}" if "error" in r else
                                     f"{r['graph_count']} graph(s), {r['graph_break_count']} break(s)"))
    return result


# ---------------------------------------------------------------------------- report


def check_identify_reader(device: str, sz: dict) -> dict:
    """Phase 1's reader from q/k (``LayoutReader``, ``self_source="qk"``: the softmax
    normalisers and the neighbour entries computed on the device, the partition on the CPU)
    on the synthetic views of ``bench_identify.reader_views`` (12 heads of 128, bfloat16,
    ``[1, L, H, d]`` as diffusers' Wan hands them over): seconds per frame and noun (the self
    view and the cross view of one noun, median over rounds; every call ends on CPU results,
    so wall clock is synchronised), the frame's bare float32 q.k products on the device (the
    floor of an exact reader), and whether the layouts equal those read on the CPU."""
    import numpy as np

    import bench_identify as B
    cfg = sz["reader"]
    grid, frames = tuple(cfg["grid"]), int(cfg["frames"])
    columns = {"noun": [3]}
    views = B.reader_views(grid, frames, device=device)
    B._read("qk", views, columns)  # first calls: imports, kernels
    self_s, cross_s = [], []
    for _ in range(int(cfg["rounds"])):
        sync(device)
        reader, s, c = B._read("qk", views, columns)
        self_s.append(s / frames)
        cross_s.append(c / frames)
    q, k = views[0].q[0], views[0].k[0]  # [heads, L, d] (views of the [L, heads, d] tensors)
    n = grid[0] * grid[1]
    qf, kf = q[:, :n].float().contiguous(), k[:, :n].float().contiguous()
    timed(lambda: torch.bmm(qf, kf.transpose(1, 2)), device)
    products = statistics.median(timed(lambda: torch.bmm(qf, kf.transpose(1, 2)), device)
                                 for _ in range(int(cfg["rounds"])))
    on_cpu, _, _ = B._read("qk", B.reader_views(grid, frames), columns)
    same = (reader.nouns["noun"].frame_counts == on_cpu.nouns["noun"].frame_counts
            and all((a.partitions.regions == b.partitions.regions).all()
                    for a, b in zip(reader.frames, on_cpu.frames)))
    lift_diff = 0.0  # over the lifts both measured (finite: NaN = not measured, -inf = a sink's region)
    for a, b in zip(reader.frames, on_cpu.frames):
        for x, y in zip(a.partitions.lift, b.partitions.lift):
            if len(x) == len(y):
                both = np.isfinite(x) & np.isfinite(y)
                lift_diff = max(lift_diff, float(np.abs(x[both] - y[both]).max(initial=0.0)))
    # the public layout_from_attention on maps that live on the device (copied to the CPU inside)
    from numina_hooks.numina.layout import layout_from_attention
    scene, _ = B._scene("rope", 3, grid, 0.5, 903, 1)
    fr = scene.frames[0]
    api_same = bool(np.array_equal(layout_from_attention(fr.self_attn.to(device), fr.cross_attn.to(device), grid).labels,
                                   layout_from_attention(fr.self_attn, fr.cross_attn, grid).labels))
    total = [a + b for a, b in zip(self_s, cross_s)]
    return {"layout_from_attention_on_device_same": api_same,"grid": list(grid), "frames": frames, "heads": int(q.shape[0]), "head_dim": int(q.shape[2]),
            "seconds_per_frame_and_noun": statistics.median(total),
            "self_seconds_per_frame": statistics.median(self_s),
            "cross_seconds_per_frame": statistics.median(cross_s),
            "seconds_per_round": total, "products_seconds_per_frame": products,
            "same_layouts_as_cpu": bool(same), "max_lift_difference_vs_cpu": lift_diff,
            "counts": reader.nouns["noun"].frame_counts}


SECTIONS = {
    "lse_backends": check_lse_backends,
    "guided_attention": check_guided_attention,
    "compile_graphs": check_compile_graphs,
    "numina_vs_plain": check_numina_vs_plain,
    "identify_reader": check_identify_reader,
}


def _e(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def markdown(result: dict) -> str:
    m = result["machine"]
    ver = ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items())
    lines = [f"GPU check ({'quick' if result['quick'] else 'full'} sizes), device {result['device']}. "
             f"Machine: {machine_line(m)}. Versions: {ver}.", ""]
    s = result["sections"]
    if not result["device"].startswith("cuda"):
        lines += ["Not on a GPU: memory figures are the sampled resident set of the process (a smoke run, "
                  "not a measurement).", ""]
    lse = s.get("lse_backends", {})
    if "error" in lse:
        lines += [f"**LSE backends**: failed: {lse['error'].splitlines()[0]}", ""]
    elif lse:
        lines += ["**LSE backends** (bfloat16, max abs error vs float64: out / lse)", "",
                  "| backend | " + " | ".join(lse["shapes"]) + " |", "|---|" + "---|" * len(lse["shapes"])]
        for name, row in lse["backends"].items():
            cells = []
            for shape in lse["shapes"]:
                r = row.get(shape, {})
                cells.append(f"{_e(r['max_abs_error_out'])} / {_e(r['max_abs_error_lse'])}" if r.get("status") == "ok"
                             else (r.get("status", "-") if r.get("status") != "failed" else f"failed: {r['error'][:80]}"))
            lines.append(f"| {name} | " + " | ".join(c.split(" (")[0] for c in cells) + " |")
        lines.append("| torch SDPA (out only) | " + " | ".join(
            _e(v["unguided_sdpa_max_abs_error_out"]) for v in lse["shapes"].values()) + " |")
        lines += ["", "Shapes: " + "; ".join(f"{k} q {v['q']} k {v['k']} (auto: {v['auto_backend']})"
                                             for k, v in lse["shapes"].items()) + ".", ""]
    ga = s.get("guided_attention", {})
    if "error" in ga:
        lines += [f"**Guided attention**: failed: {ga['error'].splitlines()[0]}", ""]
    elif ga:
        lines += [f"**Guided cross-attention** (bfloat16, {int(ga['edited_fraction'] * 100)}% of rows edited; "
                  f"median of {ga['rounds']} rotated rounds)", "",
                  "| layout | unguided | variant | time ratio | memory ratio | max error (float64 ref) |",
                  "|---|---|---|---|---|---|"]
        for layout, r in ga["layouts"].items():
            for n, t in r["time_ratio"].items():
                method, mix = n.split("/")
                err = r["max_abs_error_vs_float64"][mix][method]
                lines.append(f"| {layout} | {r['median_ms']['unguided']:.2f} ms, {r['peak_rise_mib']['unguided']:.0f} MiB "
                             f"| {n} | {t:.2f}x | {r['memory_ratio'][n]:.2f}x | {err:.1e} |")
        lines.append("")
    nv = s.get("numina_vs_plain", {})
    if "error" in nv:
        lines += [f"**NUMINA vs plain**: failed: {nv['error'].splitlines()[0]}", ""]
    elif nv:
        c = nv["config"]
        lines += [f"**NUMINA vs plain** (random Wan, {c['layers']} blocks x {c['heads']} heads x {c['head_dim']}, "
                  f"{c['width']}x{c['height']}, {c['frames']} frames, {c['steps']} steps, bfloat16; "
                  f"phase 2 guided: {nv['phase2_guided']})", "",
                  "| case | seconds | transformer forwards | peak allocated MiB |", "|---|---|---|---|"]
        for m_, r in nv["cases"].items():
            lines.append(f"| {m_} | {r['seconds']:.2f} | {r['transformer_forwards']} | {r['peak_allocated_mib']:.0f} |")
        per_round = ", ".join(f"{x:.2f}" for x in nv["numina_time_ratio_per_round"])
        lines += ["", f"NUMINA / plain: wall clock {nv['numina_time_ratio']:.2f}x (per round, order rotated, "
                      f"the first with one-time costs: {per_round}), forwards "
                      f"{nv['numina_forwards_ratio']:.2f}x, peak memory {nv['numina_memory_ratio']:.2f}x.", ""]
    ir = s.get("identify_reader", {})
    if "error" in ir:
        lines += [f"**Identify reader**: failed: {ir['error'].splitlines()[0]}", ""]
    elif ir:
        g = "x".join(str(x) for x in ir["grid"])
        lines += [f"**Identify reader** (phase 1's reader from q/k, {g}, {ir['heads']} heads of {ir['head_dim']}, "
                  f"bfloat16, {ir['frames']} frames; the partition on the CPU): "
                  f"{ir['seconds_per_frame_and_noun'] * 1e3:.1f} ms per frame and noun (self view "
                  f"{ir['self_seconds_per_frame'] * 1e3:.1f} ms, cross view {ir['cross_seconds_per_frame'] * 1e3:.1f} ms; "
                  f"median of {len(ir['seconds_per_round'])} rounds); the frame's bare float32 q.k products on the device "
                  f"{ir['products_seconds_per_frame'] * 1e3:.2f} ms; layouts as read on the CPU: "
                  f"{ir['same_layouts_as_cpu']} (largest lift difference {ir['max_lift_difference_vs_cpu']:.1e}); "
                  f"`layout_from_attention` on maps on the device gives the CPU's layout: "
                  f"{ir['layout_from_attention_on_device_same']}.", ""]
    cg = s.get("compile_graphs", {})
    if "error" in cg:
        lines += [f"**Compiled graphs**: failed: {cg['error'].splitlines()[0]}", ""]
    elif cg:
        lines += ["**Compiled graphs** (`torch._dynamo.explain`, small Wan transformer)", "",
                  "| case | graphs | graph breaks |", "|---|---|---|"]
        for name in ("plain", "attached-idle", "attached-observer"):
            r = cg.get(name, {})
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error'][:80]} | |")
            elif r:
                lines.append(f"| {name} | {r['graph_count']} | {r['graph_break_count']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def versions() -> dict:
    """Versions of what the check runs on; a package that is missing reads "not installed"."""
    import importlib

    out = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("diffusers", "transformers", "flash_attn", "xformers"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as exc:  # noqa: BLE001 - a broken build is reported, not raised
            out[name] = "not installed" if isinstance(exc, ImportError) else f"import failed: {exc}"[:200]
    return out


def write(result: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="every size shrunk (a CPU smoke run)")
    parser.add_argument("--deadline", type=float, default=330.0,
                        help="seconds since start after which NUMINA vs plain starts no further round (default 330)")
    parser.add_argument("--sections", nargs="*", choices=list(SECTIONS), default=None, help="only these sections")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        torch.set_num_threads(1)
    sz = dict(sizes(args.quick), deadline_s=args.deadline)
    result = {"machine": describe(), "versions": versions(), "device": args.device, "quick": args.quick,
              "sizes": sz, "sections": {},
              "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    log(f"gpu check on {args.device} ({machine_line(result['machine'])}), quick={args.quick}, out={out}")
    log(f"versions: {result['versions']}")
    for name, fn in SECTIONS.items():
        if args.sections and name not in args.sections:
            continue
        log(f"section {name}")
        t = time.perf_counter()
        try:
            result["sections"][name] = fn(args.device, sz)
        except Exception as exc:  # noqa: BLE001 - a partial run still reports
            result["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                                        "traceback": traceback.format_exc()[-4000:]}
            log(f"  FAILED: {type(exc).__name__}: {str(exc)[:300]}")
        result["sections"][name]["section_seconds"] = time.perf_counter() - t
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        write(result, out)
        log(f"section {name} done in {time.perf_counter() - t:.1f} s")
    result["total_seconds"] = time.perf_counter() - _T0
    write(result, out)
    print(markdown(result), flush=True)
    log(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if any("error" in v for v in result["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
