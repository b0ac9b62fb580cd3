"""The focus mask's density clustering: ``layout.dbscan_members`` (two grid filters, the
default) against scikit-learn's DBSCAN on the same thresholded cross maps.

    python benchmarks/bench_focus_clustering.py [--rounds 7]

Cross maps of the three synthetic scene families at 30x52 (counts 1, 4 and 8, noise 0.5),
thresholded as ``focus_mask`` does; per round, each path clusters every map once, the order of
the two paths alternating between rounds; the ratio is the median of the per-round ratios.
Aim, checked (exit 1 when missed): the same pixels as scikit-learn on every map, and at most
0.5x its time. Writes benchmarks/results/focus_clustering.json and .md. Needs scikit-learn
(the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import DBSCAN

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe, machine_line  # noqa: E402
from synthetic_feature_scenes import make_feature_scene  # noqa: E402
from synthetic_scenes import make_scene  # noqa: E402
from synthetic_shared_scenes import make_shared_scene  # noqa: E402

from numina_hooks.numina.config import NuminaConfig  # noqa: E402
from numina_hooks.numina.heads import select_cross_attention  # noqa: E402
from numina_hooks.numina.layout import bright_pixels, dbscan_members  # noqa: E402

GRID = (30, 52)
AIM_RATIO = 0.5


def thresholded_maps(cfg: NuminaConfig) -> list:
    """bool [H, W] per map: the cross map's pixels above ``focus_mask``'s threshold
    (``layout.bright_pixels``)."""
    out = []
    for make in (make_scene, make_shared_scene, make_feature_scene):
        for n in (1, 4, 8):
            fr = make(n, GRID, n_frames=1, noise=0.5, seed=900 + n).frames[0]
            ca = torch.as_tensor(fr.cross_attn).reshape(fr.cross_attn.shape[0], -1)
            out.append(bright_pixels(select_cross_attention(ca, cfg.cross_head)[0], GRID, cfg))
    return out


def sklearn_members(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    coords = np.argwhere(points)
    lab = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coords)
    out = np.zeros_like(points)
    keep = coords[lab >= 0]
    out[keep[:, 0], keep[:, 1]] = True
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = NuminaConfig()
    maps = thresholded_maps(cfg)
    paths = {"grid filters": lambda m: dbscan_members(m, cfg.focus_eps, cfg.focus_min_samples),
             "scikit-learn": lambda m: sklearn_members(m, cfg.focus_eps, cfg.focus_min_samples)}
    same = all(np.array_equal(paths["grid filters"](m), paths["scikit-learn"](m)) for m in maps)
    per_round = []
    for r in range(args.rounds):
        times = {}
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            t = time.perf_counter()
            for m in maps:
                paths[name](m)
            times[name] = (time.perf_counter() - t) / len(maps)
        per_round.append(times)
    ratio = statistics.median(t["grid filters"] / t["scikit-learn"] for t in per_round)
    ms = {name: statistics.median(t[name] for t in per_round) * 1e3 for name in paths}
    info = describe()
    result = {"maps": len(maps), "grid": list(GRID), "rounds": args.rounds, "same_pixels": same,
              "ms_per_map": {k: round(v, 4) for k, v in ms.items()}, "ratio": round(ratio, 4),
              "aim_ratio": AIM_RATIO, "foreground_pixels_mean": round(float(np.mean([m.sum() for m in maps])), 1),
              "machine": info}
    missed = [] if same else ["not the same pixels as scikit-learn"]
    if ratio > AIM_RATIO:
        missed.append(f"ratio {ratio:.3f} > {AIM_RATIO}")
    text = "\n".join([
        f"Focus clustering per cross map at {GRID[0]}x{GRID[1]} ({len(maps)} maps of the three families, "
        f"{result['foreground_pixels_mean']:.0f} pixels above the threshold on average; {args.rounds} rounds, "
        "order alternating, medians; one thread):", "",
        "| grid filters (`dbscan_members`, default) ms | scikit-learn DBSCAN ms | ratio | same pixels |",
        "|---|---|---|---|",
        f"| {ms['grid filters']:.3f} | {ms['scikit-learn']:.3f} | **{ratio:.3f}x** | {same} |", "",
        f"Aim: the same pixels, at most {AIM_RATIO}x: " + ("met." if not missed else "missed: " + "; ".join(missed)),
        f"Machine: {machine_line(info)}."])
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "focus_clustering.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "focus_clustering.md").write_text(text + "\n")
    print(text)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
