"""Identify phase on two synthetic scene families: count accuracy and seconds per frame.

    OMP_NUM_THREADS=1 python benchmarks/bench_identify.py [--seeds 2] [--frames 3]

Families: ``project`` (``numina/synthetic.py``: softmax heads of several kinds, two instance
heads) and ``shared`` (``numina/synthetic_shared.py``: every head dominated by a shared
diffuse and positional part, one instance head among class, positional, noisy, sink and
diffuse heads, blurred cross-attention with clutter bumps). Per family, grid (30x52 =
Wan2.1-1.3B at 832x480, and 15x26) and noise (0.25, 0.5 = moderate, 1.0 = highest):
scenes of 1..8 instances, ``--seeds`` scenes per count, ``--frames`` frames per scene.

Methods, count accuracy per frame (the count is exactly right):
- ``default``: ``NuminaConfig()`` (adaptive cut, containment head choice), counts voted over
  the scene's neighbouring frames (``temporal_window=1``);
- ``default_per_frame``: the same without the vote;
- ``paper``: ``NuminaConfig.paper()`` (the paper's algorithm as implemented before);
- ``naive``: connected components of the head-mean cross-attention at half its peak;
- ``true_head``: the default with the self-attention head forced to the scene's (first)
  instance head, voted like the default: what a perfect head choice would give.
Also: how often the default's chosen head is an instance head, and seconds per frame and
noun (median; one thread) of ``layout_from_attention`` for the default and the paper preset.

Intervals are 95% percentile bootstrap intervals over scenes (frames of one scene are not
independent). Seeds: scene seeds are 10000 + 100 * s + count, disjoint from the seeds the
method was developed on (100 * s + count, s < 2). Writes benchmarks/results/identify.json
and .md.
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
from numina_hooks.numina.layout import (layout_from_attention, naive_cross_count,  # noqa: E402
                                        temporal_vote)
from numina_hooks.numina.synthetic import SELF_HEAD_TYPES, make_scene  # noqa: E402
from numina_hooks.numina.synthetic_shared import make_shared_scene  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ("default", "default_per_frame", "paper", "naive", "true_head")


def _scene(family: str, n: int, grid, noise: float, seed: int, frames: int):
    if family == "project":
        sc = make_scene(n, grid, n_frames=frames, noise=noise, seed=seed)
        return sc, SELF_HEAD_TYPES
    sc = make_shared_scene(n, grid, n_frames=frames, noise=noise, seed=seed)
    return sc, sc.head_types


def bootstrap_interval(per_scene: list[list[bool]], reps: int = 2000, seed: int = 0
                       ) -> tuple[float, float, float]:
    """Mean over frames and its 95% percentile interval, resampling whole scenes."""
    hits = np.array([sum(s) for s in per_scene], dtype=np.float64)
    sizes = np.array([len(s) for s in per_scene], dtype=np.float64)
    mean = float(hits.sum() / sizes.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_scene), size=(reps, len(per_scene)))
    boot = hits[idx].sum(1) / sizes[idx].sum(1)
    return mean, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def run_cell(family: str, grid, noise: float, seeds: int, frames: int, max_count: int,
             timing: dict) -> dict:
    default, paper = NuminaConfig(), NuminaConfig.paper()
    hits = defaultdict(list)  # method -> per scene [bool per frame]
    for n in range(1, max_count + 1):
        for s in range(seeds):
            sc, types = _scene(family, n, grid, noise, 10_000 + 100 * s + n, frames)
            true_heads = [i for i, t in enumerate(types) if t == "instance"]
            found = defaultdict(list)
            chosen_true = []
            for fr in sc.frames:
                t = time.perf_counter()
                lay = layout_from_attention(fr.self_attn, fr.cross_attn, grid, default)
                timing[(family, grid, "default")].append(time.perf_counter() - t)
                found["default"].append(lay.count)
                chosen_true.append(lay.self_head in true_heads)
                t = time.perf_counter()
                found["paper"].append(layout_from_attention(fr.self_attn, fr.cross_attn, grid,
                                                            paper).count)
                timing[(family, grid, "paper")].append(time.perf_counter() - t)
                found["naive"].append(naive_cross_count(fr.cross_attn, grid))
                found["true_head"].append(layout_from_attention(
                    fr.self_attn, fr.cross_attn, grid, default, self_head=true_heads[0]).count)
            truth = [fr.count for fr in sc.frames]
            found["default_per_frame"] = list(found["default"])
            for m in ("default", "true_head"):
                found[m] = temporal_vote(found[m], default.temporal_window)
            for m in METHODS:
                hits[m].append([a == b for a, b in zip(found[m], truth)])
            hits["chosen_head_is_true"].append(chosen_true)
    return {m: bootstrap_interval(v) for m, v in hits.items()} | {
        "frames": sum(len(v) for v in hits["default"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2, help="scenes per count and cell")
    ap.add_argument("--frames", type=int, default=3, help="frames per scene")
    ap.add_argument("--noise", type=float, nargs="+", default=(0.25, 0.5, 1.0))
    ap.add_argument("--grids", nargs="+", default=("30x52", "15x26"))
    ap.add_argument("--families", nargs="+", default=("project", "shared"))
    ap.add_argument("--max-count", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    grids = [tuple(int(v) for v in g.split("x")) for g in args.grids]
    timing = defaultdict(list)
    cells = []
    for family in args.families:
        for grid in grids:
            for noise in args.noise:
                res = run_cell(family, grid, noise, args.seeds, args.frames, args.max_count,
                               timing)
                cells.append({"family": family, "grid": list(grid), "noise": noise, **res})
                print(family, grid, noise, {k: round(v[0], 2) for k, v in res.items()
                                            if isinstance(v, tuple)}, flush=True)
    times = {f"{f} {g[0]}x{g[1]} {m}": {"median_s": round(float(np.median(v)), 4),
                                         "p90_s": round(float(np.percentile(v, 90)), 4)}
             for (f, g, m), v in timing.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"heads": 12, "threads": 1, "seeds": args.seeds, "frames_per_scene": args.frames,
              "counts": [1, args.max_count], "cells": cells, "timing": times,
              "load_average_at_end": load,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"torch {torch.__version__}"}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "identify.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "identify.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def _fmt(v) -> str:
    return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def markdown(result: dict) -> str:
    cells = result["cells"]
    lines = ["# Identify on two synthetic scene families", "",
             f"12 heads, one thread; per cell {cells[0]['frames']} frames "
             f"({result['seeds']} scenes per count x counts {result['counts'][0]}.."
             f"{result['counts'][1]} x {result['frames_per_scene']} frames). Count accuracy = "
             "fraction of frames whose count is exactly right, with a 95% bootstrap interval "
             "over scenes. Report seeds, disjoint from the development seeds.", "",
             "| family | grid | noise | default | default, per frame | paper preset | naive cross CC "
             "| true head | chosen head is true |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c['family']} | {c['grid'][0]}x{c['grid'][1]} | {c['noise']} | "
                     f"**{_fmt(c['default'])}** | {_fmt(c['default_per_frame'])} | "
                     f"{_fmt(c['paper'])} | {_fmt(c['naive'])} | {_fmt(c['true_head'])} | "
                     f"{_fmt(c['chosen_head_is_true'])} |")
    lines += ["", "Seconds per frame and noun (`layout_from_attention`, one thread, median and "
              "90th percentile):", "", "| family, grid, method | median s | p90 s |", "|---|---|---|"]
    for k, v in result["timing"].items():
        lines.append(f"| {k} | {v['median_s']} | {v['p90_s']} |")
    lines += ["", f"Machine: {result['machine']}; load average at the end "
              f"{result['load_average_at_end']} (a shared machine: times are upper bounds)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
