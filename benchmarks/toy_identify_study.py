"""How right is NUMINA's identify stage on the toy model? Layouts against the true objects.

    python benchmarks/toy_identify_study.py --n 100 --seed 0 [--weights DIR] [--json PATH] [--config JSON]

For each held-out prompt-seed pair, phase 1 runs to the reference step and reads the
layout (``handle.read_layout``); the plain generation from the same noise is then run to
the end and its objects are found exactly (connected components per colour,
:mod:`numina_hooks.toy.counter`). Phase 1 *is* the start of that plain trajectory, so the
plain video's objects are what the layout at t* should predict. Per noun and frame:

* ``count_right``: the layout's instance count equals the video's object count;
* ``instance_iou``: for each true object, the best IoU of a layout instance with it (on the
  latent patch grid; a patch belongs to an object when any of its 4 pixels does, as in
  ``world.patch_masks``),
  averaged over objects (a missed object scores 0);
* ``foreground_iou``: IoU of the union of layout instances with the union of the objects
  (where, ignoring how many).

Results are grouped by the video's true count. Nothing here tunes NUMINA: it reads the
default :class:`~numina_hooks.numina.config.NuminaConfig`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import numina_hooks
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.toy import model as toy_model
from numina_hooks.toy.counter import label_objects, patch_labels
from numina_hooks.toy.world import category_of_noun, held_out_prompts


def compare_frame(layout: np.ndarray, truth: np.ndarray, others: Optional[np.ndarray] = None) -> dict:
    """Layout instance labels vs true object labels, both [h, w] on one grid (0 = background).

    ``others`` (bool [h, w]): the patches of the other categories' objects; with it, the row
    also says how many layout instances sit on another category's objects more than on
    this one's (``on_other``)."""
    true_ids = [t for t in np.unique(truth) if t > 0]
    pred_ids = [p for p in np.unique(layout) if p > 0]
    best = []
    for t in true_ids:
        tm = truth == t
        ious = [np.logical_and(tm, layout == p).sum() / np.logical_or(tm, layout == p).sum() for p in pred_ids]
        best.append(max(ious) if ious else 0.0)
    fg_t, fg_p = truth > 0, layout > 0
    union = np.logical_or(fg_t, fg_p).sum()
    # where a wrong count comes from: objects no instance touches, objects sharing their
    # instance (the one holding most of them) with another object, instances on no object
    holder = {}
    for t in true_ids:
        tm = truth == t
        hits = {p: int(np.logical_and(tm, layout == p).sum()) for p in pred_ids}
        hits = {p: h for p, h in hits.items() if h > 0}
        holder[t] = max(hits, key=hits.get) if hits else None
    held = [h for h in holder.values() if h is not None]
    extra = {}
    if others is not None:
        extra["on_other"] = sum(int(np.logical_and(layout == p, others).sum() > np.logical_and(layout == p, fg_t).sum())
                                for p in pred_ids)
    return {**extra,
        "true_count": len(true_ids),
        "layout_count": len(pred_ids),
        "count_right": len(true_ids) == len(pred_ids),
        "instance_iou": float(np.mean(best)) if best else None,
        "foreground_iou": float(np.logical_and(fg_t, fg_p).sum() / union) if union else None,
        "objects_missed": sum(h is None for h in holder.values()),
        "objects_merged": sum(h is not None and held.count(h) > 1 for h in holder.values()),
        "instances_on_nothing": sum(not np.logical_and(fg_t, layout == p).any() for p in pred_ids),
    }


def study(pipe, n: int, seed: int = 0, config=None, progress: bool = True,
          noise_base: int | None = None, counts_in: str = "v2") -> dict:
    """Run the comparison over ``n`` held-out prompts (noise seed ``noise_base + i`` for
    prompt ``i``; ``noise_base`` None = ``seed``; ``1000 * seed`` gives the noise of
    ``eval_toy_end_to_end.py --seed seed``: the same prompt-seed pairs), of the count range
    ``counts_in`` (the weights'; ``toy.world.COUNT_RANGES``)."""
    call = dict(toy_model.TOY_CALL)
    frames_rows = []
    prompts = held_out_prompts(n, seed=seed, counts_in=counts_in)
    iterator = enumerate(prompts)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(prompts), desc="identify study")
    with numina_hooks.attach(pipe, config=config or NuminaConfig()) as handle, torch.no_grad():
        for i, prompt in iterator:
            gen_seed = (seed if noise_base is None else noise_base) + i
            report = handle.read_layout(prompt=prompt.text,
                                        generator=torch.Generator().manual_seed(gen_seed), **call)
            video = toy_model.toy_frames(handle.run_pipeline(
                prompt=prompt.text, generator=torch.Generator().manual_seed(gen_seed), **call))
            # per frame, each category's objects on the patch grid
            truth = [{c: patch_labels(labels) for c, labels in label_objects(frame).items()} for frame in video]
            for noun, layouts in report.layouts_before.items():
                cat = category_of_noun(noun)
                if cat is None:
                    continue
                for f, layout in enumerate(layouts):
                    others = np.zeros(layout.shape, dtype=bool)
                    for other, labels in truth[f].items():
                        if other != cat:
                            others |= labels > 0
                    row = compare_frame(layout, truth[f][cat], others)
                    row.update(prompt=prompt.text, seed=gen_seed, noun=noun, frame=f, asked=prompt.counts.get(cat))
                    frames_rows.append(row)
    return summarize(frames_rows, n)


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _share(rows: list, key: str, per: str) -> Optional[float]:
    """``sum(row[key]) / sum(row[per])`` over the rows that have ``key`` (None if none do)."""
    rows = [r for r in rows if key in r]
    total = sum(r[per] for r in rows)
    return sum(r[key] for r in rows) / total if total else None


def summarize(rows: list, pairs: int) -> dict:
    """Aggregate per-frame rows: overall and by the video's true count."""
    def agg(sel):
        return {
            "frames": len(sel),
            "count_right": _mean([float(r["count_right"]) for r in sel]),
            "instance_iou": _mean([r["instance_iou"] for r in sel]),
            "foreground_iou": _mean([r["foreground_iou"] for r in sel]),
            "mean_abs_count_error": _mean([abs(r["layout_count"] - r["true_count"]) for r in sel]),
            "instances_on_other": (sum(r["on_other"] for r in sel) / max(1, sum(r["layout_count"] for r in sel))
                                   if all("on_other" in r for r in sel) else None),
            "objects_missed": _share(sel, "objects_missed", "true_count"),
            "objects_merged": _share(sel, "objects_merged", "true_count"),
            "instances_on_nothing": _share(sel, "instances_on_nothing", "layout_count"),
        }

    by_count = {}
    for c in sorted({r["true_count"] for r in rows}):
        by_count[str(c)] = agg([r for r in rows if r["true_count"] == c])
    return {"pairs": pairs, "overall": agg(rows), "by_true_count": by_count, "rows": rows}


def markdown(result: dict) -> str:
    lines = ["| true count | noun-frames | layout count right | instance IoU | foreground IoU | mean abs count error "
             "| layout instances on another noun's objects | objects no instance touches | objects sharing "
             "their instance | instances on no object of the noun |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, pct=False):
        if v is None:
            return "-"
        return f"{100 * v:.0f}%" if pct else f"{v:.2f}"

    for key, a in [("all", result["overall"])] + list(result["by_true_count"].items()):
        lines.append(f"| {key} | {a['frames']} | {fmt(a['count_right'], True)} | {fmt(a['instance_iou'])} | "
                     f"{fmt(a['foreground_iou'])} | {fmt(a['mean_abs_count_error'])} | "
                     f"{fmt(a.get('instances_on_other'), True)} | {fmt(a.get('objects_missed'), True)} | "
                     f"{fmt(a.get('objects_merged'), True)} | {fmt(a.get('instances_on_nothing'), True)} |")
    return "\n".join(lines)


def toy_study_setup(argv, description: str, default_n: int):
    """The command line of a toy study (``--n`` pairs, ``--weights``) and the toy pipeline,
    one torch thread, progress bar off: ``(args, pipe)``."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=default_n, help="held-out prompt-seed pairs")
    ap.add_argument("--weights", default=None, help="toy weights folder (default: the shipped weights)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    pipe = toy_model.load_toy_pipeline(a.weights)
    pipe.set_progress_bar_config(disable=True)
    return a, pipe


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python benchmarks/toy_identify_study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="held-out prompt-seed pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-base", type=int, default=None,
                    help="noise seed of prompt i is NOISE_BASE + i (default: --seed; 1000 x --seed "
                         "= the pairs of eval_toy_end_to_end.py --seed)")
    ap.add_argument("--weights", default=None, help="toy weights folder (default: the shipped weights)")
    ap.add_argument("--json", default=None, help="write the figures and per-frame rows here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None,
                    help='NuminaConfig fields as JSON, e.g. \'{"reference_layer": 4}\' (default: the defaults)')
    a = ap.parse_args(argv)
    if a.n < 1:
        ap.error(f"--n {a.n}: expected at least 1 prompt-seed pair")
    torch.set_num_threads(a.threads)
    pipe = toy_model.load_toy_pipeline(a.weights)
    pipe.set_progress_bar_config(disable=True)
    config = NuminaConfig(**json.loads(a.config)) if a.config else NuminaConfig()
    result = study(pipe, a.n, a.seed, config=config, noise_base=a.noise_base,
                   counts_in=toy_model.weights_count_range(a.weights))
    result["config"] = a.config
    print(markdown(result))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
