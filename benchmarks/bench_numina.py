"""NUMINA vs plain generation: transformer calls, wall clock, peak memory.

Cases, measured side by side in one run on a small Wan pipeline:

* ``plain``: the pipeline alone;
* ``numina-match``: NUMINA where the layout already has the asked counts (phase 1
  runs on and is the result). A random-weight model's layout matches only by
  chance, so the benchmark forces the decision (``LayoutReader.matches`` -> True):
  it measures the cost of reading the layout, which is what the match case adds;
* ``numina-mismatch``: counts the layout does not have: phase 1 to t*, refine,
  guided phase 2;
* the same two with EasyCache in phase 1 (when ``numina_hooks.cache`` exists).

    python benchmarks/bench_numina.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402
from memory import peak_memory  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import hookimpl, testing  # noqa: E402
from numina_hooks.numina import identify  # noqa: E402
from numina_hooks.numina.config import NuminaConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "three cats chasing two dogs in a park"


class CallCounter:
    def __init__(self):
        self.calls = 0

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        out = yield
        self.calls += 0 if call.skipped else 1
        return out


def _easycache():
    try:
        from numina_hooks.cache import EasyCache
    except ImportError:
        return None
    return EasyCache


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: OpenMP threads waiting for a busy core distort ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    steps = 10 if args.quick else 20
    pipe = testing.tiny_wan_pipeline(num_layers=6, heads=4, head_dim=32)
    pipe.set_progress_bar_config(disable=True)
    call = dict(testing.WAN_CALL, num_inference_steps=steps, output_type="latent", height=96, width=96, num_frames=13)
    counts_mismatch = {"cats": 5, "dogs": 4}
    EasyCache = _easycache()

    def run(mode):
        counter = CallCounter()
        plugins = [counter]
        if mode.endswith("+easycache"):
            plugins.append(EasyCache(tau=0.1, warmup=max(1, steps // 5)))
        config = NuminaConfig()
        handle = numina_hooks.attach(pipe, *plugins, config=None if mode == "plain" else config)
        patch = mock.patch.object(identify.LayoutReader, "matches", lambda self, c: self.done) \
            if mode.startswith("numina-match") else contextlib.nullcontext()
        try:
            with patch, peak_memory() as mem, torch.no_grad():
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(0)
                if mode == "plain":
                    handle.run_pipeline(prompt=PROMPT, generator=gen, **call)
                else:
                    handle(prompt=PROMPT, counts=counts_mismatch, generator=gen, **call)
                dt = time.perf_counter() - t0
        finally:
            handle.detach()
        return dt, counter.calls, mem["peak_bytes"]

    modes = ["plain", "numina-match", "numina-mismatch"]
    if EasyCache is not None:
        modes += ["numina-match+easycache", "numina-mismatch+easycache"]
    run("plain")  # warm-up
    rows = {m: {"seconds": [], "calls": None, "peak_bytes": []} for m in modes}
    for _ in range(repeats):
        for m in modes:
            dt, calls, peak = run(m)
            rows[m]["seconds"].append(dt)
            rows[m]["calls"] = calls
            rows[m]["peak_bytes"].append(peak)
    base = rows["plain"]
    table = {}
    for m in modes:
        sec = statistics.median(rows[m]["seconds"])
        table[m] = {
            "seconds": sec,
            "calls": rows[m]["calls"],
            "calls_ratio": rows[m]["calls"] / base["calls"],
            "time_ratio": sec / statistics.median(base["seconds"]),
            "peak_mb": max(rows[m]["peak_bytes"]) / 2**20,
        }
    result = {"machine": describe(), "steps": steps, "reference_step": NuminaConfig().resolve_step(steps),
              "config": "6 layers, 4 heads x 32, 96x96, 13 frames", "cases": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "numina.json").write_text(json.dumps(result, indent=2))
    md = ["| case | transformer calls | calls / plain | wall clock / plain | peak extra MB (RSS) |", "|---|---|---|---|---|"]
    for m, r in table.items():
        md.append(f"| {m} | {r['calls']} | {r['calls_ratio']:.2f} | {r['time_ratio']:.2f} | {r['peak_mb']:.0f} |")
    md += ["", f"{steps} steps, t* = step {result['reference_step']}; machine: {machine_line(result['machine'])}."]
    (RESULTS / "numina.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
