"""Count how well the plain toy model (no NUMINA) follows requested counts.

    python -m numina_hooks.toy.evaluate --n 20 --seed 0 [--weights DIR] [--json PATH]

Each prompt-seed pair is generated with ``model.TOY_CALL`` (20 Euler steps, guidance 4),
its frames are counted with the exact counter, and CountAcc / TC are computed as the
paper defines them (``numina_hooks.eval.metrics``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from ..eval.metrics import summarize, video_scores
from . import model as toy_model
from .counter import count_objects
from .world import Prompt, held_out_prompts


def generate(pipe, texts: Sequence[str], seeds: Sequence[int], batch: int = 8, **call):
    """uint8 frames [N, F, H, W, 3] for prompt i with ``torch.Generator().manual_seed(seeds[i])``.

    Batched calls draw each sample's noise from its own generator, so a prompt-seed pair
    gives the same clip whatever the batch.
    """
    kwargs = {**toy_model.TOY_CALL, **call}
    out = []
    for i in range(0, len(texts), batch):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + batch]]
        res = pipe(prompt=list(texts[i : i + batch]), generator=gens, **kwargs)
        frames = toy_model.toy_frames(res)
        out.extend(frames if frames.ndim == 5 else frames[None])
    return out


def evaluate_plain(pipe, prompts: Sequence[Prompt], seeds: Sequence[int], **call) -> dict:
    """Plain-model counting figures over prompt-seed pairs ``zip(prompts, seeds)``.

    Returns ``metrics.summarize``'s dict (``videos``, ``count_acc``, ``tc``,
    ``by_requested``) plus ``rows``: one dict per pair with the prompt, seed, requested
    counts, counts found per frame and the video's CountAcc and TC. ``call`` overrides
    ``TOY_CALL`` entries (e.g. ``num_inference_steps``).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
    clips = generate(pipe, [p.text for p in prompts], seeds, **call)
    videos, rows = [], []
    for p, seed, frames in zip(prompts, seeds, clips):
        found = count_objects(frames)
        videos.append((found, p.counts))
        rows.append({"prompt": p.text, "seed": int(seed), "asked": p.counts,
                     "found": [{k: f[k] for k in p.counts} for f in found],
                     **video_scores(found, p.counts)})
    return {**summarize(videos), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m numina_hooks.toy.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights folder (default: shipped)")
    ap.add_argument("--n", type=int, default=20, help="prompt-seed pairs")
    ap.add_argument("--seed", type=int, default=0, help="selects prompts and noise seeds")
    ap.add_argument("--steps", type=int, default=toy_model.TOY_CALL["num_inference_steps"])
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args(argv)
    pipe = toy_model.load_toy_pipeline(a.weights)
    prompts = held_out_prompts(a.n, seed=a.seed)
    seeds = [1000 * a.seed + i for i in range(a.n)]
    res = evaluate_plain(pipe, prompts, seeds, num_inference_steps=a.steps)
    print(f"{res['videos']} held-out prompt-seed pairs: CountAcc {res['count_acc']:.3f}  "
          f"TC {res['tc']:.3f}")
    for k, v in res["by_requested"].items():
        print(f"  requested {k}: {v['acc']:.3f} of {v['frames']} frame-classes right")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
