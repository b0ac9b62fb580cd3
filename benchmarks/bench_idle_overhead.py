"""Wall clock of a hooked-but-idle generation relative to an unhooked one.

Runs the same tiny-but-proportionate Wan pipeline three ways, interleaved
(plain, attached with no plugin, attached with an observer that only reads
``view.layer``), and reports median ratios. Aim: under 1.02.

    python benchmarks/bench_idle_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import hookimpl, testing  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class LayerCounter:
    def __init__(self):
        self.n = 0

    @hookimpl
    def on_attention(self, view):
        if view.layer == 0:
            self.n += 1


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: OpenMP threads waiting for a busy core distort ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else 21
    # proportionate: Wan2.1-1.3B has 30 blocks of 12 heads x 128; keep the ratio of
    # attention to the rest, at a size a CPU runs in about a second
    pipe = testing.tiny_wan_pipeline(num_layers=6, heads=4, head_dim=32)
    pipe.set_progress_bar_config(disable=True)
    call = dict(testing.WAN_CALL, num_inference_steps=8, output_type="latent", height=96, width=96, num_frames=13)

    def generate():
        with torch.no_grad():
            t0 = time.perf_counter()
            out = pipe(prompt="three cats chasing two dogs", generator=torch.Generator().manual_seed(0), **call).frames
            return time.perf_counter() - t0, out

    generate()  # warm-up
    times = {"plain": [], "attached": [], "observer": []}
    outputs = {}
    for _ in range(repeats):
        for mode in times:
            if mode == "plain":
                dt, out = generate()
            else:
                plugins = [LayerCounter()] if mode == "observer" else []
                with numina_hooks.attach(pipe, *plugins):
                    dt, out = generate()
            times[mode].append(dt)
            outputs[mode] = out
    med = {k: statistics.median(v) for k, v in times.items()}
    # the median of per-round ratios cancels the machine's slow drifts between rounds
    pair = {m: statistics.median(t / p for t, p in zip(times[m], times["plain"])) for m in ("attached", "observer")}
    result = {
        "machine": describe(),
        "config": {"layers": 6, "heads": 4, "head_dim": 32, "steps": 8, "size": "96x96x13", "repeats": repeats},
        "median_seconds": med,
        "ratio_attached_no_plugin": pair["attached"],
        "ratio_attached_observer": pair["observer"],
        "bit_identical": all(torch.equal(outputs["plain"], outputs[m]) for m in ("attached", "observer")),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idle_overhead.json").write_text(json.dumps(result, indent=2))
    md = [
        "| run | median s | ratio to plain (median of per-round ratios) |",
        "|---|---|---|",
        f"| plain pipeline | {med['plain']:.3f} | 1.000 |",
        f"| attached, no plugin | {med['attached']:.3f} | {result['ratio_attached_no_plugin']:.3f} |",
        f"| attached, observer reading `view.layer` | {med['observer']:.3f} | {result['ratio_attached_observer']:.3f} |",
        "",
        f"{repeats} interleaved rounds. Machine: {machine_line(result['machine'])}. "
        f"Outputs bit-identical: {result['bit_identical']}.",
    ]
    (RESULTS / "idle_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
