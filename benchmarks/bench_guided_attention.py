"""Guided cross-attention: sparse column bias vs the unguided kernel vs a dense bias.

At Wan proportions (8192 video queries x 512 text keys, 12 heads of dim 128, batch 1),
30% of the rows edited over 4 text columns, in bfloat16 and float32 on CPU. Every
variant runs side by side in one process, interleaved, and is reported relative to the
same unguided kernel (``F.scaled_dot_product_attention`` without a mask):

* ``unguided``: plain SDPA, no edits;
* ``sparse``: ``guided_attention(..., method="sparse")`` (kernel + LSE, corrected rows);
* ``sparse-recompute``: the same with ``recompute="suppressed"`` (suppressed rows always
  take the exact split-KV path: the price of the guard when it fires on every row);
* ``dense``: ``guided_attention(..., method="dense")`` (bias materialised, SDPA with mask).

Machines shared with other jobs: with every core busy, each small op of the correction
waits for a descheduled OpenMP thread; ``--threads 1`` measures the arithmetic instead.

Peak extra memory is the rise of the resident set (``VmHWM`` after resetting it) during
one call, output included, with glibc's mmap threshold pinned so that freed buffers go
back to the OS. ``--quick`` runs 2048 queries and fewer repeats.

    python benchmarks/bench_guided_attention.py [--quick]
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


def make_edits(mix: str, q, k, frac: float, g: torch.Generator) -> list[ColumnEdit]:
    """30% of the rows over 4 columns (two nouns of two tokens each)."""
    lq = q.shape[2]
    rows = torch.randperm(lq, generator=g)[: int(frac * lq)].sort().values
    noun_a, noun_b = torch.tensor([5, 6]), torch.tensor([9, 10])
    both = torch.cat([noun_a, noun_b])
    if mix == "boost":
        return [ColumnEdit(0, rows, both, "boost", 5.0)]
    if mix == "set":
        target = pre_softmax_scores(q, k, rows[:64], both, 0).mean(dim=(1, 2)) + 2.0  # per head
        return [ColumnEdit(0, rows, both, "set", target)]
    if mix == "suppress":
        return [ColumnEdit(0, rows, both, "suppress")]
    if mix == "mixed":  # a third each; the boosted/set rows of noun B are also suppressed for noun A
        r1, r2, r3 = rows[0::3], rows[1::3], rows[2::3]
        target = pre_softmax_scores(q, k, r1[:64], noun_b, 0).mean(dim=(1, 2)) + 2.0
        return [
            ColumnEdit(0, r1, noun_a, "suppress"),
            ColumnEdit(0, torch.cat([r2, r3]).sort().values, noun_a, "suppress"),
            ColumnEdit(0, r2, noun_b, "boost", 5.0),
            ColumnEdit(0, r3, noun_b, "set", target),
        ]
    raise ValueError(mix)


def setup(dtype, lq, lk, heads, dim, frac, mixes):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, dim, generator=g).to(dtype) for n in (lq, lk, lk))
    variants = {"unguided": lambda: F.scaled_dot_product_attention(q, k, v)}
    edits = {mix: make_edits(mix, q, k, frac, g) for mix in mixes}
    for mix, e in edits.items():
        variants[f"sparse/{mix}"] = lambda e=e: guided_attention(q, k, v, e)
        if mix in ("suppress", "mixed"):
            variants[f"sparse-recompute/{mix}"] = lambda e=e: guided_attention(q, k, v, e, recompute="suppressed")
        variants[f"dense/{mix}"] = lambda e=e: guided_attention(q, k, v, e, method="dense")
    run = {
        "dtype": str(dtype).replace("torch.", ""),
        "backend": choose_backend(q),
        "edited_rows": int(frac * lq),
        "max_abs_error_vs_float64": {mix: accuracy(q, k, v, e) for mix, e in edits.items()},
    }
    return run, variants


def accuracy(q, k, v, edits, rows=1024) -> dict:
    """Max abs error of each path on the first ``rows`` queries against float64 (dense, exact)."""
    sub = [ColumnEdit(e.batch, e.rows[e.rows < rows], e.columns, e.mode, e.value, e.heads) for e in edits]
    q64, k64, v64 = q[:, :, :rows].double(), k.double(), v.double()
    ref = guided_attention(q64, k64, v64, sub, method="dense")
    plain_ref = F.scaled_dot_product_attention(q64, k64, v64)

    def err(x, r):
        return (x[:, :, :rows].double() - r).abs().max().item()

    return {
        "sparse": err(guided_attention(q, k, v, edits), ref),
        "dense": err(guided_attention(q, k, v, edits, method="dense"), ref),
        "unguided kernel (no edits)": err(F.scaled_dot_product_attention(q, k, v), plain_ref),
    }


def time_variants(run, variants, repeats):
    for fn in variants.values():  # warm-up
        fn()
    times = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: background load hits every variant alike
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    run["median_seconds"] = med
    run["min_seconds"] = {name: min(t) for name, t in times.items()}
    run["time_ratio_vs_unguided"] = {n: t / med["unguided"] for n, t in med.items()}


def memory_variants(run, variants):
    memory = {name: peak_extra_bytes(fn) for name, fn in variants.items()}
    run["peak_extra_bytes"] = memory
    run["memory_ratio_vs_unguided"] = {n: m / memory["unguided"] for n, m in memory.items()}


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"Guided cross-attention, {cfg['queries']} queries x {cfg['keys']} keys, {cfg['heads']} heads x {cfg['head_dim']}, "
        f"batch 1, {int(cfg['edited_fraction'] * 100)}% of rows edited over 4 columns; median of {cfg['repeats']} "
        f"interleaved runs. Machine: {machine_line(result['machine'])}; load average "
        f"{result['load_average'][0]:.1f} at the end of the run.",
        "",
        "| dtype | mix | sparse time | sparse-recompute time | dense time | sparse memory | dense memory "
        "| max error sparse / dense / unguided kernel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        t, m = r["time_ratio_vs_unguided"], r["peak_extra_bytes"]
        base = m["unguided"]
        for mix in cfg["mixes"]:
            rec = t.get(f"sparse-recompute/{mix}")
            lines.append(
                f"| {r['dtype']} | {mix} | {t[f'sparse/{mix}']:.2f}x | {'-' if rec is None else f'{rec:.2f}x'} "
                f"| {t[f'dense/{mix}']:.2f}x | {m[f'sparse/{mix}'] / 2**20:.0f} MiB ({m[f'sparse/{mix}'] / base:.2f}x) "
                f"| {m[f'dense/{mix}'] / 2**20:.0f} MiB ({m[f'dense/{mix}'] / base:.2f}x) "
                "| " + " / ".join(f"{x:.1e}" for x in r["max_abs_error_vs_float64"][mix].values()) + " |"
            )
    lines += [
        "",
        "Times are relative to the unguided kernel (plain SDPA) of the same dtype: "
        + ", ".join(f"{r['dtype']} {r['median_seconds']['unguided'] * 1e3:.0f} ms" for r in result["runs"])
        + ". Errors: max abs difference from float64 on the first 1024 queries (values ~ N(0, 1)); the unguided "
        "kernel's own error without edits is the yardstick. Memory is the peak rise of the resident set during one call, output included; the unguided "
        "call's is " + ", ".join(f"{r['dtype']} {r['peak_extra_bytes']['unguided'] / 2**20:.0f} MiB" for r in result["runs"]) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2048 queries, 2 repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lq = 2048 if args.quick else 8192
    repeats = args.repeats or (2 if args.quick else 5)
    mixes = ["boost", "set", "suppress", "mixed"]
    cfg = dict(queries=lq, keys=512, heads=12, head_dim=128, edited_fraction=0.3, repeats=repeats, mixes=mixes)
    cases = [setup(dtype, lq, 512, 12, 128, 0.3, mixes) for dtype in (torch.bfloat16, torch.float32)]
    for run, variants in cases:
        time_variants(run, variants, repeats)
    if _LIBC is not None:  # from here on (memory only) big frees go straight back to the OS
        _LIBC.mallopt(-3, 1 << 17)  # M_MMAP_THRESHOLD = 128 KiB, no longer adaptive
    for run, variants in cases:
        memory_variants(run, variants)
    runs = [run for run, _ in cases]
    result = {"machine": describe(), "load_average": os.getloadavg(), "config": cfg, "quick": args.quick, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    stem = "guided_attention_quick" if args.quick else "guided_attention"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
