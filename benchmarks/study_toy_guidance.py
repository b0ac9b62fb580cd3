"""Does layout guidance move the toy model's counts when the layout is perfect?

    python benchmarks/study_toy_guidance.py --weights DIR --n 48 [--seed 0] [--threads 1]
        [--arms JSON] [--numina] [--out benchmarks/results/toy_guidance_study.json]

Per held-out prompt-seed pair, from the same noise:

* ``plain``: the pipeline alone;
* one **oracle-layout** generation per arm: phase 2 guided by a *perfect* layout instead of
  the refined one: a toy-world clip drawn with exactly the asked counts, its objects on the
  latent patch grid as the layout (every object boosted as a circle addition, whatever
  phase 1's layout had outside them suppressed). Identify is taken out of the loop; what
  remains is how well cross-attention guidance makes the model draw a given layout. An arm
  is a name and the ``NuminaConfig`` fields it sets (the guidance strength), e.g.
  ``{"mass 0.5": {"boost_mode": "mass", "boost_mass": 0.5}}``;
* with ``--numina``, also the default two-phase generation (identify included).

Each video is counted exactly. The table gives CountAcc and TC per generation and each
arm's gain over plain with a paired bootstrap 95% interval (prompt-seed pairs resampled),
and, per arm, what its boost did to the attention: the noun's softmax share on the
boosted rows (all heads, blocks and guided steps) before and after the boost, and the
mean bias added, in score units and in units of the row's logit spread.
Results: ``--out`` (JSON, every pair's scores included) and the same name with ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402
from toy_identify_study import patch_labels  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks.metrics import video_scores  # noqa: E402
from numina_hooks.attention import dense_bias, pre_softmax_spread  # noqa: E402
from numina_hooks.eval.stats import paired_bootstrap  # noqa: E402
from numina_hooks.numina import generate as generate_mod  # noqa: E402
from numina_hooks.numina.config import NuminaConfig  # noqa: E402
from numina_hooks.numina.refine import Edit, RefinedFrame  # noqa: E402
from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy.counter import count_objects  # noqa: E402
from numina_hooks.toy.world import category_of_noun, held_out_prompts, make_clip  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

#: The strengths compared by default: the paper's absolute bias, and the two calibrated modes.
DEFAULT_ARMS = {
    "absolute k=0.8 (paper)": {"boost_mode": "absolute", "boost_bias": 0.8},
    "absolute k=4": {"boost_mode": "absolute", "boost_bias": 4.0},
    "logit_spread 2": {"boost_mode": "logit_spread", "boost_spread": 2.0},
    "mass 0.5": {"boost_mode": "mass", "boost_mass": 0.5},
    "mass 0.8": {"boost_mode": "mass", "boost_mass": 0.8},
}


def oracle_refiner(prompt_counts: dict, clip_seed: int):
    """A stand-in for ``refine_layouts`` that returns a clip's true layout for each noun in turn."""
    clip = make_clip(clip_seed, counts=prompt_counts, split="any")
    nouns_in_order: list = []
    calls = []

    def refine(layouts, asked, config):
        noun = nouns_in_order[len(calls)]
        calls.append(noun)
        cat = category_of_noun(noun)
        if cat is None:  # a word parse_counts took for a noun ("floating"): leave it alone
            return [RefinedFrame(labels_before=b, labels_after=b) for b in layouts]
        frames = []
        for f, before in enumerate(layouts):
            ids = [k + 1 for k, c in enumerate(clip.categories) if c == cat]
            pix = np.where(np.isin(clip.instances[f], ids), clip.instances[f], 0)
            after = patch_labels(pix)
            added = [Edit("add_circle", after == k, None, tuple(np.argwhere(after == k).mean(0)))
                     for k in np.unique(after[after > 0])]
            removed = [(before > 0) & ~(after > 0)] if ((before > 0) & ~(after > 0)).any() else []
            frames.append(RefinedFrame(labels_before=before, labels_after=after, removed=removed, added=added))
        return frames

    return refine, nouns_in_order


class BoostMeter:
    """Records, for every boost edit guidance makes, the noun's share before/after and the bias."""

    def __init__(self):
        self.sums = {}

    def add(self, arm: str, view, edits) -> None:
        boosts = [e for e in edits if e.mode in ("boost", "share")]
        if not boosts:
            return
        bias = dense_bias(edits, view.q, view.k, view.scale)  # the toy's rows x keys are small
        scale = view.q.shape[-1] ** -0.5 if view.scale is None else view.scale
        for e in boosts:
            s = torch.matmul(view.q[e.batch][:, e.rows].float(), view.k[e.batch].float().transpose(-1, -2)) * scale
            b = bias[e.batch][:, e.rows]
            before = torch.softmax(s, -1)[..., e.columns].sum(-1)
            after = torch.softmax(s + b, -1)[..., e.columns].sum(-1)
            added = b[..., e.columns].mean(-1)
            spread = pre_softmax_spread(view.q, view.k, e.rows, e.batch, view.scale)
            acc = self.sums.setdefault(arm, np.zeros(5))
            acc += [before.sum().item(), after.sum().item(), added.sum().item(), (added / spread).sum().item(),
                    before.numel()]

    def table(self) -> dict:
        keys = ("share_before", "share_after", "bias", "bias_in_spreads")
        return {arm: dict(zip(keys, (acc[:4] / acc[4]).tolist())) for arm, acc in self.sums.items()}


def _arms(text: str | None) -> dict:
    arms = DEFAULT_ARMS if text is None else json.loads(text)
    if not isinstance(arms, dict) or not arms:
        raise SystemExit(f"--arms must be a JSON object name -> NuminaConfig fields, got {text!r}")
    for name, fields in arms.items():
        try:
            NuminaConfig(**fields)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"--arms: arm {name!r}: {err}") from None
    return arms


def _weights_copy(path: str | None) -> tuple[Path, int | None]:
    """Copy the weights folder aside (a training run may rewrite it) and read its step."""
    src = Path(path) if path else toy_model.WEIGHTS_DIR
    dst = Path(tempfile.mkdtemp(prefix="toy-weights-"))
    for name in ("model.safetensors", "info.json"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    info = json.loads((dst / "info.json").read_text()) if (dst / "info.json").exists() else {}
    return dst, info.get("steps")


def summarise(scores: dict) -> dict:
    """Per generation: mean CountAcc and TC; per arm: the paired gain over plain, with intervals."""
    table = {}
    for name, rows in scores.items():
        entry = {"count_acc": statistics.mean(r["count_acc"] for r in rows),
                 "tc": statistics.mean(r["tc"] for r in rows)}
        if name != "plain":
            for metric in ("count_acc", "tc"):
                diff, lo, hi = paired_bootstrap([r[metric] for r in scores["plain"]], [r[metric] for r in rows])
                entry[f"{metric}_gain"] = [diff, lo, hi]
        table[name] = entry
    return table


def format_gain(gain) -> str:
    """(mean, lo, hi) as fractions -> "+d.d [+l.l, +h.h]" in percentage points."""
    d, lo, hi = (100 * x for x in gain)
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def markdown(result: dict) -> str:
    def gain(entry, metric):
        return format_gain(entry[f"{metric}_gain"]) if f"{metric}_gain" in entry else "-"

    md = ["| generation | CountAcc (%) | gain vs plain, 95% CI | TC (%) | gain vs plain, 95% CI |",
          "|---|---|---|---|---|"]
    for name, e in result["table"].items():
        md.append(f"| {name} | {100 * e['count_acc']:.1f} | {gain(e, 'count_acc')} | {100 * e['tc']:.1f} | "
                  f"{gain(e, 'tc')} |")
    md += ["", "| oracle arm | noun share before boost | after | mean bias | in row logit spreads |",
           "|---|---|---|---|---|"]
    for name, b in result["boost"].items():
        md.append(f"| {name} | {b['share_before']:.3f} | {b['share_after']:.3f} | {b['bias']:.2f} | "
                  f"{b['bias_in_spreads']:.2f} |")
    md += ["", f"{result['pairs']} held-out prompt-seed pairs (prompt seed {result['seed']}), toy weights "
               f"`{result['weights_dir']}` at step {result['weights_step']}; oracle arms set "
               f"{json.dumps(result['arms'])}; {result['seconds']:.0f} s; machine: {machine_line(result['machine'])}."]
    return "\n".join(md) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped toy weights)")
    ap.add_argument("--n", type=int, default=48, help="held-out prompt-seed pairs")
    ap.add_argument("--seed", type=int, default=0, help="prompt draw seed; pair i uses noise seed seed + i")
    ap.add_argument("--arms", default=None, help="JSON object: arm name -> NuminaConfig fields")
    ap.add_argument("--numina", action="store_true", help="also run the default two-phase NUMINA")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "toy_guidance_study.json"))
    a = ap.parse_args(argv)
    if a.n < 1:
        raise SystemExit(f"--n {a.n}: expected at least 1 prompt-seed pair")
    arms = _arms(a.arms)
    torch.set_num_threads(a.threads)
    weights, step = _weights_copy(a.weights)
    pipe = toy_model.load_toy_pipeline(weights)
    pipe.set_progress_bar_config(disable=True)
    call = dict(toy_model.TOY_CALL)
    scores = {"plain": []} | ({"numina": []} if a.numina else {}) | {f"oracle {k}": [] for k in arms}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meter = BoostMeter()
    real_edits_for = generate_mod.LayoutGuidance.edits_for
    arm_now = [None]

    def metered_edits_for(self, view):
        edits = real_edits_for(self, view)
        if arm_now[0] is not None:
            meter.add(arm_now[0], view, edits)
        return edits

    t0 = time.perf_counter()
    with mock.patch.object(generate_mod.LayoutGuidance, "edits_for", metered_edits_for), torch.no_grad():
        for i, prompt in enumerate(held_out_prompts(a.n, seed=a.seed, counts_in=toy_model.weights_count_range(a.weights))):
            seed = a.seed + i
            nouns = numina_hooks.parse_counts(prompt.text)
            target = dict(prompt.counts)

            def run(config, plain=False):
                # one attach per generation: each arm runs under its own config
                with numina_hooks.attach(pipe, config=config) as handle:
                    fn = handle.run_pipeline if plain else handle
                    out = fn(prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)
                return video_scores(count_objects(toy_model.toy_frames(out)), target)

            scores["plain"].append(run(NuminaConfig(), plain=True))
            if a.numina:
                scores["numina"].append(run(NuminaConfig()))
            for name, fields in arms.items():
                arm_now[0] = f"oracle {name}"
                refine, order = oracle_refiner(target, 10_000 + seed)
                order.extend(nouns)  # run_numina refines the nouns in the order parse_counts gives them
                with mock.patch.object(generate_mod, "refine_layouts", refine), \
                        mock.patch.object(generate_mod.LayoutReader, "matches", lambda self, c: False):
                    scores[f"oracle {name}"].append(run(NuminaConfig(**fields)))
                arm_now[0] = None
            print(i, {k: round(v[-1]["count_acc"], 2) for k, v in scores.items()}, flush=True)
            # written after every pair, so that a run cut short still leaves its figures
            result = {"machine": describe(), "pairs": i + 1, "pairs_asked": a.n, "seed": a.seed,
                      "weights_dir": a.weights or "shipped", "weights_step": step, "arms": arms,
                      "seconds": time.perf_counter() - t0, "table": summarise(scores), "boost": meter.table(),
                      "scores": scores}
            out.write_text(json.dumps(result, indent=2))
            out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
