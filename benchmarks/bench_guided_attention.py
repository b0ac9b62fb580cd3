"""Guided cross-attention against the unguided kernel, on the layouts the adapters hand over.

What it measures: one attention call with NUMINA's edits
(``guided_attention(..., method="sparse")``: the fused kernel with its log-sum-exp, then
the exact correction of the edited rows) against the unguided call the pipeline makes
anyway (``F.scaled_dot_product_attention`` on the same q/k/v), on CPU, in bfloat16 and
float32. Included: the kernel, the LSE, building the edit plan, the correction, the output.
Not included: building the ``ColumnEdit`` s (guidance caches them per layout, see
``bench_numina.py`` for whole generations).

Layouts (what ``AttentionView.q/k/v`` are in each adapter):

* ``wan-views``: ``[B, H, L, d]`` views of ``[B, L, H, d]`` tensors, token-major in
  memory: diffusers' Wan attention dispatch, DiffSynth-Studio (einops ``rearrange`` views)
  and the official Wan code; cross-attention, batch 1 (cond and uncond are separate
  calls), Wan2.1-1.3B size: 32760 video queries (21 x 30 x 52) x 512 text keys, 12 heads
  of dim 128. ``--quick``: 4096 queries.
* ``cogvideox-joint``: contiguous ``[B, H, L, d]``, the joint sequence (226 text tokens,
  then video) as queries *and* keys, batch 2 (uncond, cond; the cond row edited),
  CogVideoX-2B heads (30 x 64). Video tokens: 2048 (``--quick`` 1024) instead of the
  model's 17550, because a joint call at full size takes minutes on one CPU thread; the
  correction's cost grows with the edited rows only (linearly in video tokens) and the
  kernel's with queries x keys, so the ratio at full size is at most the one measured.

Edits, 30% of the video rows (two nouns of two text tokens each): ``mixed`` (a third each
suppressed, boosted by 5, set to a reference score; what ``boost_mode="absolute"``
guidance emits) and ``share`` (suppress plus raising the noun's softmax share to 0.4:
``boost_mode="mass"``).

Method: every round runs every variant once, in an order rotated by one each round; the
figure is the median over rounds of each round's time ratio to the unguided call.
Memory: the rise of the peak resident set during one call (output included) with glibc's
mmap threshold pinned so freed buffers go back to the OS, as a ratio to the unguided
call's. Errors: max abs difference from a float64 reference on the first 1024 queries,
next to the unguided kernel's own error.

Aims (the script exits 1 when one is missed): time ratio <= 1.10 and memory ratio
<= 1.10 in every layout, dtype and mix. ``--quick`` checks the time aim only: its outputs
are 8x smaller, so the correction's fixed work buffers (about 2 MiB) weigh 8x more.

    python benchmarks/bench_guided_attention.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402

from numina_hooks.attention import ColumnEdit, choose_backend, guided_attention, pre_softmax_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
AIM_TIME = 1.10
AIM_MEMORY = 1.10
EDITED_FRACTION = 0.3
MIXES = ("mixed", "share")

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: memory figures are then lower bounds (freed memory is reused)
    _LIBC = None


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn) -> int:
    """Rise of the peak resident set while ``fn()`` runs (its result included)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    base = _status("VmRSS")
    result = fn()
    peak = _status("VmHWM") - base
    del result
    return peak


def layouts(quick: bool) -> dict:
    """name -> (batch, heads, head dim, text tokens, video tokens, joint, edited batch row, what it stands for)."""
    return {
        "wan-views": dict(batch=1, heads=12, dim=128, text=512, video=4096 if quick else 32760, joint=False, row=0,
                          stands_for="diffusers Wan dispatch, DiffSynth, official Wan: [B, L, H, d] views, cross-attention"),
        "cogvideox-joint": dict(batch=2, heads=30, dim=64, text=226, video=1024 if quick else 2048, joint=True, row=1,
                                stands_for="CogVideoX joint attention: contiguous [B, H, L, d], text + video keys"),
    }


def make_qkv(spec: dict, dtype, g: torch.Generator):
    b, h, d = spec["batch"], spec["heads"], spec["dim"]
    if spec["joint"]:
        n = spec["text"] + spec["video"]
        return tuple(torch.randn(b, h, n, d, generator=g).to(dtype) for _ in range(3))
    # the model's projections are [B, L, H * d]; the view the kernel gets is their transpose
    q = torch.randn(b, spec["video"], h, d, generator=g).to(dtype).transpose(1, 2)
    k, v = (torch.randn(b, spec["text"], h, d, generator=g).to(dtype).transpose(1, 2) for _ in range(2))
    return q, k, v


def make_edits(mix: str, spec: dict, q, k, g: torch.Generator) -> list[ColumnEdit]:
    """30% of the video rows of the edited batch row over two nouns of two text tokens."""
    video0 = spec["text"] if spec["joint"] else 0
    text0 = 0
    n = spec["video"]
    rows = torch.randperm(n, generator=g)[: int(EDITED_FRACTION * n)].sort().values + video0
    noun_a, noun_b = torch.tensor([5, 6]) + text0, torch.tensor([9, 10]) + text0
    r1, r2, r3 = rows[0::3], rows[1::3], rows[2::3]
    b = spec["row"]
    if mix == "mixed":
        target = pre_softmax_scores(q, k, r1[:64], noun_b, b).mean(dim=(1, 2)) + 2.0  # per head
        return [
            ColumnEdit(b, torch.cat([r1, r2, r3]).sort().values, noun_a, "suppress"),
            ColumnEdit(b, r2, noun_b, "boost", 5.0),
            ColumnEdit(b, r3, noun_b, "set", target),
        ]
    if mix == "share":
        return [
            ColumnEdit(b, torch.cat([r1, r2]).sort().values, noun_a, "suppress"),
            ColumnEdit(b, r3, noun_b, "share", 0.4),
        ]
    raise ValueError(mix)


def accuracy(q, k, v, edits, rows=1024) -> dict:
    """Max abs error on the first ``rows`` queries against float64 (dense, exact)."""
    sub = [ColumnEdit(e.batch, e.rows[e.rows < rows], e.columns, e.mode, e.value, e.heads) for e in edits]
    q64, k64, v64 = q[:, :, :rows].double(), k.double(), v.double()
    ref = guided_attention(q64, k64, v64, sub, method="dense")
    plain_ref = F.scaled_dot_product_attention(q64, k64, v64)

    def err(x, r):
        return (x[:, :, :rows].double() - r).abs().max().item()

    return {
        "sparse": err(guided_attention(q, k, v, edits), ref),
        "unguided kernel (no edits)": err(F.scaled_dot_product_attention(q, k, v), plain_ref),
    }


def setup(name: str, spec: dict, dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = make_qkv(spec, dtype, g)
    variants = {"unguided": lambda: F.scaled_dot_product_attention(q, k, v)}
    edits = {mix: make_edits(mix, spec, q, k, g) for mix in MIXES}
    for mix, e in edits.items():
        variants[f"sparse/{mix}"] = lambda e=e: guided_attention(q, k, v, e)
    run = {
        "layout": name,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": {"q": list(q.shape), "k": list(k.shape), "q_stride": list(q.stride())},
        "backend": choose_backend(q),
        "edited_rows": int(EDITED_FRACTION * spec["video"]),
        "max_abs_error_vs_float64": {mix: accuracy(q, k, v, e) for mix, e in edits.items()},
    }
    return run, variants


def time_variants(run: dict, variants: dict, rounds: int) -> None:
    """Per-round ratios to the unguided call, variant order rotated by one each round."""
    names = list(variants)
    for fn in variants.values():  # warm-up
        fn()
    ratios = {n: [] for n in names if n != "unguided"}
    seconds = {n: [] for n in names}
    for r in range(rounds):
        t = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            variants[name]()
            t[name] = time.perf_counter() - t0
            seconds[name].append(t[name])
        for n in ratios:
            ratios[n].append(t[n] / t["unguided"])
    run["per_round_time_ratio"] = ratios
    run["time_ratio"] = {n: statistics.median(r) for n, r in ratios.items()}
    run["median_seconds"] = {n: statistics.median(s) for n, s in seconds.items()}


def memory_variants(run: dict, variants: dict) -> None:
    memory = {name: peak_extra_bytes(fn) for name, fn in variants.items()}
    run["peak_extra_bytes"] = memory
    run["memory_ratio"] = {n: m / memory["unguided"] for n, m in memory.items() if n != "unguided"}


def misses(runs: list, memory: bool = True) -> list[str]:
    out = []
    for r in runs:
        for n, x in r["time_ratio"].items():
            if not x <= AIM_TIME:
                out.append(f"{r['layout']} {r['dtype']} {n}: time {x:.2f}x > {AIM_TIME}x")
        for n, x in r["memory_ratio"].items():
            if memory and not x <= AIM_MEMORY:
                out.append(f"{r['layout']} {r['dtype']} {n}: memory {x:.2f}x > {AIM_MEMORY}x")
    return out


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"One guided cross-attention call vs the unguided call on the same q/k/v, CPU, "
        f"{cfg['threads']} thread(s), {int(EDITED_FRACTION * 100)}% of the video rows edited over two nouns; "
        f"median over {cfg['rounds']} rounds of per-round ratios, order rotated each round. "
        f"Aim: time{'' if result['quick'] else ' and peak-memory'} ratio <= {AIM_TIME}. Machine: {machine_line(result['machine'])}; "
        f"load average {result['load_average'][0]:.1f} at the end.",
        "",
        "| layout | q shape | dtype | unguided | mix | time ratio (per round) | memory ratio | max error sparse / unguided kernel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        for mix in MIXES:
            n = f"sparse/{mix}"
            rounds = ", ".join(f"{x:.2f}" for x in r["per_round_time_ratio"][n])
            err = r["max_abs_error_vs_float64"][mix]
            lines.append(
                f"| {r['layout']} | {'x'.join(map(str, r['shape']['q']))} | {r['dtype']} "
                f"| {r['median_seconds']['unguided'] * 1e3:.0f} ms, {r['peak_extra_bytes']['unguided'] / 2**20:.0f} MiB "
                f"| {mix} | **{r['time_ratio'][n]:.2f}x** ({rounds}) | {r['memory_ratio'][n]:.2f}x "
                f"| {err['sparse']:.1e} / {err['unguided kernel (no edits)']:.1e} |"
            )
    lines += ["", "Layouts: " + "; ".join(f"`{k}`: {v}" for k, v in cfg["layouts"].items()) + "."]
    missed = result["missed"]
    lines += ["", "Aims missed: " + "; ".join(missed) + "." if missed else "All aims met."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4096 Wan queries, 1024 CogVideoX video tokens, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--layouts", nargs="*", default=None, help="only these layouts")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 5)
    specs = {k: v for k, v in layouts(args.quick).items() if not args.layouts or k in args.layouts}
    cases = [setup(name, spec, dtype) for name, spec in specs.items() for dtype in (torch.bfloat16, torch.float32)]
    for run, variants in cases:
        time_variants(run, variants, rounds)
        print(run["layout"], run["dtype"], {n: round(x, 3) for n, x in run["time_ratio"].items()}, flush=True)
    if _LIBC is not None:  # from here on (memory only) big frees go straight back to the OS
        _LIBC.mallopt(-3, 1 << 17)  # M_MMAP_THRESHOLD = 128 KiB, no longer adaptive
    for run, variants in cases:
        memory_variants(run, variants)
    runs = [run for run, _ in cases]
    cfg = dict(rounds=rounds, threads=args.threads, layouts={k: v["stands_for"] for k, v in specs.items()})
    result = {"machine": describe(), "load_average": os.getloadavg(), "config": cfg, "quick": args.quick, "runs": runs}
    result["missed"] = misses(runs, memory=not args.quick)
    RESULTS.mkdir(exist_ok=True)
    stem = "guided_attention_quick" if args.quick else "guided_attention"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 1 if result["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
