"""Do the toy model's cross-attention maps find the noun's objects? AUC by step, layer and head.

    python benchmarks/study_toy_cross_maps.py [--n 15] [--weights DIR]

For held-out prompt-seed pairs, the plain generation runs once with a plugin that keeps the
cond branch's cross-attention map of every noun (its token columns, per head) at several
steps and every layer. Each map is scored against the final video's objects of the noun's
category (exact counter, on the latent patch grid): the AUC of "object patches score higher
than the rest" (0.5 = no better than chance), per head and for the mean over heads (what
NUMINA's default ``cross_head="mean"`` reads).
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
from numina_hooks.numina.tokens import noun_token_columns  # noqa: E402
from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy.counter import label_objects  # noqa: E402
from numina_hooks.toy.evaluate import auc  # noqa: E402
from numina_hooks.toy.world import category_of_noun, held_out_prompts  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class CrossMapRecorder:
    """Keeps ``view.cross_attention_map(columns)`` of the cond row at the given steps."""

    def __init__(self, columns: dict, steps):
        self.columns, self.steps, self.maps = columns, set(steps), {}

    @hookimpl
    def on_attention(self, view):
        if view.kind != "cross" or view.step not in self.steps:
            return None
        rows = view.rows_of("cond")
        for noun, cols in self.columns.items() if rows else ():
            self.maps[(view.step, view.layer, noun)] = view.cross_attention_map(cols, batch=[rows[0]])[0].float()
        return None


def main(argv=None) -> dict:
    a, pipe = toy_study_setup(argv, __doc__, default_n=15)
    call = dict(toy_model.TOY_CALL)
    n_steps = call["num_inference_steps"]
    from numina_hooks.numina.config import NuminaConfig

    reading = NuminaConfig()
    read_step = reading.resolve_step(n_steps)
    read_layer = reading.resolve_layer(len(pipe.transformer.blocks))
    steps = sorted({int(f * n_steps) for f in (0.1, 0.2, 0.4, 0.6, 0.8)} | {read_step})
    scores = collections.defaultdict(list)
    with numina_hooks.attach(pipe) as handle, torch.no_grad():
        tokenizer = handle.driver.tokenizer()
        for i, prompt in enumerate(held_out_prompts(a.n, seed=0, counts_in=toy_model.weights_count_range(a.weights))):
            nouns = numina_hooks.parse_counts(prompt.text)
            columns = noun_token_columns(tokenizer, prompt.text, nouns, max_length=call["max_sequence_length"])
            rec = handle.register(CrossMapRecorder(columns, steps))
            try:
                video = toy_model.toy_frames(handle.run_pipeline(
                    prompt=prompt.text, generator=torch.Generator().manual_seed(i), **call))
            finally:
                handle.unregister(rec)
            truth = [label_objects(frame) for frame in video]
            for (step, layer, noun), maps in rec.maps.items():
                cat = category_of_noun(noun)
                for f in range(maps.shape[1]) if cat else ():
                    fg = torch.from_numpy(patch_labels(truth[f][cat]) > 0)
                    if not fg.any():
                        continue
                    for head in range(maps.shape[0]):
                        m = maps[head, f]
                        scores[(step, layer, str(head))].append(auc(m[fg], m[~fg]))
                    m = maps[:, f].mean(0)
                    scores[(step, layer, "mean")].append(auc(m[fg], m[~fg]))
    layers = sorted({k[1] for k in scores})
    heads = sorted({k[2] for k in scores if k[2] != "mean"}, key=int) + ["mean"]
    table = {f"{s}/{ly}/{h}": float(np.nanmean(scores[(s, ly, h)])) for s in steps for ly in layers for h in heads}
    md = ["AUC of the noun's cross-attention map against its objects (heads " + ", ".join(heads) + "):", "",
          "| step | " + " | ".join(f"layer {ly}" for ly in layers) + " |", "|---" * (len(layers) + 1) + "|"]
    for s in steps:
        md.append(f"| {s} of {n_steps} | " + " | ".join(
            " / ".join(f"{table[f'{s}/{ly}/{h}']:.2f}" for h in heads) for ly in layers) + " |")
    weights_dir = Path(a.weights) if a.weights else toy_model.WEIGHTS_DIR
    weights = json.loads((weights_dir / "info.json").read_text()).get("steps")
    at_reading = table[f"{read_step}/{read_layer}/mean"]
    md += ["", f"At NUMINA's reading step {read_step} and layer {read_layer} (default config), the head-mean "
               f"map scores AUC {at_reading:.3f}.",
           "", f"{a.n} held-out prompt-seed pairs, toy weights at step {weights}; machine: {machine_line(describe())}."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "toy_cross_maps.json").write_text(json.dumps(
        {"pairs": a.n, "weights": weights, "reading": [read_step, read_layer], "auc_at_reading": at_reading,
         "auc": table}, indent=1))
    (RESULTS / "toy_cross_maps.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return table


if __name__ == "__main__":
    main()
