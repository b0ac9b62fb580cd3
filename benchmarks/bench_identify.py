"""Identify phase on synthetic DiT-like scenes: count accuracy and seconds per frame.

    OMP_NUM_THREADS=1 python benchmarks/bench_identify.py [--seeds 3] [--grid 30 52]

Methods: ours with cross_head="max" (paper), ours with "mean" (reference code), and a naive
counter (connected components of the head-mean cross-attention at half its peak), the floor
to beat. Geometry: Wan2.1-1.3B at 832x480 (30 x 52 patches, 12 heads), one thread.
Writes benchmarks/results/identify.json and .md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from numina_hooks.numina.config import NuminaConfig  # noqa: E402
from numina_hooks.numina.heads import score_self_attention_heads, select_cross_attention  # noqa: E402
from numina_hooks.numina.layout import (layout_from_attention, layout_from_maps,  # noqa: E402
                                        naive_cross_count)
from numina_hooks.numina.synthetic import SELF_HEAD_TYPES, make_scene  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid", type=int, nargs=2, default=(30, 52))
    ap.add_argument("--noise", type=float, nargs="+", default=(0.25, 0.5, 1.0))
    ap.add_argument("--max-count", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    grid = tuple(args.grid)
    methods = {"ours_max": NuminaConfig(cross_head="max"),
               "ours_mean": NuminaConfig(cross_head="mean")}
    hits = defaultdict(lambda: defaultdict(list))  # method -> key -> [bool]
    heads_chosen = defaultdict(int)
    times = {"layout_from_attention": [], "head_scoring": [], "layout_from_maps": []}
    for noise in args.noise:
        for n in range(1, args.max_count + 1):
            for seed in range(args.seeds):
                fr = make_scene(n, grid, noise=noise, seed=1000 * seed + n).frames[0]
                truth = fr.count
                for name, cfg in methods.items():
                    t = time.perf_counter()
                    layout = layout_from_attention(fr.self_attn, fr.cross_attn, grid, cfg)
                    times["layout_from_attention"].append(time.perf_counter() - t)
                    ok = layout.count == truth
                    hits[name][f"count={truth}"].append(ok)
                    hits[name][f"noise={noise}"].append(ok)
                    hits[name]["all"].append(ok)
                    if name == "ours_max":
                        heads_chosen[SELF_HEAD_TYPES[layout.self_head]] += 1
                t = time.perf_counter()
                scores = score_self_attention_heads(fr.self_attn, grid)
                times["head_scoring"].append(time.perf_counter() - t)
                cross, _ = select_cross_attention(fr.cross_attn, "mean")
                t = time.perf_counter()
                layout_from_maps(fr.self_attn[int(scores.argmax())], cross, grid)
                times["layout_from_maps"].append(time.perf_counter() - t)
                ok = naive_cross_count(fr.cross_attn, grid) == truth
                for key in (f"count={truth}", f"noise={noise}", "all"):
                    hits["naive_cross_cc"][key].append(ok)
    acc = {m: {k: round(float(np.mean(v)), 3) for k, v in sorted(d.items())} for m, d in hits.items()}
    frames = {k: len(v) for k, v in hits["naive_cross_cc"].items()}
    timing = {k: {"median_s": round(float(np.median(v)), 4), "p90_s": round(float(np.percentile(v, 90)), 4)}
              for k, v in times.items()}
    result = {"grid": grid, "heads": len(SELF_HEAD_TYPES), "threads": 1, "noise": args.noise,
              "seeds": args.seeds, "frames": frames, "accuracy": acc, "timing": timing,
              "self_head_types_chosen_ours_max": dict(heads_chosen),
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "identify.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = ["all"] + [f"noise={x}" for x in args.noise] + \
        [f"count={c}" for c in sorted({int(k.split('=')[1]) for k in frames if k.startswith('count=')})]
    lines = ["# Identify on synthetic scenes", "",
             f"Grid {grid[0]}x{grid[1]} patches, {len(SELF_HEAD_TYPES)} heads, one thread; "
             f"{frames['all']} frames ({args.seeds} seeds x counts 1..{args.max_count} x noise "
             f"{args.noise}). Count accuracy = fraction of frames whose count is exactly right.", "",
             "| frames | n | ours, cross max | ours, cross mean | naive cross CC |", "|---|---|---|---|---|"]
    for k in keys:
        lines.append(f"| {k} | {frames[k]} | {acc['ours_max'][k]:.0%} | {acc['ours_mean'][k]:.0%} | "
                     f"{acc['naive_cross_cc'][k]:.0%} |")
    lines += ["", "| step | median s | p90 s |", "|---|---|---|"]
    for k, v in timing.items():
        lines.append(f"| {k} | {v['median_s']} | {v['p90_s']} |")
    lines += ["", f"Self-attention head types chosen (ours, max): {dict(heads_chosen)}"]
    (out / "identify.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
