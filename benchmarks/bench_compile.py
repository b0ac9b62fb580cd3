"""torch.compile with numina-hooks attached: graphs, graph breaks and compiled speed.

1. Graphs and graph breaks (``torch._dynamo.explain``) of small Wan and CogVideoX
   transformers (2 blocks): plain, attached with no plugin (idle), attached with an
   attention observer. And over a whole NUMINA generation (both phases, mismatch forced so phase
   2 runs guided) on a tiny Wan pipeline whose transformer was compiled: dynamo's
   counters of graphs compiled and graph-break events, the guided steps, and the largest
   difference from the same NUMINA run uncompiled.
2. Wall clock of transformer forwards of a compiled tiny-but-proportionate Wan
   transformer (6 blocks of 4 heads x 32): plain-compiled vs attached-idle-compiled, two
   copies of the same weights, each compiled once (compile time recorded apart). Each
   round runs both, in an order rotated by one each round; the ratio is the median of the
   rounds' ratios.

Aim (exit 1 when missed): attached-idle compiles to the plain graph (same graph and
break counts as plain, for both families). The time ratio is recorded, not judged.

    python benchmarks/bench_compile.py [--quick] [--backend inductor]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import hookimpl, testing  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "three cats chasing two dogs in a park"


class Observer:
    def __init__(self):
        self.views = 0

    @hookimpl
    def on_attention(self, view):
        self.views += 1


def _wan(layers: int, heads: int, head_dim: int, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=4 * heads * head_dim, num_layers=layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def _inputs(frames: int, size: int, text: int = 24):
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 16, frames, size, size, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, text, 32, generator=g), return_dict=False)


def _cogvideox():
    model = testing.tiny_cogvideox_pipeline().transformer
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 3, 4, 8, 8, generator=g), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)
    return model, inputs


def explain_counts() -> dict:
    rows = {}
    families = {"wan": (_wan(layers=2, heads=2, head_dim=12), _inputs(3, 8)), "cogvideox": _cogvideox()}
    for family, (model, inputs) in families.items():
        for case, plugins in (("plain", None), ("attached-idle", ()), ("attached-observer", (Observer(),))):
            torch._dynamo.reset()
            with torch.no_grad():
                if plugins is None:
                    ex = torch._dynamo.explain(model)(**inputs)
                else:
                    with numina_hooks.attach(model, *plugins):
                        ex = torch._dynamo.explain(model)(**inputs)
            reasons = sorted({str(b.reason).splitlines()[0][:160] for b in ex.break_reasons})
            name = case if family == "wan" else f"{family} {case}"
            rows[name] = {"graphs": ex.graph_count, "breaks": ex.graph_break_count, "break_reasons": reasons}
            print(f"  {name}: {ex.graph_count} graph(s), {ex.graph_break_count} break(s)", flush=True)
    return rows


def numina_counts(backend: str) -> dict:
    from torch._dynamo.utils import counters

    from numina_hooks.numina import generate as generate_mod

    call = dict(testing.WAN_CALL, num_inference_steps=5, output_type="latent")
    real_matches = generate_mod.LayoutReader.matches
    generate_mod.LayoutReader.matches = lambda self, counts: False  # force the mismatch: phase 2 runs guided
    try:
        pipe = testing.tiny_wan_pipeline()
        pipe.set_progress_bar_config(disable=True)

        def run():
            handle = numina_hooks.attach(pipe)
            try:
                return handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3},
                              generator=torch.Generator().manual_seed(0), **call)
            finally:
                handle.detach()

        eager = run()
        torch._dynamo.reset()
        counters.clear()
        pipe.transformer.compile(backend=backend)
        t = time.perf_counter()
        compiled = run()
        seconds = time.perf_counter() - t
    finally:
        generate_mod.LayoutReader.matches = real_matches
    rep = compiled.numina
    row = {
        "backend": backend,
        "graphs_compiled": int(counters["stats"]["unique_graphs"]),
        "graph_break_events": int(sum(counters["graph_break"].values())),
        "break_reasons": sorted({k.splitlines()[0][:160] for k in counters["graph_break"]}),
        "phase2_ran": bool(rep.phase2_ran),
        "guided_steps": list(rep.guided_steps),
        "guided_steps_uncompiled": list(eager.numina.guided_steps),
        "max_abs_diff_vs_uncompiled": float((compiled.frames - eager.frames).abs().max()),
        "seconds_first_compiled_run": seconds,
    }
    print(f"  numina ({backend}): {row['graphs_compiled']} graphs compiled, {row['graph_break_events']} break events, "
          f"guided steps {row['guided_steps']}, max |diff| vs uncompiled {row['max_abs_diff_vs_uncompiled']:.3g}",
          flush=True)
    return row


def timing(backend: str, rounds: int, calls: int) -> dict:
    size = dict(layers=6, heads=4, head_dim=32)
    inputs = _inputs(frames=4, size=12)
    plain_model, attached_model = _wan(**size), _wan(**size)
    handle = numina_hooks.attach(attached_model)
    torch._dynamo.reset()
    models = {"plain": torch.compile(plain_model, backend=backend),
              "attached-idle": torch.compile(attached_model, backend=backend)}
    from torch._dynamo.utils import counters

    compile_s, outputs, cache_hits = {}, {}, {}
    with torch.no_grad():
        for name, m in models.items():
            hits = counters["inductor"]["fxgraph_cache_hit"]
            t = time.perf_counter()
            outputs[name] = m(**inputs)[0]
            compile_s[name] = time.perf_counter() - t
            cache_hits[name] = int(counters["inductor"]["fxgraph_cache_hit"] - hits)
        for m in models.values():  # warm-up, untimed
            for _ in range(calls):
                m(**inputs)
        per_round = {name: [] for name in models}
        names = list(models)
        for r in range(rounds):
            order = names[r % 2:] + names[:r % 2]
            for name in order:
                t = time.perf_counter()
                for _ in range(calls):
                    models[name](**inputs)
                per_round[name].append((time.perf_counter() - t) / calls)
    handle.detach()
    ratios = [a / p for a, p in zip(per_round["attached-idle"], per_round["plain"])]
    row = {
        "backend": backend, "model": size, "latents": [1, 16, 4, 12, 12], "rounds": rounds, "calls_per_round": calls,
        "first_call_seconds": compile_s, "first_call_fx_graph_cache_hits": cache_hits,
        "median_forward_ms": {n: 1000 * statistics.median(v) for n, v in per_round.items()},
        "ratio_per_round": ratios, "ratio_median": statistics.median(ratios),
        "ratio_of_median_times": statistics.median(per_round["attached-idle"]) / statistics.median(per_round["plain"]),
        "outputs_equal": bool(torch.equal(outputs["plain"], outputs["attached-idle"])),
    }
    print(f"  time ({backend}): attached-idle / plain = {row['ratio_median']:.3f} "
          f"(plain {row['median_forward_ms']['plain']:.2f} ms per forward)", flush=True)
    return row


def write_report(result: dict) -> None:
    g, n, t = result["graphs"], result["numina"], result["timing"]
    lines = [
        "# torch.compile with numina-hooks attached",
        "",
        f"Machine: {machine_line(result['machine'])}. Written by `benchmarks/bench_compile.py`"
        f"{' --quick' if result['quick'] else ''}.",
        "",
        "Aim: attached-idle compiles to the plain graph (same graph and break counts). "
        f"**{'met' if result['aim_met'] else 'missed'}**.",
        "",
        "| case | graphs | graph breaks |",
        "|---|---|---|",
    ]
    for name, row in g.items():
        model = "CogVideoX transformer" if name.startswith("cogvideox") else "Wan transformer"
        lines.append(f"| {name} (`torch._dynamo.explain`, {model}, 2 blocks) | {row['graphs']} | {row['breaks']} |")
    lines.append(f"| NUMINA, whole generation (dynamo counters, backend `{n['backend']}`) | {n['graphs_compiled']} compiled "
                 f"| {n['graph_break_events']} break events |")
    lines += [
        "",
        f"Break reasons with an observer: {'; '.join(g['attached-observer']['break_reasons']) or 'none'}.",
        "",
        f"NUMINA under compile: phase 2 ran {n['phase2_ran']}, guided steps {n['guided_steps']} "
        f"(uncompiled: {n['guided_steps_uncompiled']}), largest |difference| from the uncompiled run "
        f"{n['max_abs_diff_vs_uncompiled']:.3g}.",
        "",
        f"Compiled forward time (backend `{t['backend']}`, 6 blocks of 4 heads x 32, latents {t['latents']}, "
        f"{t['rounds']} rounds of {t['calls_per_round']} calls, order rotated): plain "
        f"{t['median_forward_ms']['plain']:.2f} ms, attached-idle {t['median_forward_ms']['attached-idle']:.2f} ms, "
        f"median of the rounds' ratios {t['ratio_median']:.3f}, ratio of the median times "
        f"{t['ratio_of_median_times']:.3f} (per round: {', '.join(f'{r:.2f}' for r in t['ratio_per_round'])}); "
        f"first calls (compile) {t['first_call_seconds']['plain']:.1f} s and "
        f"{t['first_call_seconds']['attached-idle']:.1f} s (inductor FX graph cache hits in those calls: "
        f"{t['first_call_fx_graph_cache_hits']['plain']} and {t['first_call_fx_graph_cache_hits']['attached-idle']}; "
        "in a cache emptied at the start of the run: a hit means the graph was found compiled already); "
        "outputs equal: "
        f"{t['outputs_equal']}.",
        "",
    ]
    (RESULTS / "compile.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds (a smoke run)")
    parser.add_argument("--backend", default="inductor", help="backend of the timed compile (default inductor)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    # a fresh inductor cache: the plain model's compile fills it, so a cache hit on the attached
    # model's first call says its graph is the plain one
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_compile_inductor_")
    torch.set_num_threads(args.threads)
    torch._logging.set_logs(dynamo=logging.ERROR)
    print("graphs and breaks:", flush=True)
    graphs = explain_counts()
    numina = numina_counts("eager")
    rounds, calls = (3, 5) if args.quick else (21, 30)
    print("compiled forward time:", flush=True)
    timed = timing(args.backend, rounds, calls)
    plain, idle = graphs["plain"], graphs["attached-idle"]
    aim_met = all((graphs[f"{p}attached-idle"]["graphs"], graphs[f"{p}attached-idle"]["breaks"])
                  == (graphs[f"{p}plain"]["graphs"], graphs[f"{p}plain"]["breaks"]) for p in ("", "cogvideox "))
    result = {"machine": describe(), "quick": args.quick, "graphs": graphs, "numina": numina, "timing": timed,
              "aim": "attached-idle graphs and breaks == plain", "aim_met": aim_met}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compile.json").write_text(json.dumps(result, indent=2))
    write_report(result)
    print(("aim met" if aim_met else "AIM MISSED") + ": attached-idle "
          f"{idle['graphs']} graph(s) / {idle['breaks']} break(s), plain {plain['graphs']} / {plain['breaks']}")
    return 0 if aim_met else 1


if __name__ == "__main__":
    sys.exit(main())
