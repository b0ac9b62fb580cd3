"""Is the toy model's NUMINA gain limited by the layout or by the guidance?

    python benchmarks/study_toy_guidance.py [--n 40] [--seed 0]

Three generations per held-out prompt-seed pair, from the same noise:

* ``plain``;
* ``numina``: the default two-phase generation;
* ``numina-oracle-layout``: phase 2 guided by a *perfect* layout instead of the refined
  one: a toy-world clip drawn with exactly the asked counts, its objects on the latent
  patch grid as the layout (every object boosted as an addition, everything else the
  phase-1 layout had suppressed). Identify is taken out of the loop; what remains is how
  well cross-attention guidance makes the model draw a given layout.

Each video is counted exactly. If the oracle layout gains much more than NUMINA, the
layout (identify + refine) is the bottleneck; if it gains little too, the guidance is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks.eval.metrics import video_scores  # noqa: E402
from numina_hooks.numina import generate as generate_mod  # noqa: E402
from numina_hooks.numina.refine import Edit, RefinedFrame  # noqa: E402
from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy.counter import count_objects  # noqa: E402
from numina_hooks.toy.identify_study import patch_labels  # noqa: E402
from numina_hooks.toy.world import category_of_noun, held_out_prompts, make_clip  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=None, help="NuminaConfig fields as JSON for both NUMINA runs")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    a = ap.parse_args(argv)
    from numina_hooks.numina.config import NuminaConfig

    config = NuminaConfig(**json.loads(a.config)) if a.config else NuminaConfig()
    torch.set_num_threads(1)
    pipe = toy_model.load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call = dict(toy_model.TOY_CALL)
    scores = {"plain": [], "numina": [], "numina-oracle-layout": []}
    with numina_hooks.attach(pipe, config=config) as handle, torch.no_grad():
        for i, prompt in enumerate(held_out_prompts(a.n, seed=a.seed)):
            seed = a.seed + i
            nouns = numina_hooks.parse_counts(prompt.text)
            target = dict(prompt.counts)

            def score(out):
                found = count_objects(toy_model.toy_frames(out))
                return video_scores(found, target)

            scores["plain"].append(score(handle.run_pipeline(
                prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)))
            scores["numina"].append(score(handle(
                prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)))
            refine, order = oracle_refiner(target, 10_000 + seed)
            order.extend(nouns)  # run_numina refines the nouns in the order parse_counts gives them
            with mock.patch.object(generate_mod, "refine_layouts", refine), \
                    mock.patch.object(generate_mod.LayoutReader, "matches", lambda self, c: False):
                scores["numina-oracle-layout"].append(score(handle(
                    prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)))
            print(i, {k: round(v[-1]["count_acc"], 2) for k, v in scores.items()}, flush=True)
    table = {k: {"count_acc": statistics.mean(s["count_acc"] for s in v), "tc": statistics.mean(s["tc"] for s in v)}
             for k, v in scores.items()}
    result = {"machine": describe(), "pairs": a.n, "config": a.config, "weights": json.loads(
        (toy_model.WEIGHTS_DIR / "info.json").read_text()).get("steps"), "table": table}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"toy_guidance_study{a.tag}.json").write_text(json.dumps(result, indent=2))
    md = ["| generation | CountAcc (%) | TC (%) |", "|---|---|---|"]
    md += [f"| {k} | {100 * r['count_acc']:.1f} | {100 * r['tc']:.1f} |" for k, r in table.items()]
    md += ["", f"{a.n} held-out prompt-seed pairs, toy weights at step {result['weights']}, "
               f"config {a.config or 'default'}; "
               f"machine: {machine_line(result['machine'])}."]
    (RESULTS / f"toy_guidance_study{a.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
