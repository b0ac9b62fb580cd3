"""NUMINA vs plain generation: transformer calls, wall clock, peak memory.

Cases, measured side by side in one run on a small Wan pipeline:

* ``plain``: the pipeline alone;
* ``numina-match``: NUMINA where the layout already has the asked counts (phase 1
  runs on and is the result). A random-weight model's layout matches only by
  chance, so the benchmark forces the decision (``LayoutReader.matches`` -> True):
  it measures the cost of reading the layout, which is what the match case adds;
* ``numina-mismatch``: counts the layout does not have: phase 1 to t*, refine,
  guided phase 2;
* ``plain+easycache`` and the two NUMINA cases with ``EasyCache(error_threshold=0.05)`` in both passes,
  and the mismatch case with it in phase 1 only (``phases=("phase1",)``).

Three subjects: the shipped trained toy Wan at the paper's schedule (50 steps, t* = 20,
EasyCache warm-up 10; ``--quick``: 20 steps), where the cache behaves as on a trained
model; the proportionate random-weight Wan of the other benchmarks (144 video tokens);
and a random Wan with 4x its tokens and width (576 tokens, 8 heads of 64), which shows how
the guided pass's fixed cost per call weighs as the model grows.

Baseline: the unhooked pipeline (``pipe(...)``, nothing attached). Transformer calls are
counted by a torch forward pre-hook on each transformer for plain (nothing attached) and by
``CallCounter`` (the forwards that ran; a cache's skipped calls are not counted) otherwise.
Included in each time: the whole generation to latents (text encoding, both phases,
layout reading, refinement), not the VAE decode. Each round runs every case once, in an
order rotated by one each round; a ratio is the median over rounds of that round's
ratio to plain. Memory: the process's peak resident set during the generation (weights
included, sampled) as a ratio to plain's. ``phase 2 per call``: the wall clock of the guided pass per transformer call,
relative to plain's per call (the cost of guidance itself, without phase 1's reading).

Aims (exit 1 when one is missed), from the paper's Table 5 (1.48x wall clock, 1.22x
with EasyCache): NUMINA + EasyCache at most 1.25x plain's calls in the mismatch case and
1.0x in the match case, on subjects where EasyCache skips calls of plain generation (the
trained toy: on random weights it skips none, and NUMINA + EasyCache makes NUMINA's calls); peak memory at most 1.05x plain's in every case; the guided pass
at most 1.25x plain's wall clock per call.

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
    """(name, pipeline, call, prompt, counts that mismatch, description, rounds factor): the
    random-weight subjects run 3x the rounds (a generation takes a fraction of a second, where
    another process on the machine moves a single round's ratio by 0.2)."""
    from numina_hooks.toy.model import TOY_CALL, load_toy_pipeline

    toy_steps = 20 if quick else 50
    yield ("toy", load_toy_pipeline(), dict(TOY_CALL, num_inference_steps=toy_steps),
           "three red discs and two blue squares drifting", {"discs": 7, "squares": 6},
           f"shipped toy Wan (6 blocks, 12x12 patches x 4 frames), {toy_steps} steps", 1)
    steps = 10 if quick else 20
    yield ("wan-random", testing.tiny_wan_pipeline(num_layers=6, heads=4, head_dim=32),
           dict(testing.WAN_CALL, num_inference_steps=steps, output_type="latent", height=96, width=96, num_frames=13),
           PROMPT, {"cats": 5, "dogs": 4}, f"random Wan (6 blocks, 4 heads x 32, 96x96, 13 frames), {steps} steps", 3)
    # the same at 4x the tokens and 4x the width: how the per-call ratio falls as the model grows
    yield ("wan-random-576", testing.tiny_wan_pipeline(num_layers=6, heads=8, head_dim=64),
           dict(testing.WAN_CALL, num_inference_steps=steps, output_type="latent", height=192, width=192, num_frames=13),
           PROMPT, {"cats": 5, "dogs": 4}, f"random Wan (6 blocks, 8 heads x 64, 192x192, 13 frames: 576 video tokens), {steps} steps", 3)


MODES = ("plain", "plain+easycache", "numina-match", "numina-mismatch", "numina-match+easycache",
         "numina-mismatch+easycache", "numina-mismatch+easycache(phase1)")


AIM_CALLS = {"numina-mismatch+easycache": 1.25, "numina-match+easycache": 1.0}
AIM_MEMORY = 1.05
AIM_PHASE2_PER_CALL = 1.25


class _Calls:
    """Transformer forwards, counted by torch forward pre-hooks (no numina-hooks plugin)."""

    def __init__(self, pipe):
        self.n = 0
        self._handles = [
            m.register_forward_pre_hook(self._count)
            for name in ("transformer", "transformer_2")
            if (m := getattr(pipe, name, None)) is not None
        ]

    def _count(self, *_):
        self.n += 1

    def remove(self):
        for h in self._handles:
            h.remove()


def _bench_subject(pipe, call, prompt, counts, rounds):
    steps = call["num_inference_steps"]
    warmup = steps // 5  # the published Wan2.1 schedule: 10 of 50

    def run(mode):
        calls = _Calls(pipe)
        phase2 = []
        gen = torch.Generator().manual_seed(0)
        try:
            if mode == "plain":
                with peak_memory() as mem, torch.no_grad():
                    t0 = time.perf_counter()
                    pipe(prompt=prompt, generator=gen, **call)
                    dt = time.perf_counter() - t0
                return dt, calls.n, mem["peak_total_bytes"], None
            counter = CallCounter()
            plugins = [counter]
            if "+easycache" in mode:
                phases = ("phase1",) if mode.endswith("(phase1)") else EasyCache.PHASES
                plugins.append(EasyCache(error_threshold=0.05, warmup=warmup, phases=phases))
            numina = mode.startswith("numina")
            handle = numina_hooks.attach(pipe, *plugins, config=NuminaConfig() if numina else None)
            run_pipeline = handle.run_pipeline

            def timed(*args, **kwargs):  # the guided pass is the run_pipeline call marked phase 2
                t, n = time.perf_counter(), counter.calls
                try:
                    return run_pipeline(*args, **kwargs)
                finally:
                    if (kwargs.get("generation_extras") or {}).get("numina_phase") == "phase2":
                        phase2.append((time.perf_counter() - t, counter.calls - n))

            handle.run_pipeline = timed
            patch = mock.patch.object(identify.LayoutReader, "matches", lambda self, c: self.done) \
                if mode.startswith("numina-match") else contextlib.nullcontext()
            try:
                with patch, peak_memory() as mem, torch.no_grad():
                    t0 = time.perf_counter()
                    if numina:
                        handle(prompt=prompt, counts=counts, generator=gen, **call)
                    else:
                        handle.run_pipeline(prompt=prompt, generator=gen, **call)
                    dt = time.perf_counter() - t0
            finally:
                handle.detach()
            return dt, counter.calls, mem["peak_total_bytes"], (phase2[0] if phase2 else None)
        finally:
            calls.remove()

    run("plain")  # warm-up
    rows = {m: {"seconds": [], "calls": None, "peak_bytes": [], "phase2": []} for m in MODES}
    ratios = {m: [] for m in MODES}
    phase2_ratios = {m: [] for m in MODES}
    for r in range(rounds):
        order = MODES[r % len(MODES):] + MODES[: r % len(MODES)]
        got = {m: run(m) for m in order}
        p_dt, p_calls = got["plain"][0], got["plain"][1]
        for m, (dt, calls, peak, ph2) in got.items():
            rows[m]["seconds"].append(dt)
            rows[m]["calls"] = calls
            rows[m]["peak_bytes"].append(peak)
            ratios[m].append(dt / p_dt)
            if ph2 is not None and ph2[1]:
                phase2_ratios[m].append((ph2[0] / ph2[1]) / (p_dt / p_calls))
    base = rows["plain"]
    base_peak = max(statistics.median(base["peak_bytes"]), 1)
    table = {}
    for m in MODES:
        table[m] = {
            "seconds": statistics.median(rows[m]["seconds"]),
            "calls": rows[m]["calls"],
            "calls_ratio": rows[m]["calls"] / base["calls"],
            "time_ratio": statistics.median(ratios[m]),
            "time_ratio_per_round": ratios[m],
            "phase2_per_call_ratio": statistics.median(phase2_ratios[m]) if phase2_ratios[m] else None,
            "peak_total_mb": statistics.median(rows[m]["peak_bytes"]) / 2**20,
            "memory_ratio": statistics.median(rows[m]["peak_bytes"]) / base_peak,
        }
    return {"steps": steps, "reference_step": NuminaConfig().resolve_step(steps), "easycache": f"tau 0.05, warm-up {warmup}",
            "rounds": rounds, "cases": table}


def cache_skips(sub: dict) -> bool:
    """Whether EasyCache skips any call of plain generation on this subject (on random
    weights it skips none: every step's output moves too much), the condition under which
    the aims on NUMINA + EasyCache calls mean anything."""
    return sub["cases"]["plain+easycache"]["calls_ratio"] < 1.0


def misses(result: dict) -> list[str]:
    out = []
    for name, sub in result["subjects"].items():
        for m, r in sub["cases"].items():
            if m in AIM_CALLS and cache_skips(sub) and not r["calls_ratio"] <= AIM_CALLS[m]:
                out.append(f"{name} {m}: calls {r['calls_ratio']:.2f}x > {AIM_CALLS[m]}x")
            if not r["memory_ratio"] <= AIM_MEMORY:
                out.append(f"{name} {m}: memory {r['memory_ratio']:.2f}x > {AIM_MEMORY}x")
            p2 = r["phase2_per_call_ratio"]
            if p2 is not None and "easycache" not in m and not p2 <= AIM_PHASE2_PER_CALL:
                out.append(f"{name} {m}: guided pass {p2:.2f}x per call > {AIM_PHASE2_PER_CALL}x")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (default 3, --quick 1; three times as many on the random-weight subjects)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: OpenMP threads waiting for a busy core distort ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 3)
    result = {"machine": describe(), "subjects": {}}
    for name, pipe, call, prompt, counts, description, factor in _subjects(args.quick):
        pipe.set_progress_bar_config(disable=True)
        sub = _bench_subject(pipe, call, prompt, counts, rounds * factor)
        sub["config"] = description
        result["subjects"][name] = sub
    result["missed"] = misses(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "numina.json").write_text(json.dumps(result, indent=2))
    md = []
    for name, sub in result["subjects"].items():
        md += [f"**{name}**: {sub['config']}; t* = step {sub['reference_step']}; EasyCache {sub['easycache']}; "
               f"{sub['rounds']} round(s), order rotated.", "",
               "| case | transformer calls | calls / plain | wall clock / plain (per round) | wall / calls "
               "| guided pass per call / plain's | peak memory / plain |",
               "|---|---|---|---|---|---|---|"]
        for m, r in sub["cases"].items():
            p2 = r["phase2_per_call_ratio"]
            per_round = ", ".join(f"{x:.2f}" for x in r["time_ratio_per_round"])
            md.append(f"| {m} | {r['calls']} | {r['calls_ratio']:.2f} | {r['time_ratio']:.2f} ({per_round}) "
                      f"| {r['time_ratio'] / r['calls_ratio']:.2f} | {'-' if p2 is None else f'{p2:.2f}'} "
                      f"| {r['memory_ratio']:.2f} |")
        if not cache_skips(sub):
            md.append("EasyCache skips no call of plain generation here (random weights): the aims on calls with it are not checked on this subject.")
        md.append("")
    missed = result["missed"]
    md.append("Aims missed: " + "; ".join(missed) + "." if missed else "All aims met.")
    md.append("")
    md.append(f"machine: {machine_line(result['machine'])}. Plain: the unhooked pipeline.")
    (RESULTS / "numina.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
