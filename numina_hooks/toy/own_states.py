"""The toy model's own sampling states, labelled with the objects its videos end up holding.

    python -m numina_hooks.toy.own_states --out toy-states.pt --n 256 --seed 0 [--weights DIR]

NUMINA's phase 1 reads self-attention at an intermediate step of the model's *own* sampling
trajectory (0.4 of the steps) and assumes an instance head there already separates the
objects the video will show: in Wan2.1 the layout is fixed early and the heads reflect it.
The toy's instance heads (:mod:`numina_hooks.toy.instance_head`) were trained on world clips
noised to a random sigma, where they match 94% of the objects; on the model's own states at
the reading step they match about half of the objects of the final video, because a state of
the sampler is not a noised clean clip. This module records such states so that the
instance-head loss can also be applied to them (``train --own-states``):

- prompts are captions of *training* combinations (``world.make_clip(seed, split="train")``),
  never the held-out ones the evaluations use;
- each prompt is sampled with ``model.TOY_CALL`` (20 steps, guidance 4) from its own noise;
  the latents entering steps ``steps`` (default 5 to 11, around the reading step 8) are kept
  with their timesteps;
- the target of every state is the final video's objects: the exact counter's instances per
  frame (:func:`numina_hooks.toy.counter.label_objects`), reduced to the patch grid.

The file holds ``latents`` fp16 [N, 3, F, H, W], ``timesteps`` float [N], ``captions`` (one
per state), ``labels`` long [N, F * h * w] (0 = background, object ids unique per clip) and
the arguments that made it, and the final videos uint8 [n, F, H, W, 3].
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import model as toy_model
from . import world
from .counter import label_objects, patch_labels


def frame_patch_labels(frames: np.ndarray, patch: int = world.PATCH) -> torch.Tensor:
    """Object id per video token of a generated clip: ``frames`` uint8 [F, H, W, 3] ->
    long [F * (H // patch) * (W // patch)] in token order (frame, row, column).

    Objects are the exact counter's components, numbered across categories; a patch takes the
    object that holds most of its pixels (0 = background when none holds any:
    :func:`numina_hooks.toy.counter.patch_labels`), as
    :func:`numina_hooks.toy.instance_head.patch_instances` labels world clips, whose objects
    never share a patch."""
    f, h, w, _ = frames.shape
    ids = np.zeros((f, h, w), dtype=np.int64)
    for t in range(f):
        offset = 0
        for labels in label_objects(frames[t]).values():
            ids[t] = np.where(labels > 0, labels + offset, ids[t])
            offset += int(labels.max())
    out = patch_labels(ids, patch)
    return torch.from_numpy(out.reshape(-1).astype(np.int64))


def record_states(pipe, captions: Sequence[str], seeds: Sequence[int], steps: Sequence[int],
                  batch: int = 8) -> dict:
    """Sample each caption from its seed and keep the latents entering each of ``steps``.

    Returns ``latents`` fp16 [N * len(steps), 3, F, H, W], ``timesteps`` [N * len(steps)],
    ``captions``, ``labels`` long [N * len(steps), L] (the final video's objects, the same
    for every step of one sample) and ``videos``, the final videos, uint8 [N, F, H, W, 3]."""
    if len(captions) != len(seeds):
        raise ValueError(f"need one seed per caption, got {len(captions)} captions and {len(seeds)} seeds")
    n_steps = toy_model.TOY_CALL["num_inference_steps"]
    bad = [s for s in steps if not 1 <= s < n_steps]
    if bad:
        raise ValueError(f"steps {bad} are outside 1..{n_steps - 1}: a kept state is the latents "
                         "after a step of the sampler (step 0's input is the plain noise)")
    keep = sorted(set(int(s) for s in steps))
    lat, ts, caps, labs, videos = [], [], [], [], []
    for i in range(0, len(captions), batch):
        texts = list(captions[i : i + batch])
        seen: dict[int, torch.Tensor] = {}

        def grab(p, step, t, kwargs):
            if step + 1 in keep:  # the latents after step i enter step i + 1
                seen[step + 1] = kwargs["latents"].detach().to(torch.float16).cpu()
            return {}

        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + batch]]
        res = pipe(prompt=texts, generator=gens, callback_on_step_end=grab, **toy_model.TOY_CALL)
        frames = toy_model.toy_frames(res)
        frames = frames if frames.ndim == 5 else frames[None]
        labels = torch.stack([frame_patch_labels(fr) for fr in frames])
        videos.append(torch.from_numpy(frames))
        timesteps = pipe.scheduler.timesteps
        for s in keep:
            lat.append(seen[s])
            ts.append(torch.full((len(texts),), float(timesteps[s])))
            caps.extend(texts)
            labs.append(labels)
    return {"latents": torch.cat(lat), "timesteps": torch.cat(ts), "captions": caps,
            "labels": torch.cat(labs), "videos": torch.cat(videos)}


def training_captions(n: int, seed: int, counts_in: str = "v2") -> list[str]:
    """``n`` captions of training combinations (never a held-out one) of the count range
    ``counts_in`` (``world.COUNT_RANGES``), drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0x57A7E])
    return [world.make_clip(int(s), split="train", counts_in=counts_in).caption
            for s in rng.integers(0, 2**62, size=n)]


def load_states(path: str | Path) -> dict:
    """A states file written by :func:`main` (see the module docstring)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"latents", "timesteps", "captions", "labels"} - set(data)
    if missing:
        raise ValueError(f"{path} is not a states file: it lacks {sorted(missing)}; make one with "
                         "python -m numina_hooks.toy.own_states --out PATH")
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m numina_hooks.toy.own_states", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the states file to write (.pt)")
    p.add_argument("--n", type=int, default=256, help="samples (each gives one state per step)")
    p.add_argument("--seed", type=int, default=0, help="draws the captions and the samples' noise")
    p.add_argument("--steps", default="5,6,7,8,9,10,11", help="sampler steps whose input latents are kept")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    # the folder made before sampling (minutes), not found missing when the states are saved
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pipe = toy_model.load_toy_pipeline(a.weights)
    counts_in = toy_model.weights_count_range(a.weights)  # the range the model was trained on
    captions = training_captions(a.n, a.seed, counts_in)
    seeds = [int(s) for s in np.random.default_rng([a.seed, 0x5EED]).integers(0, 2**31, size=a.n)]
    steps = [int(s) for s in a.steps.split(",") if s.strip()]
    data = record_states(pipe, captions, seeds, steps)
    data["args"] = json.dumps({"n": a.n, "seed": a.seed, "steps": steps,
                               "weights": a.weights or "shipped", "counts_in": counts_in})
    torch.save(data, a.out)
    print(f"wrote {len(data['captions'])} states from {a.n} samples to {a.out}")


if __name__ == "__main__":
    main()
