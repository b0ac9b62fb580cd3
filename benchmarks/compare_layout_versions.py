"""Two versions of the layout stage side by side: seconds per frame and whether they read the
same layouts.

    OMP_NUM_THREADS=1 python benchmarks/compare_layout_versions.py OLD_TREE NEW_TREE
        [--families project shared feature rope multi] [--grids 30x52 15x26] [--noise 0.5]
        [--scenes 2] [--frames 2] [--reps 3] [--name layout_versions]

``OLD_TREE`` and ``NEW_TREE`` are two source trees of this project (a checkout, or ``git
archive REV | tar -x -C DIR``). What a speed change must show: the same layouts, in less time,
measured in one run on the same frames.

- Frames: ``bench_identify._scene`` of ``NEW_TREE``'s benchmarks (development seeds
  ``COST_SEED + 100 s + n``, the ones ``--layout-cost`` times; counts 1-8, ``--scenes``
  scenes per count, ``--frames`` frames each, at ``--noise``), written to a temporary folder
  one family and grid at a time.
- Each tree runs in its own worker process with one thread; the parent hands both workers
  every frame in turn, alternating which goes first. A worker reads the frame, calls
  ``layout_from_attention`` with the default ``NuminaConfig`` once (timed apart: the first
  call, on maps not yet read), then ``--reps``
  times timed, and answers the median and a digest of the layout (every field of
  ``Layout``: labels, count, heads, focus, proposals, head scores, whether it came from the
  cross map).
- Reported per family and grid: frames, the median seconds of each tree, the median of the
  per-frame ratios new / old, and how many frames' layouts differ (0 = the same layouts).

Results: ``results/NAME.json`` and ``.md`` (``--out`` another folder). Exits 1 when a layout differs."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: the worker: one tree's layout stage, timed on the frames its parent names (stdin: one
#: "PATH REPS" per line; stdout: one JSON line each)
WORKER = r'''
import sys, json, time, hashlib
tree = sys.argv[1]
sys.path[:0] = [tree]
import numpy as np, torch
torch.set_num_threads(1)
import numina_hooks
if not numina_hooks.__file__.startswith(tree):
    raise SystemExit(f"worker for {tree} imported {numina_hooks.__file__}")
from numina_hooks.numina.layout import layout_from_attention
from numina_hooks.numina.config import NuminaConfig
cfg = NuminaConfig()
FIELDS = ("labels", "count", "self_head", "cross_head", "focus", "proposals", "head_scores", "from_cross")

def digest(layout):
    h = hashlib.sha256()
    for f in FIELDS:
        v = getattr(layout, f, None)
        h.update(f.encode())
        h.update(np.ascontiguousarray(v).tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
    return h.hexdigest()

for line in sys.stdin:
    path, reps = line.split()
    frame = torch.load(path)
    args = (frame["self_attn"], frame["cross_attn"], tuple(frame["grid"]), cfg)
    t0 = time.perf_counter()
    first = layout_from_attention(*args)  # on the frame just loaded: its maps not yet read
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(int(reps)):
        t0 = time.perf_counter()
        layout_from_attention(*args)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"s": sorted(times)[len(times) // 2], "first_s": first_s, "digest": digest(first)}),
          flush=True)
'''


def _worker(tree: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the worker puts its own tree first
    return subprocess.Popen([sys.executable, "-c", WORKER, tree], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _ask(worker: subprocess.Popen, path: str, reps: int) -> dict:
    worker.stdin.write(f"{path} {reps}\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
        raise SystemExit(f"a worker stopped (exit status {worker.poll()}); its error is above")
    return json.loads(line)


def _frames(family: str, grid: tuple, args, folder: str) -> list:
    """Write the cell's frames to ``folder``; return their paths."""
    import torch
    from bench_identify import COST_SEED, _scene
    paths = []
    for n in range(1, 9):
        for s in range(args.scenes):
            scene, _ = _scene(family, n, grid, args.noise, COST_SEED + 100 * s + n, args.frames)
            for i, f in enumerate(scene.frames):
                path = os.path.join(folder, f"{family}_{grid[0]}x{grid[1]}_{n}_{s}_{i}.pt")
                torch.save({"self_attn": torch.as_tensor(f.self_attn), "cross_attn": torch.as_tensor(f.cross_attn),
                            "grid": list(grid)}, path)
                paths.append(path)
    return paths


def compare(args) -> dict:
    old, new = (str(Path(t).resolve()) for t in (args.old_tree, args.new_tree))
    for tree in (old, new):
        if not (Path(tree) / "numina_hooks" / "__init__.py").exists():
            raise SystemExit(f"{tree!r} is not a source tree of numina-hooks (no numina_hooks/__init__.py): "
                             "pass a checkout or a `git archive` of one")
    sys.path[:0] = [str(Path(new) / "benchmarks"), new]
    workers = {"old": _worker(old), "new": _worker(new)}
    cells = []
    try:
        for family in args.families:
            for grid in [tuple(int(v) for v in g.split("x")) for g in args.grids]:
                with tempfile.TemporaryDirectory() as folder:
                    paths = _frames(family, grid, args, folder)
                    got = {"old": [], "new": []}
                    for i, path in enumerate(paths):
                        for k in (("old", "new") if i % 2 == 0 else ("new", "old")):
                            got[k].append(_ask(workers[k], path, args.reps))
                old_s = [g["s"] for g in got["old"]]
                new_s = [g["s"] for g in got["new"]]
                old_first = [g["first_s"] for g in got["old"]]
                new_first = [g["first_s"] for g in got["new"]]
                cells.append({"family": family, "grid": list(grid), "frames": len(paths),
                              "old_s": statistics.median(old_s), "new_s": statistics.median(new_s),
                              "ratio_new_over_old": statistics.median(b / a for a, b in zip(old_s, new_s)),
                              "old_first_s": statistics.median(old_first),
                              "new_first_s": statistics.median(new_first),
                              "ratio_first_new_over_old": statistics.median(
                                  b / a for a, b in zip(old_first, new_first)),
                              "layouts_differ": sum(a["digest"] != b["digest"]
                                                    for a, b in zip(got["old"], got["new"]))})
                print(cells[-1], flush=True)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    from bench_identify import _load_average, _machine
    return {"old_tree": args.old_tree, "new_tree": args.new_tree, "note": args.note, "noise": args.noise,
            "scenes_per_count": args.scenes, "frames_per_scene": args.frames, "reps": args.reps,
            "threads": 1, "cells": cells, "date": time.strftime("%Y-%m-%d"),
            "load_average_at_end": _load_average(), "machine": _machine()}


def markdown(result: dict) -> str:
    lines = ["# Two versions of the layout stage, side by side", "",
             f"`layout_from_attention` on ready maps with the default `NuminaConfig`, seconds per frame "
             f"and noun, one thread (`python benchmarks/compare_layout_versions.py OLD NEW`): each "
             f"version in its own worker process, both given every frame in turn with their order "
             f"alternated, one first call then the median of {result['reps']}; development seeds, "
             f"{result['scenes_per_count']} scenes per count 1-8 x {result['frames_per_scene']} frames "
             f"at noise {result['noise']}. Ratio: the median of the per-frame ratios new / old. "
             f"'Layouts differ': frames whose layouts (every field of `Layout`) are not the same.", ""]
    if result.get("note"):
        lines += [f"Old: {result['note']}", ""]
    first = all("ratio_first_new_over_old" in c for c in result["cells"])
    if first:
        lines += ["'First call': the call on the frame just loaded, before the timed ones (its maps "
                  "not yet read: the case of `bench_identify.py`'s layout times, where each frame's "
                  "default layout is the first read of its freshly made maps); medians and the median "
                  "of the per-frame ratios as above.", ""]
    head = "| family | grid | frames | old (median s) | new (median s) | ratio new / old | "
    head += "first call: old | first call: new | first call: ratio | " if first else ""
    lines += [head + "layouts differ |", "|---" * (10 if first else 7) + "|"]
    for c in result["cells"]:
        row = (f"| {c['family']} | {c['grid'][0]}x{c['grid'][1]} | {c['frames']} | {c['old_s']:.4f} | "
               f"{c['new_s']:.4f} | **{c['ratio_new_over_old']:.3f}x** | ")
        if first:
            row += (f"{c['old_first_s']:.4f} | {c['new_first_s']:.4f} | "
                    f"**{c['ratio_first_new_over_old']:.3f}x** | ")
        lines.append(row + f"{c['layouts_differ']} |")
    lines += ["", f"Run {result['date']}. Machine: {result['machine']}; load average at the end "
                  f"{result['load_average_at_end']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_tree")
    ap.add_argument("new_tree")
    ap.add_argument("--families", nargs="+", default=["project", "shared", "feature", "rope", "multi"])
    ap.add_argument("--grids", nargs="+", default=["30x52", "15x26"])
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--scenes", type=int, default=2, help="scenes per count 1-8")
    ap.add_argument("--frames", type=int, default=2, help="frames per scene")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per frame and version (median)")
    ap.add_argument("--name", default="layout_versions", help="OUT/NAME.json and .md")
    ap.add_argument("--out", default=str(HERE / "results"), help="the folder of the results (default: results/)")
    ap.add_argument("--note", default="", help="what the two trees are, printed with the table")
    args = ap.parse_args(argv)
    for k in ("scenes", "frames", "reps"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be at least 1, got {getattr(args, k)}")
    result = compare(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / f"{args.name}.md").write_text(text)
    print(text)
    return 1 if any(c["layouts_differ"] for c in result["cells"]) else 0


if __name__ == "__main__":
    sys.exit(main())
