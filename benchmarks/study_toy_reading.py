"""Where does phase 1 lose the toy model's layout? Three measurements on held-out pairs.

    python benchmarks/study_toy_reading.py [--n 16] [--weights DIR]

For each held-out prompt-seed pair the plain generation runs once, and the final video's
objects are found exactly (``toy.counter``). Against them:

1. **Is the count decided at t*?** At every step, the model's own denoised estimate
   ``x0 = x_t - sigma * v`` (classifier-free guided ``v``, clamped to [-1, 1]) is counted with
   the exact counter, as if it were the video: the share of (frame, noun) cells whose count
   equals the final video's count.
2. **Which text columns localise the noun?** At the reading step, the head-mean
   cross-attention map of the noun's tokens, of its counted phrase (count word, modifiers,
   noun), of the modifiers alone and of ``</s>``: AUC of "object patches score higher than
   the rest", per block.
3. **Do the self-attention heads separate the objects?** Every head of every block is
   partitioned as phase 1 does (``partition_heads``, default settings): the share of true
   objects that one region of the head matches (IoU >= 0.5), per head, and the share that
   the best head of each cell matches (an upper bound for any head choice).

Nothing here tunes NUMINA; it measures the toy model's attention.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402
from toy_identify_study import patch_labels, toy_study_setup  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import hookimpl  # noqa: E402
from numina_hooks.numina.config import NuminaConfig  # noqa: E402
from numina_hooks.numina.partition import partition_from_qk  # noqa: E402
from numina_hooks.numina.tokens import noun_token_columns, phrase_token_columns  # noqa: E402
from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy.counter import count_objects, label_objects  # noqa: E402
from numina_hooks.toy.evaluate import auc  # noqa: E402
from numina_hooks.toy.world import category_of_noun, held_out_prompts  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class ReadingRecorder:
    """At ``step``, on the cond row: every block's per-frame partitions and every text
    column's head-mean cross-attention map."""

    def __init__(self, step: int, config: NuminaConfig):
        self.step, self.config = step, config
        self.parts: dict[int, list] = {}  # block -> per frame HeadPartitions
        self.cross: dict[int, torch.Tensor] = {}  # block -> [text tokens, F, H, W]

    @hookimpl
    def on_attention(self, view):
        rows = view.rows_of("cond")
        if view.step != self.step or not rows:
            return None
        geo, cfg = view.geometry, self.config
        if view.kind == "self":
            out = []
            for f in range(geo.frames):
                q, k = view.self_attention_qk(f, batch=[rows[0]])
                parts, _ = partition_from_qk(q[0], k[0], view.scale, (geo.height, geo.width), band=cfg.edge_band,
                                             min_region=cfg.min_region,
                                             max_region_fraction=cfg.max_region_fraction,
                                             reference_quantile=cfg.edge_reference_quantile, sink_mass=cfg.sink_mass,
                                             exclude_own_key=cfg.own_key == "excluded")
                out.append(parts)
            self.parts[view.layer] = out
        elif view.kind == "cross":
            maps = view.cross_attention_maps([[c] for c in range(geo.text_tokens)], batch=[rows[0]])
            self.cross[view.layer] = torch.stack([m[0].float().mean(0) for m in maps])
        return None


class DenoisedRecorder:
    """The transformer's input latents, timestep and output of every call (forward hook)."""

    def __init__(self):
        self.calls = []

    def __call__(self, module, args, kwargs, out):
        self.calls.append((kwargs["hidden_states"].detach().clone(), float(kwargs["timestep"].flatten()[0]),
                           out[0].detach().clone()))


def _matched(regions: np.ndarray, truth: np.ndarray) -> int:
    """True objects of ``truth`` (int [H, W]) that one region of ``regions`` matches (IoU >= 0.5)."""
    n = 0
    for o in range(1, int(truth.max()) + 1):
        ob = truth == o
        for j in np.unique(regions[ob]):
            if j > 0:
                r = regions == j
                if (r & ob).sum() / (r | ob).sum() >= 0.5:
                    n += 1
                    break
    return n


def main(argv=None) -> dict:
    a, pipe = toy_study_setup(argv, __doc__, default_n=16)
    call = dict(toy_model.TOY_CALL, output_type="latent")
    n_steps, cfg_scale = call["num_inference_steps"], call["guidance_scale"]
    config = NuminaConfig()
    read_step = config.resolve_step(n_steps)
    commit_same = np.zeros(n_steps)
    commit_cells = 0
    token_auc = collections.defaultdict(list)
    head_matched = collections.Counter()
    best_matched = 0
    objects = 0
    denoised = DenoisedRecorder()
    hook = pipe.transformer.register_forward_hook(denoised, with_kwargs=True)
    try:
        with numina_hooks.attach(pipe) as handle, torch.no_grad():
            tok = handle.driver.tokenizer()
            for i, prompt in enumerate(held_out_prompts(a.n, seed=0, counts_in=toy_model.weights_count_range(a.weights))):
                nouns = numina_hooks.parse_counts(prompt.text)
                ncols = noun_token_columns(tok, prompt.text, nouns, max_length=call["max_sequence_length"])
                pcols = phrase_token_columns(tok, prompt.text, nouns, max_length=call["max_sequence_length"])
                eos = len(tok(prompt.text)["input_ids"]) - 1
                denoised.calls.clear()
                rec = handle.register(ReadingRecorder(read_step, config))
                try:
                    video = toy_model.toy_frames(handle.run_pipeline(
                        prompt=prompt.text, generator=torch.Generator().manual_seed(i), **call))
                finally:
                    handle.unregister(rec)
                final = count_objects(video)
                truth = [label_objects(frame) for frame in video]
                cats = {noun: category_of_noun(noun) for noun in nouns}
                # 1. the count of the denoised estimate at every step (cond, then uncond, per step)
                for s in range(n_steps):
                    (x, t, v_c), (_, _, v_u) = denoised.calls[2 * s], denoised.calls[2 * s + 1]
                    x0 = (x - t / 1000.0 * (v_u + cfg_scale * (v_c - v_u))).clamp(-1, 1)
                    est = count_objects(toy_model.toy_frames(x0))
                    for f in range(len(final)):
                        for cat in cats.values():
                            commit_same[s] += est[f].get(cat, 0) == final[f].get(cat, 0)
                            commit_cells += s == 0
                for noun, cat in cats.items():
                    others = [c for c in pcols[noun] if c not in ncols[noun]]
                    for f in range(len(final)):
                        t_lab = patch_labels(truth[f][cat])
                        fg = torch.from_numpy(t_lab > 0).reshape(-1)
                        # 2. which columns localise
                        if fg.any() and not fg.all():
                            for layer, per in rec.cross.items():
                                variants = {"noun": per[ncols[noun]].sum(0), "phrase": per[pcols[noun]].sum(0),
                                            "modifiers": per[others].sum(0) if others else None, "</s>": per[eos]}
                                for kind, m in variants.items():
                                    if m is not None:
                                        m = m[f].reshape(-1)
                                        token_auc[(kind, layer)].append(auc(m[fg], m[~fg]))
                        # 3. which heads separate the objects
                        objects += int(t_lab.max())
                        per_head = []
                        for layer in sorted(rec.parts):
                            regions = rec.parts[layer][f].regions
                            for h in range(regions.shape[0]):
                                m = _matched(regions[h], t_lab)
                                head_matched[(layer, h)] += m
                                per_head.append(m)
                        best_matched += max(per_head, default=0)
    finally:
        hook.remove()
    layers = sorted({k[1] for k in token_auc})
    kinds = ["noun", "phrase", "modifiers", "</s>"]
    result = {
        "pairs": a.n, "reading_step": read_step, "steps": n_steps,
        "count_decided": [float(c / commit_cells) for c in commit_same],
        "token_auc": {kind: {str(ly): float(np.nanmean(token_auc[(kind, ly)])) for ly in layers} for kind in kinds},
        "objects": objects,
        "head_matched": {f"{ly}/{h}": head_matched[(ly, h)] / max(objects, 1) for ly, h in sorted(head_matched)},
        "best_head_per_cell_matched": best_matched / max(objects, 1),
    }
    weights_dir = Path(a.weights) if a.weights else toy_model.WEIGHTS_DIR
    result["weights"] = json.loads((weights_dir / "info.json").read_text()).get("steps")
    heads = sorted({int(k.split("/")[1]) for k in result["head_matched"]})
    md = ["# Where phase 1 loses the toy model's layout", "",
          f"{a.n} held-out prompt-seed pairs ({commit_cells} (frame, noun) cells, {objects} objects), toy weights at "
          f"step {result['weights']}, reading step {read_step} of {n_steps}; machine: {machine_line(describe())}.", "",
          "**1. The count of the model's denoised estimate equals the final video's count** (share of cells):", "",
          "| step | " + " | ".join(str(s) for s in range(n_steps)) + " |", "|---" * (n_steps + 1) + "|",
          "| same count | " + " | ".join(f"{c:.2f}" for c in result["count_decided"]) + " |", "",
          f"**2. AUC of the head-mean cross-attention map at step {read_step}** (objects of the noun vs the rest):", "",
          "| columns | " + " | ".join(f"block {ly}" for ly in layers) + " |", "|---" * (len(layers) + 1) + "|"]
    for kind in kinds:
        md.append(f"| {kind} | " + " | ".join(f"{result['token_auc'][kind][str(ly)]:.2f}" for ly in layers) + " |")
    md += ["", f"**3. Share of the true objects one region of the head matches (IoU >= 0.5)** at step {read_step}:", "",
           "| block | " + " | ".join(f"head {h}" for h in heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for ly in layers:
        md.append(f"| {ly} | " + " | ".join(f"{result['head_matched'].get(f'{ly}/{h}', float('nan')):.2f}"
                                            for h in heads) + " |")
    md += ["", f"The best head of each cell, chosen in hindsight: {result['best_head_per_cell_matched']:.2f} of the objects."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toy_reading.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "toy_reading.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
