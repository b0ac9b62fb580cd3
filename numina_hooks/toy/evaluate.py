"""Count how well the plain toy model (no NUMINA) follows requested counts.

    python -m numina_hooks.toy.evaluate --n 20 --seed 0 [--weights DIR] [--json PATH] [--probe 20]
        [--combinations training]

Each prompt-seed pair is generated with ``model.TOY_CALL`` (20 Euler steps, guidance 4),
its frames are counted with the exact counter, and CountAcc / TC are computed as the
paper defines them (``numina_hooks.metrics``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..metrics import summarize, video_scores
from . import model as toy_model
from .instance_head import attn1_inputs, self_queries_keys
from .counter import count_objects
from .world import COUNT_RANGES, Prompt, held_out_prompts, training_prompts


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


def _self_attention_maps(pipe, latents: torch.Tensor, sigma: float, caption: str) -> list:
    """Per layer, the self-attention probabilities [heads, L, L] (L = F * h * w patches)
    of the conditional branch for one noised clip, read from the layer inputs with forward
    pre-hooks (the processors are left untouched)."""
    tr = pipe.transformer
    with attn1_inputs(tr, range(len(tr.blocks))) as captured, torch.no_grad():
        text = toy_model.encode_text(pipe, [caption])
        tr(hidden_states=latents, timestep=torch.tensor([sigma * 1000.0]),
           encoder_hidden_states=text, return_dict=False)

    maps = []
    with torch.no_grad():
        for attn, hs, rotary in (captured[b] for b in range(len(tr.blocks))):
            q, k = self_queries_keys(attn, hs, rotary)
            q, k = q[0].transpose(0, 1), k[0].transpose(0, 1)  # [heads, L, d]
            maps.append(torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1))
    return maps


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``successes / n`` (``(nan, nan)`` for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return centre - half, centre + half


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = torch.cat([pos, neg])
    ranks = allv.argsort().argsort().double() + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def instance_separation(pipe, seeds: Sequence[int], sigma: float = 0.6, near: int = 2) -> dict:
    """How well each self-attention head separates true instances, on noised world clips.

    For each clip (``world.make_clip(seed)``, noised to ``sigma``; sigma 0.6 is about 40%
    of the way through 20 sampling steps) and each layer and head, the frame-local
    self-attention between *object* patches (a patch belongs to an object when 3 of its
    4 pixels do) is scored by A[i, j] + A[j, i]. A head separates instances when pairs in
    the same object score higher than pairs in different objects: the AUC of that test is
    reported over all pairs (``auc``) and over pairs at most ``near`` patches apart
    (``auc_near``), where position alone helps least. Returns
    ``{"layers": [[{"auc", "auc_near"} per head] per layer]}``.
    """
    from .world import make_clip

    pos_all: dict = {}
    neg_all: dict = {}
    pos_near: dict = {}
    neg_near: dict = {}
    for seed in seeds:
        clip = make_clip(int(seed), split="any")
        x0 = toy_model.frames_to_latents(clip.frames)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed)))
        maps = _self_attention_maps(pipe, (1 - sigma) * x0 + sigma * noise, sigma, clip.caption)
        f, hgt, wid = clip.instances.shape
        ph, pw = hgt // 2, wid // 2
        inst = torch.as_tensor(clip.instances.astype("int64")).reshape(f, ph, 2, pw, 2)
        inst = inst.permute(0, 1, 3, 2, 4).reshape(f, ph * pw, 4)
        for fr in range(f):
            lab = torch.full((ph * pw,), -1, dtype=torch.long)
            for p in range(ph * pw):
                vals, counts = inst[fr, p].unique(return_counts=True)
                best = int(counts.argmax())
                if counts[best] >= 3 and vals[best] > 0:
                    lab[p] = vals[best]
            idx = torch.nonzero(lab > 0).squeeze(1)
            if len(idx) < 2:
                continue
            rows, cols = idx // pw, idx % pw
            ii, jj = torch.triu_indices(len(idx), len(idx), 1)
            same = lab[idx][ii] == lab[idx][jj]
            dist = torch.maximum((rows[ii] - rows[jj]).abs(), (cols[ii] - cols[jj]).abs())
            close = dist <= near
            base = fr * ph * pw
            gi, gj = base + idx[ii], base + idx[jj]
            for li, m in enumerate(maps):
                for h in range(m.shape[0]):
                    s = m[h, gi, gj] + m[h, gj, gi]
                    key = (li, h)
                    pos_all.setdefault(key, []).append(s[same])
                    neg_all.setdefault(key, []).append(s[~same])
                    pos_near.setdefault(key, []).append(s[same & close])
                    neg_near.setdefault(key, []).append(s[~same & close])
    layers = []
    for li in range(len(pipe.transformer.blocks)):
        heads = []
        for h in range(pipe.transformer.config.num_attention_heads):
            key = (li, h)
            heads.append({
                "auc": auc(torch.cat(pos_all[key]), torch.cat(neg_all[key])),
                "auc_near": auc(torch.cat(pos_near[key]), torch.cat(neg_near[key])),
            })
        layers.append(heads)
    return {"sigma": sigma, "clips": len(seeds), "layers": layers}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m numina_hooks.toy.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights folder (default: shipped)")
    ap.add_argument("--n", type=int, default=20, help="prompt-seed pairs")
    ap.add_argument("--seed", type=int, default=0, help="selects prompts and noise seeds")
    ap.add_argument("--combinations", default="held-out", choices=("held-out", "training"),
                    help="count combinations of the prompts: held out from training (the default) "
                         "or among those trained on (world.training_prompts)")
    ap.add_argument("--count-range", default=None, choices=sorted(COUNT_RANGES),
                    help="count range the prompts are drawn from (toy.world.COUNT_RANGES; default: "
                         "the one the weights were trained on, from their info.json)")
    ap.add_argument("--steps", type=int, default=toy_model.TOY_CALL["num_inference_steps"])
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--probe", type=int, default=0, metavar="CLIPS",
                    help="also measure self-attention instance separation on this many clips")
    a = ap.parse_args(argv)
    pipe = toy_model.load_toy_pipeline(a.weights)
    draw = held_out_prompts if a.combinations == "held-out" else training_prompts
    counts_in = a.count_range or toy_model.weights_count_range(a.weights)
    prompts = draw(a.n, seed=a.seed, counts_in=counts_in)
    seeds = [1000 * a.seed + i for i in range(a.n)]
    res = evaluate_plain(pipe, prompts, seeds, num_inference_steps=a.steps)
    res["combinations"] = a.combinations
    res["count_range"] = counts_in
    print(f"{res['videos']} {a.combinations} prompt-seed pairs (count range {counts_in}): CountAcc {res['count_acc']:.3f}  "
          f"TC {res['tc']:.3f}")
    for k, v in res["by_requested"].items():
        lo, hi = wilson(v["acc"] * v["frames"], v["frames"])
        v["interval95"] = [lo, hi]
        print(f"  requested {k}: {v['acc']:.3f} of {v['frames']} frame-classes right (95% {lo:.3f}..{hi:.3f})")
    if a.probe:
        sep = instance_separation(pipe, range(a.probe))
        res["instance_separation"] = sep
        print(f"self-attention instance separation at sigma {sep['sigma']} "
              f"(AUC all pairs / pairs <= 2 patches apart), rows = layers, columns = heads:")
        for li, heads in enumerate(sep["layers"]):
            print(f"  layer {li}: " + "  ".join(f"{h['auc']:.2f}/{h['auc_near']:.2f}" for h in heads))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)



if __name__ == "__main__":
    main()
