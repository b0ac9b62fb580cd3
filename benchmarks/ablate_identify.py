"""What each rule of the default layout stage is worth: the default against the default with
one rule switched off, on the same frames, on development seeds that no rule was tuned on.

    OMP_NUM_THREADS=1 python benchmarks/ablate_identify.py [--sets 6000 7000]
        [--families heldout video project ...] [--grids 30x52 15x26] [--noise 0.5 1.0]
        [--scenes 2] [--frames 3] [--heads 12] [--rules peak_gap link_reach ...] [--resume PATH]
        [--name identify_ablation]
    OMP_NUM_THREADS=1 python benchmarks/ablate_identify.py --settings '{"link_ratio_0.7":
        {"link_ratio": 0.7}, ...}' --name identify_sensitivity      # other values, not "off"

Every rule of ``RULES`` is one ``NuminaConfig`` change that switches one step of the default
off (its documented "off" value: None, False or 0). For each seed set, family, grid and
noise: ``--scenes`` scenes per count 1-8 (seeds ``set + 100 s + n``, as the development sets
of docs/identify-evidence.md), ``--frames`` frames each, every configuration reads every
frame (``layout_from_attention``) and its counts are voted over neighbouring frames as the
benchmark votes them (``temporal_vote``).

Reported per rule: the change in the share of frames counted right when the rule is off
(off minus default; negative: the rule helps), over the families written blind to the
default (``BLIND``: their frames were never used to build a rule before it was measured on
them), over the others, and over all, each with a 95% paired bootstrap interval resampling
whole scenes; and how many cells went up and down. ``results/NAME.json`` holds every cell's
per-scene hits. A rule whose interval lies under 0 on the blind families earns its place on
data it was not built for; one whose interval lies over 0 costs accuracy there.

``--settings`` compares named ``NuminaConfig`` changes of any kind instead of the rules (a
JSON object ``{name: {field: value}}``, inline or a file's path): how far each setting of the
default sits from a better value on the same frames (a sensitivity study). ``--heads N``: N
self-attention heads a scene instead of 12 (each family's own heads, then its distractor types
repeated: ``bench_identify.head_types_for``; 40 as Wan2.1-14B)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_identify as B  # noqa: E402
from noun_map_clutter import DEFAULT_CLUTTER, add_clutter  # noqa: E402
from numina_hooks.numina.config import NuminaConfig  # noqa: E402
from numina_hooks.numina.layout import layout_from_attention  # noqa: E402
from numina_hooks.numina.partition import temporal_vote  # noqa: E402

#: families written blind to the default's rules of their day (docs/identify-evidence.md: "A
#: ninth family, written blind", "A tenth family, written blind", "An eleventh family, written
#: blind"); the two rules built on their development frames afterwards (step 8c on the video
#: family's, the finer head's comparison on the held-out family's) say so in ``RULES``'
#: descriptions; no rule has been built on the joint family's, nor on the partial family's
#: (the twelfth, written blind in 2026-12-07's twentieth session)
BLIND = ("video", "heldout", "joint", "partial")

#: rule -> (the NuminaConfig change that switches it off, what the rule does)
RULES: dict[str, tuple[dict, str]] = {
    "edge_reference": ({"edge_reference_quantile": None},
                       "edges taken relative to the heads' 0.25 quantile of the same pair"),
    "cores": ({"core_quantile": None}, "regions grown from cores instead of plain components"),
    "peak_gap": ({"peak_gap": None}, "a region's upper class of edges split off as its peaks"),
    "peak_rim": ({"peak_rim": 0}, "each peak grown back by one ring"),
    "null_factor": ({"min_lift_null_factor": None}, "the head's threshold from its null lifts"),
    "instance_null": ({"instance_null_factor": None}, "each instance against a size-matched null"),
    "link_ratio": ({"link_ratio": None}, "pieces that attend to each other joined"),
    "splinter": ({"splinter_link_gap": None}, "small touching pieces joined to a larger one"),
    "link_reach": ({"link_reach": None}, "pieces joined only within a reach"),
    "link_bridge": ({"link_bridge": None}, "a bridge in the noun map lets far pieces join"),
    "focus_specks": ({"focus_specks": False}, "the map's bright pixels DBSCAN dropped count as focus"),
    "focus_contrast": ({"focus_contrast": None}, "a region brighter than its ring is a candidate"),
    "unclaimed_focus": ({"unclaimed_min_lift": None}, "instances from the focus no instance covers (5b/5c)"),
    "unclaimed_peaks": ({"unclaimed_peaks": False}, "instances on the map's bumps no instance touches (5c)"),
    "finer_head": ({"finer_head_ratio": None},
                   "a head splitting the chosen one's instances preferred (built on heldout frames)"),
    "self_evidence": ({"self_evidence_factor": None}, "the cross map's reading where the self-attention's evidence is weak"),
    "half_peak": ({"cross_fallback_half_peak": False}, "the fallback's components at half the peak"),
    "fallback_evidence": ({"cross_fallback_evidence": None}, "the fallback's strong components need evidence"),
    "peak_prominence": ({"cross_peak_prominence": None}, "the map split at its saddles instead of plain components"),
    "map_contrast": ({"instance_map_contrast": None},
                     "an instance must show as a bump in the noun map (8c; built on video frames)"),
    "exclusive": ({"exclusive_regions": False}, "a pixel belongs to one noun's instance at most"),
    "own_key": ({"own_key": "kept"}, "rows read without the token's own key (off: as the softmax gives them)"),
    "map_veto": ({"link_map_veto": None}, "pieces the noun map holds in separate bumps never linked"),
    "bump_null": ({"unclaimed_peak_null_z": None},
                  "a weak bump of 5c counted when it stands over copies of its shape (off: the fixed lift alone)"),
    "self_evidence_null": ({"self_evidence_null_factor": None},
                           "the cross map's reading where the instances keep no more than the head's size-matched pieces"),
    "fallback_excess": ({"cross_fallback_excess": None},
                        "the cross map's reading where the map shows objects the head missed (8b)"),
    "evidence_floor": ({"cross_fallback_evidence_floor": None},
                       "8b's evidence test from the head's own threshold (off: from min_lift)"),
    "peak_smoothing": ({"cross_peak_sigma": 0}, "the noun map smoothed before its peaks are read"),
    "temporal_vote": ({"temporal_window": 0}, "counts voted over neighbouring frames"),
}


def _grid(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def run_cell(family: str, grid, noise: float, base: int, scenes: int, frames: int,
             configs: dict, heads: int = B.HEADS, clutter: dict | None = None) -> dict:
    """Per configuration, per scene, whether each frame's voted count is right: {name: [[0/1
    per frame] per scene]} for counts 1-8 x ``scenes`` scenes (seeds ``base + 100 s + n``),
    ``heads`` self-attention heads a scene (``bench_identify.head_types_for``); ``clutter``:
    None, or keyword arguments of ``noun_map_clutter.add_clutter`` (bumps added to every noun
    map, seeded by the scene's seed)."""
    hits = {name: [] for name in configs}
    for n in range(1, 9):
        for s in range(scenes):
            seed = base + 100 * s + n
            scene, _ = B._scene(family, n, grid, noise, seed, frames, heads=heads)
            if clutter is not None:
                add_clutter(scene.frames, grid, seed, **clutter)
            truth = [fr.count for fr in scene.frames]
            read = {}  # per-frame counts by the layout's settings: the vote's window reads none
            for name, cfg in configs.items():
                layout_cfg = dataclasses.replace(cfg, temporal_window=0)
                if layout_cfg not in read:
                    read[layout_cfg] = [layout_from_attention(fr.self_attn, fr.cross_attn, grid, cfg).count
                                        for fr in scene.frames]
                counts = read[layout_cfg]
                voted = temporal_vote(counts, cfg.temporal_window)
                hits[name].append([int(a == b) for a, b in zip(voted, truth)])
    return hits


def encoded(hits: dict) -> dict:
    """``run_cell``'s hits as one string per configuration ("011 111 ...": a scene's frames,
    scenes apart by a space), for a small JSON file."""
    return {name: " ".join("".join(map(str, scene)) for scene in scenes) for name, scenes in hits.items()}


def decoded(hits: dict) -> dict:
    """The inverse of ``encoded``."""
    return {name: [[int(ch) for ch in scene] for scene in text.split()] for name, text in hits.items()}


#: the parts of a run reported apart: (name, whether a cell belongs to it)
PARTS = (("blind", lambda c: c["family"] in BLIND), ("others", lambda c: c["family"] not in BLIND),
         ("all", lambda c: True))


def paired_interval(default: list, off: list) -> tuple[float, float, float]:
    """Mean over frames of (off - default) hits and its 95% interval, resampling whole scenes
    (``default``/``off``: [[0/1 per frame] per scene], the same scenes in the same order):
    ``bench_identify.bootstrap_interval`` of the per-frame differences."""
    return B.bootstrap_interval([[o - d for d, o in zip(d_scene, o_scene)]
                                 for d_scene, o_scene in zip(default, off)])


def summary(cells: list, rules: list) -> list:
    """Per rule: the change over the blind families, the others and all (mean, low, high), and
    the cells (family, grid, noise, set) that went up / down by more than a hundredth."""
    hits = [decoded(c["hits"]) for c in cells]
    rows = []
    for rule in rules:
        row = {"rule": rule}
        for part, keep in PARTS:
            chosen = [h for c, h in zip(cells, hits) if keep(c)]
            default = [s for h in chosen for s in h["default"]]
            off = [s for h in chosen for s in h[rule]]
            row[part] = paired_interval(default, off) if default else None
        moves = [np.mean(sum(h[rule], [])) - np.mean(sum(h["default"], [])) for h in hits]
        row["cells_up"] = int(sum(m > 0.01 for m in moves))
        row["cells_down"] = int(sum(m < -0.01 for m in moves))
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    m, lo, hi = v
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def parse_settings(text: str) -> dict:
    """``--settings``: a JSON object ``{name: {NuminaConfig field: value}}``, inline or the path
    of a file holding one -> {name: (change, description)}; ``ValueError`` naming what is wrong
    (not an object, an empty or invalid change: ``NuminaConfig``'s own checks)."""
    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"--settings {text!r}: not JSON ({e.msg}); expected an object "
                         '{"name": {"field": value}} or the path of a file holding one') from None
    if not isinstance(settings, dict) or not settings:
        raise ValueError(f"--settings: expected a non-empty JSON object of named changes, got "
                         f"{type(settings).__name__}")
    out = {}
    for name, change in settings.items():
        if name == "default" or not isinstance(change, dict) or not change:
            raise ValueError(f"--settings: {name!r} -> {change!r}: expected a name other than "
                             "'default' and a non-empty object of NuminaConfig fields")
        try:  # NuminaConfig's own checks name an unknown field, or the value and what is valid
            NuminaConfig(**change)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--settings: {name!r}: {e}") from None
        out[name] = (change, ", ".join(f"`{k}` {json.dumps(v)}" for k, v in change.items()))
    return out


def _wording(result: dict) -> dict:
    """What a table says of its comparisons: the rules switched off, or named settings."""
    run = {c["family"] for c in result["cells"]}
    blind = ", ".join(f for f in BLIND if f in run) or "none in this run"
    if result.get("kind") == "settings":
        return {"title": result.get("title", "Settings of the default layout stage changed one at a time"),
                "run": "`python benchmarks/ablate_identify.py --settings ...`: the default `NuminaConfig` "
                       "against the default with one setting changed",
                "blind": f"Blind families: {blind}.",
                "change": "with the setting (setting - default; positive = the setting counts more "
                          "frames right)",
                "columns": "| setting | change |",
                "what": lambda name: result["descriptions"][name]}
    return {"title": "Each rule of the default layout stage switched off, one at a time",
            "run": "`python benchmarks/ablate_identify.py`: the default `NuminaConfig` against the default "
                   "with one rule switched off",
            "blind": f"Blind families ({blind}): written without sight of the default's rules "
                     "of their day (two rules were built on their development frames since: see the "
                     "descriptions).",
            "change": "when the rule is off (off - default; negative = the rule helps)",
            "columns": "| rule (switched off) | what it does |",
            "what": lambda name: RULES[name][1]}


def _clutter_words(clutter: dict) -> str:
    """``noun_map_clutter.add_clutter``'s keyword arguments in words."""
    (a, b), (lo, hi) = clutter["amp"], clutter["num"]
    return f"{lo}-{hi - 1} bumps a scene at {a}-{b} of the objects' strength, {clutter['clearance']} patches clear of them"


def markdown(result: dict) -> str:
    cells, rows = result["cells"], result["summary"]
    say = _wording(result)
    defaults = {part: np.mean([h for c in cells if keep(c) for s in decoded(c["hits"])["default"] for h in s])
                for part, keep in PARTS if any(keep(c) for c in cells)}
    sets = sorted({c["set"] for c in cells})
    lines = [
        "# " + say["title"],
        "",
        say["run"] + ", on the same frames, counts voted over neighbouring frames. Development "
        f"seed sets {', '.join(map(str, sets))} ({result['scenes']} scenes per count 1-8, "
        f"{result['frames']} frames each, seeds set + 100 s + n"
        + (f", {result['heads']} self-attention heads a scene" if result.get("heads", B.HEADS) != B.HEADS else "")
        + (f", clutter added to every noun map ({_clutter_words(result['clutter'])})" if result.get("clutter") else "")
        + "), families "
        f"{', '.join(sorted({c['family'] for c in cells}))}, grids "
        f"{', '.join(sorted({'x'.join(map(str, c['grid'])) for c in cells}))}, noise "
        f"{', '.join(map(str, sorted({c['noise'] for c in cells})))}. " + say["blind"],
        "",
        f"Change in the share of frames counted right {say['change']}, with 95% paired bootstrap "
        "intervals over scenes. Default: " + ", ".join(f"{k} {v:.3f}" for k, v in defaults.items()) + ".",
        "",
        say["columns"] + " blind families | other families | all | cells up / down |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['rule']} | {say['what'](row['rule'])} | {_fmt(row['blind'])} | "
                     f"{_fmt(row['others'])} | {_fmt(row['all'])} | {row['cells_up']} / {row['cells_down']} |")
    lines += ["", f"Run {result['date']}. Machine: {result['machine']}; "
              f"{result['seconds']:.0f} s of cell time in all, one thread (every configuration on every frame, "
              "scenes made once a cell)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=int, nargs="+", default=(6000, 7000),
                    help="development seed sets (seeds set + 100 s + n)")
    ap.add_argument("--families", nargs="+", default=(*BLIND, "project", "shared", "feature", "rope",
                                                       "multi", "crowd", "spread", "early"))
    ap.add_argument("--grids", nargs="+", default=("30x52", "15x26"))
    ap.add_argument("--noise", type=float, nargs="+", default=(0.5, 1.0))
    ap.add_argument("--scenes", type=int, default=2, help="scenes per count and cell")
    ap.add_argument("--heads", type=int, default=B.HEADS,
                    help=f"self-attention heads a scene (default {B.HEADS}; 40 as Wan2.1-14B: the "
                         "family's heads, then its distractor types repeated)")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--clutter", action="store_true",
                    help="clutter bumps as strong as the objects added to every noun map "
                         "(noun_map_clutter.DEFAULT_CLUTTER)")
    ap.add_argument("--rules", nargs="+", default=tuple(RULES), help=f"of {', '.join(RULES)}")
    ap.add_argument("--settings", default=None,
                    help='named NuminaConfig changes compared instead of the rules: a JSON object '
                         '{"name": {"field": value}}, inline or a file')
    ap.add_argument("--resume", type=Path, default=None,
                    help="a JSON file of cells done so far: read if it exists, written after each cell")
    ap.add_argument("--name", default="identify_ablation")
    ap.add_argument("--title", default=None, help="the title of a --settings run's table")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.settings is not None:
        try:
            compared = parse_settings(args.settings)
        except ValueError as e:
            ap.error(str(e))
        names = list(compared)
    else:
        unknown = [r for r in args.rules if r not in RULES]
        if unknown:
            ap.error(f"--rules {' '.join(unknown)}: expected names of {', '.join(RULES)}")
        compared, names = RULES, list(args.rules)
    if args.heads < B.HEADS:
        ap.error(f"--heads {args.heads}: expected at least {B.HEADS} (every family's own heads)")
    torch.set_num_threads(1)
    configs = {"default": NuminaConfig()}
    configs |= {r: dataclasses.replace(NuminaConfig(), **compared[r][0]) for r in names}
    cells = json.loads(args.resume.read_text()) if args.resume and args.resume.exists() else []
    clutter = dict(DEFAULT_CLUTTER) if args.clutter else None
    if any(bool(c.get("clutter")) != args.clutter for c in cells):
        ap.error(f"--resume {args.resume}: its cells were run {'without' if args.clutter else 'with'} "
                 "--clutter; pass another --resume file")
    other = sorted({c.get("heads", B.HEADS) for c in cells} - {args.heads})
    if other:
        ap.error(f"--resume {args.resume}: its cells have {', '.join(map(str, other))} heads a scene, "
                 f"not --heads {args.heads}; pass another --resume file")
    done = {(c["set"], c["family"], tuple(c["grid"]), c["noise"]) for c in cells}
    for base in args.sets:
        for family in args.families:
            for grid in map(_grid, args.grids):
                for noise in args.noise:
                    if (base, family, grid, noise) in done:
                        continue
                    t0 = time.time()
                    hits = run_cell(family, grid, noise, base, args.scenes, args.frames, configs, args.heads,
                                    clutter)
                    cells.append({"set": base, "family": family, "grid": list(grid), "noise": noise,
                                  "seconds": round(time.time() - t0, 1), "hits": encoded(hits)}
                                 | ({"heads": args.heads} if args.heads != B.HEADS else {})
                                 | ({"clutter": True} if args.clutter else {}))
                    d = np.mean(sum(hits["default"], []))
                    print(f"set {base} {family} {grid[0]}x{grid[1]} {noise}: default {d:.3f} ({time.time() - t0:.0f} s)",
                          flush=True)
                    if args.resume:
                        args.resume.write_text(json.dumps(cells))
    result = {"date": time.strftime("%Y-%m-%d"), "machine": B._machine(), "scenes": args.scenes,
              "frames": args.frames, "heads": args.heads, "seconds": sum(c.get("seconds", 0.0) for c in cells),
              "kind": "rules" if args.settings is None else "settings", "clutter": clutter,
              "rules": {r: compared[r][0] for r in names},
              "descriptions": {r: compared[r][1] for r in names}, "cells": cells}
    if args.title:
        result["title"] = args.title
    result["summary"] = summary(cells, names)
    B._write(args.out, args.name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
