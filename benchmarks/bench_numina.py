"""NUMINA vs plain generation: transformer calls, wall clock, peak memory.

Cases, measured side by side in one run on a small Wan pipeline:

* ``plain``: the pipeline alone;
* ``numina-match``: NUMINA where the layout already has the asked counts (phase 1
  runs on and is the result). A random-weight model's layout matches only by
  chance, so the benchmark forces the decision (``LayoutReader.matches`` -> True):
  it measures the cost of reading the layout, which is what the match case adds;
* ``numina-mismatch``: counts the layout does not have: phase 1 to t*, refine,
  guided phase 2;
* ``plain+easycache`` and the two NUMINA cases with ``EasyCache(tau=0.05)`` in both passes,
  and the mismatch case with it in phase 1 only (``phases=("phase1",)``).

Two subjects: the shipped trained toy Wan at the paper's schedule (50 steps, t* = 20,
EasyCache warm-up 10; ``--quick``: 20 steps), where the cache behaves as on a trained
model, and the proportionate random-weight Wan of the other benchmarks.

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
from numina_hooks import EasyCache, testing  # noqa: E402
from numina_hooks.numina import identify  # noqa: E402
from numina_hooks.numina.generate import CallCounter  # noqa: E402
from numina_hooks.numina.config import NuminaConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "three cats chasing two dogs in a park"


def _subjects(quick: bool):
    """(name, pipeline, call, prompt, counts that mismatch, description)."""
    from numina_hooks.toy.model import TOY_CALL, load_toy_pipeline

    toy_steps = 20 if quick else 50
    yield ("toy", load_toy_pipeline(), dict(TOY_CALL, num_inference_steps=toy_steps),
           "three red discs and two blue squares drifting", {"discs": 7, "squares": 6},
           f"shipped toy Wan (6 blocks, 12x12 patches x 4 frames), {toy_steps} steps")
    steps = 10 if quick else 20
    yield ("wan-random", testing.tiny_wan_pipeline(num_layers=6, heads=4, head_dim=32),
           dict(testing.WAN_CALL, num_inference_steps=steps, output_type="latent", height=96, width=96, num_frames=13),
           PROMPT, {"cats": 5, "dogs": 4}, f"random Wan (6 blocks, 4 heads x 32, 96x96, 13 frames), {steps} steps")


MODES = ("plain", "plain+easycache", "numina-match", "numina-mismatch", "numina-match+easycache",
         "numina-mismatch+easycache", "numina-mismatch+easycache(phase1)")


def _bench_subject(pipe, call, prompt, counts, repeats):
    steps = call["num_inference_steps"]
    warmup = steps // 5  # the published Wan2.1 schedule: 10 of 50

    def run(mode):
        counter = CallCounter()
        plugins = [counter]
        if "+easycache" in mode:
            phases = ("phase1",) if mode.endswith("(phase1)") else EasyCache.PHASES
            plugins.append(EasyCache(tau=0.05, warmup=warmup, phases=phases))
        numina = mode.startswith("numina")
        handle = numina_hooks.attach(pipe, *plugins, config=NuminaConfig() if numina else None)
        patch = mock.patch.object(identify.LayoutReader, "matches", lambda self, c: self.done) \
            if mode.startswith("numina-match") else contextlib.nullcontext()
        try:
            with patch, peak_memory() as mem, torch.no_grad():
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(0)
                if numina:
                    handle(prompt=prompt, counts=counts, generator=gen, **call)
                else:
                    handle.run_pipeline(prompt=prompt, generator=gen, **call)
                dt = time.perf_counter() - t0
        finally:
            handle.detach()
        return dt, counter.calls, mem["peak_bytes"]

    run("plain")  # warm-up
    rows = {m: {"seconds": [], "calls": None, "peak_bytes": []} for m in MODES}
    for _ in range(repeats):  # interleaved
        for m in MODES:
            dt, calls, peak = run(m)
            rows[m]["seconds"].append(dt)
            rows[m]["calls"] = calls
            rows[m]["peak_bytes"].append(peak)
    base = rows["plain"]
    table = {}
    for m in MODES:
        sec = statistics.median(rows[m]["seconds"])
        table[m] = {
            "seconds": sec,
            "calls": rows[m]["calls"],
            "calls_ratio": rows[m]["calls"] / base["calls"],
            "time_ratio": sec / statistics.median(base["seconds"]),
            "peak_mb": max(rows[m]["peak_bytes"]) / 2**20,
        }
    return {"steps": steps, "reference_step": NuminaConfig().resolve_step(steps), "easycache": f"tau 0.05, warm-up {warmup}",
            "cases": table}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: OpenMP threads waiting for a busy core distort ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    result = {"machine": describe(), "subjects": {}}
    for name, pipe, call, prompt, counts, description in _subjects(args.quick):
        pipe.set_progress_bar_config(disable=True)
        sub = _bench_subject(pipe, call, prompt, counts, repeats)
        sub["config"] = description
        result["subjects"][name] = sub
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "numina.json").write_text(json.dumps(result, indent=2))
    md = []
    for name, sub in result["subjects"].items():
        md += [f"**{name}**: {sub['config']}; t* = step {sub['reference_step']}; EasyCache {sub['easycache']}.", "",
               "| case | transformer calls | calls / plain | wall clock / plain | peak extra MB (RSS) |",
               "|---|---|---|---|---|"]
        for m, r in sub["cases"].items():
            md.append(f"| {m} | {r['calls']} | {r['calls_ratio']:.2f} | {r['time_ratio']:.2f} | {r['peak_mb']:.0f} |")
        md.append("")
    md.append(f"machine: {machine_line(result['machine'])}.")
    (RESULTS / "numina.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
