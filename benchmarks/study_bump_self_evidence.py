"""Can the self-attention tell a clutter bump of the noun's map from an object? A study.

    python benchmarks/study_bump_self_evidence.py --part plain|clutter [--seed 43000]
    python benchmarks/study_bump_self_evidence.py --report    # both parts -> results/

In the frames the default reads from the noun's cross-attention (the fallbacks, steps 8 and
8b of docs/method.md) every bump of the map counts, clutter included. Clutter lights the map
where the self-attention holds no object, so a filter could keep only the bumps that some
head "shows": per bump and per head, the bump's containment lift
(``partition.head_region_lifts``) against the lifts of up to 12 copies of its shape laid on
the frame's free background (``partition.shape_null_lifts``: off the focus and the bumps,
two patches away). Measured per bump: in how many of the 12 heads the bump keeps more than
every copy, and the mean over heads of its z-score against the copies.

Each bump is called a noun object (at least 20% of it on an object of the noun), another
category's object (the multi family's distractors) or background (clutter). Frames: the 8
families whose default falls back most (multi, spread, video, heldout, early, rope, joint,
crowd), both grids, noise 0.5 and 1.0, 2 scenes per count 1..8, 3 frames, development seeds,
with and without ``noun_map_clutter.add_clutter``'s bumps. The filters are scored per frame
(the fallback's count = the bumps kept), without the temporal vote. Nothing here changes the
default.
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_identify as B  # noqa: E402
from machine import describe, machine_line  # noqa: E402
from noun_map_clutter import add_clutter  # noqa: E402

from numina_hooks.numina import NuminaConfig  # noqa: E402
from numina_hooks.numina import layout as L  # noqa: E402
from numina_hooks.numina import partition as P  # noqa: E402

FAMILIES = ("multi", "spread", "video", "heldout", "early", "rope", "joint", "crowd")
GRIDS = ((30, 52), (15, 26))
NOISES = (0.5, 1.0)
RESULTS = HERE / "results"
STEM = "identify_bump_self_evidence"


def _other_category(scene, frame_index: int, grid) -> np.ndarray:
    """bool [H, W]: the patches of objects of other categories (the multi family's
    distractors; none elsewhere)."""
    lay = getattr(scene, "layout", None)
    out = np.zeros(grid, dtype=bool)
    if lay is None or not hasattr(lay, "categories"):
        return out
    for k, cat in enumerate(lay.categories):
        if cat != "noun":
            out |= np.asarray(lay.masks[frame_index, k])
    return out


def bump_records(frame, scene, frame_index: int, grid, cfg: NuminaConfig) -> dict:
    """The default's reading of one frame and, when it reads the noun's map, each bump's
    kind and per-head lift against its shape-matched copies."""
    lay = B.layout_from_attention(frame.self_attn, frame.cross_attn, grid, cfg)
    rec = {"count": int(lay.count), "truth": int(frame.count), "from_cross": bool(lay.from_cross)}
    if not lay.from_cross:
        return rec
    sa, _ = L.checked_self_attention(frame.self_attn, grid, "study", entries_only=True)
    ca = L.checked_cross_attention(frame.cross_attn, sa.shape, "cross_attn")
    cross, _ = L.select_cross_attention(ca, cfg.cross_head)
    focus = L.noun_focus(cross, grid, cfg)
    source = L.self_attention_source(sa, cfg)
    labels = np.asarray(lay.labels).reshape(grid)
    truth = np.asarray(frame.labels).reshape(grid)
    other = _other_category(scene, frame_index, grid)
    regions = np.tile(labels.reshape(-1), (source.heads, 1))
    lift, _ = P._containment_lift(source, regions, cfg.lift_sample, grid)
    free = ~ndimage.binary_dilation(focus.mask | (labels > 0), iterations=2)
    bumps = []
    for b in range(1, int(labels.max()) + 1):
        shape = labels == b
        kind = "noun" if (truth[shape] > 0).mean() > 0.2 else "other" if other[shape].mean() > 0.2 else "background"
        beats, z = 0, []
        for k in range(source.heads):
            copies = P.shape_null_lifts(source, k, shape, free, cfg.lift_sample)
            if len(copies) < 3 or not np.isfinite(lift[k][b]):
                continue
            beats += int(lift[k][b] > copies.max())
            z.append(float(np.clip((lift[k][b] - np.median(copies)) / max(float(np.std(copies)), 1e-4), -20, 20)))
        bumps.append({"kind": kind, "size": int(shape.sum()), "heads_measured": len(z),
                      "heads_beating_every_copy": beats, "mean_z": float(np.mean(z)) if z else None})
    rec["bumps"] = bumps
    return rec


def run_part(part: str, seed0: int) -> list:
    """Every frame of the study with (``part`` = "clutter") or without the added clutter."""
    cfg = NuminaConfig()
    out = []
    for family in FAMILIES:
        for grid in GRIDS:
            for noise in NOISES:
                for n in range(1, 9):
                    for s in range(2):
                        seed = seed0 + 100 * s + n
                        scene, _ = B._scene(family, n, grid, noise, seed, 3)
                        if part == "clutter":
                            add_clutter(scene.frames, grid, seed)
                        for i, frame in enumerate(scene.frames):
                            rec = bump_records(frame, scene, i, grid, cfg)
                            out.append(rec | {"family": family, "grid": list(grid), "noise": noise})
            print(part, family, len(out), flush=True)
    return out


def _auc(pos, neg) -> float | None:
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if not len(pos) or not len(neg):
        return None
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def _kept_absolute(bumps, t: int) -> int:
    """Bumps kept when a bump must beat every copy in at least ``t`` heads (a bump no copy
    fits is kept)."""
    return sum(1 for b in bumps if b["heads_measured"] == 0 or b["heads_beating_every_copy"] >= t)


def _kept_relative(bumps, share: float, top_at_least: float) -> int:
    """Bumps kept when the frame's best bump has a mean z of at least ``top_at_least`` and a
    bump must reach ``share`` of it (every bump kept in a frame whose best is weaker)."""
    z = [b["mean_z"] for b in bumps if b["mean_z"] is not None]
    top = max(z, default=0.0)
    if top < top_at_least:
        return len(bumps)
    return sum(1 for b in bumps if b["mean_z"] is None or b["mean_z"] >= share * top)


FILTERS = {"beats every copy in >= 2 heads": lambda b: _kept_absolute(b, 2),
           "beats every copy in >= 3 heads": lambda b: _kept_absolute(b, 3),
           "beats every copy in >= 4 heads": lambda b: _kept_absolute(b, 4),
           "mean z >= 0.15 x the frame's best (best >= 8)": lambda b: _kept_relative(b, 0.15, 8.0),
           "mean z >= 0.2 x the frame's best (best >= 5)": lambda b: _kept_relative(b, 0.2, 5.0)}


def summarise(parts: dict) -> dict:
    """Per part: per family, AUCs of noun objects against background bumps; per filter, the
    frames' accuracy before and after, overall and in the cell that lost most."""
    out = {}
    for part, recs in parts.items():
        fams = collections.defaultdict(lambda: collections.defaultdict(list))
        for r in recs:
            for b in r.get("bumps", []):
                if b["heads_measured"]:
                    fams[r["family"]][b["kind"]].append((b["heads_beating_every_copy"], b["mean_z"]))
        separation = {}
        for family, kinds in fams.items():
            noun, bg = np.array(kinds["noun"]), np.array(kinds["background"])
            separation[family] = {
                "noun_bumps": len(noun), "background_bumps": len(bg), "other_category_bumps": len(kinds["other"]),
                "auc_heads_beating": _auc(noun[:, 0], bg[:, 0]) if len(noun) and len(bg) else None,
                "auc_mean_z": _auc(noun[:, 1], bg[:, 1]) if len(noun) and len(bg) else None,
                "noun_kept_3_heads": float(np.mean(noun[:, 0] >= 3)) if len(noun) else None,
                "background_kept_3_heads": float(np.mean(bg[:, 0] >= 3)) if len(bg) else None}
        filters = {}
        for name, kept in FILTERS.items():
            cells = collections.defaultdict(lambda: [0, 0, 0])
            for r in recs:
                key = f"{r['family']} {r['grid'][0]}x{r['grid'][1]} {r['noise']}"
                before = r["count"] == r["truth"]
                after = kept(r["bumps"]) == r["truth"] if r["from_cross"] and r.get("bumps") else before
                c = cells[key]
                c[0] += before
                c[1] += after
                c[2] += 1
            total = np.array(list(cells.values())).sum(0)
            worst = min(cells.items(), key=lambda kv: (kv[1][1] - kv[1][0]) / kv[1][2])
            filters[name] = {"before": float(total[0] / total[2]), "after": float(total[1] / total[2]),
                             "frames": int(total[2]), "worst_cell": worst[0],
                             "worst_cell_change": float((worst[1][1] - worst[1][0]) / worst[1][2])}
        out[part] = {"frames": len(recs), "from_cross": sum(r["from_cross"] for r in recs),
                     "separation": separation, "filters": filters}
    return out


def markdown(result: dict) -> str:
    lines = ["# Clutter bumps against objects: what the self-attention shows", "",
             "`python benchmarks/study_bump_self_evidence.py` (a study: the default is unchanged). "
             "In the frames the default reads from the noun's map, each bump's containment lift in every "
             "head against up to 12 copies of its shape on the free background. Families "
             f"{', '.join(FAMILIES)}; grids 30x52 and 15x26; noise 0.5 and 1.0; 2 scenes per count 1..8, "
             f"3 frames; development seeds {result['seed']}..; with and without the added clutter. "
             "Accuracy per frame, no temporal vote.", ""]
    for part, res in result["parts"].items():
        lines += [f"## {part} maps: {res['frames']} frames, {res['from_cross']} read from the map", "",
                  "| family | noun bumps | background bumps | AUC: heads beating every copy | AUC: mean z | "
                  "noun bumps beating every copy in >= 3 heads | background bumps, same |",
                  "|---|---|---|---|---|---|---|"]
        for family, s in res["separation"].items():
            f = (lambda v: "-" if v is None else f"{v:.2f}")
            lines.append(f"| {family} | {s['noun_bumps']} | {s['background_bumps']} | {f(s['auc_heads_beating'])} | "
                         f"{f(s['auc_mean_z'])} | {f(s['noun_kept_3_heads'])} | {f(s['background_kept_3_heads'])} |")
        lines += ["", "| filter of the map's bumps | accuracy before | after | cell that lost most |", "|---|---|---|---|"]
        for name, s in res["filters"].items():
            lines.append(f"| {name} | {s['before']:.3f} | {s['after']:.3f} | {s['worst_cell']} "
                         f"({s['worst_cell_change']:+.2f}) |")
        lines.append("")
    lines += [f"Run {result['date']}. Machine: {result['machine']}."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("plain", "clutter"), help="measure one part (kept for --report)")
    ap.add_argument("--seed", type=int, default=43000, help="first development seed (default 43000)")
    ap.add_argument("--report", action="store_true", help="summarise both parts into results/")
    ap.add_argument("--work", default=str(RESULTS / f"{STEM}.tmp"),
                    help="where the parts are kept between runs (ignored by git)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    if args.part:
        work.mkdir(parents=True, exist_ok=True)
        recs = run_part(args.part, args.seed)
        (work / f"{args.part}.pkl").write_bytes(pickle.dumps({"seed": args.seed, "records": recs}))
    if args.report:
        parts = {}
        for part in ("plain", "clutter"):
            path = work / f"{part}.pkl"
            if not path.exists():
                raise SystemExit(f"--report: {path} is missing; run --part {part} first")
            parts[part] = pickle.loads(path.read_bytes())
        seed = parts["plain"]["seed"]
        result = {"seed": seed, "parts": summarise({k: v["records"] for k, v in parts.items()}),
                  "date": time.strftime("%Y-%m-%d"), "machine": machine_line(describe())}
        (RESULTS / f"{STEM}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{STEM}.md").write_text(markdown(result) + "\n")
        print(markdown(result))
    if not args.part and not args.report:
        ap.error("give --part plain|clutter and/or --report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
