"""End to end on the toy model: plain vs NUMINA vs NUMINA on the true layout vs seed search.

    python benchmarks/eval_toy_end_to_end.py --n 120 [--seed 0] [--weights DIR] [--search 3]
        [--config JSON] [--shard 0/2] [--out benchmarks/results/toy_end_to_end]
    python benchmarks/eval_toy_end_to_end.py --n 120 --summarize      # merge shards, print the table

For held-out prompt ``i`` (``toy.world.held_out_prompts(n, seed)``, count combinations never
seen in training) and noise seed ``1000 * seed + i``, from the same noise:

* ``plain``: the pipeline alone;
* ``numina``: NUMINA's two-phase generation with the given (default) ``NuminaConfig``;
* ``numina-oracle-layout``: phase 2 guided by a *true* layout (a toy-world clip drawn with
  exactly the asked counts, on the patch grid) instead of the refined one: identify is taken
  out of the loop, what remains is how well guidance draws a given layout;
* ``seed-search``: the plain pipeline with ``--search`` seeds (the first is the plain one),
  keeping the video the exact counter scores best (the paper's best-of-N, judged by the
  counter that scores it: an upper bound of what picking costs and buys).

Every video is counted exactly (``toy.counter``), scored with the paper's CountAcc and TC,
and each strategy is compared with plain on the same pairs with a paired bootstrap 95%
interval. Rows are appended to ``OUT/rows-<shard>.jsonl`` as they finish, so a rerun resumes;
``--shard k/m`` runs every m-th pair (one process per core).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402
from study_toy_guidance import format_gain, oracle_refiner  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks.eval.benchmark import toy_noun_as_written  # noqa: E402
from numina_hooks.eval.stats import paired_bootstrap  # noqa: E402
from numina_hooks.metrics import video_scores  # noqa: E402
from numina_hooks.numina import generate as generate_mod  # noqa: E402
from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy.counter import count_objects  # noqa: E402
from numina_hooks.toy.world import held_out_prompts  # noqa: E402

STRATEGIES = ("plain", "numina", "numina-oracle-layout", "seed-search")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "toy_end_to_end"


def _scores(out, target: dict) -> dict:
    found = count_objects(toy_model.toy_frames(out))
    return {**video_scores(found, target), "found": [{k: f[k] for k in target} for f in found]}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def run_pair(handle, call: dict, prompt, noise_seed: int, search: int, strategies=STRATEGIES) -> dict:
    """The ``strategies`` (default all four; plain always runs) for one prompt-seed pair
    (see the module docstring).

    NUMINA is given the asked counts keyed by the nouns as the caption writes them, as
    ``numina eval`` passes a benchmark's annotations (the prompt parser's reading of toy
    captions is checked separately, in tests/test_counts.py).
    """
    target = dict(prompt.counts)
    row = {"prompt": prompt.text, "asked": target, "seed": noise_seed}
    t0 = time.perf_counter()
    candidates = [_scores(handle.run_pipeline(prompt=prompt.text, generator=_generator(noise_seed), **call), target)]
    row["plain"] = candidates[0]
    row["plain"]["seconds"] = time.perf_counter() - t0

    nouns = {toy_noun_as_written(prompt.text, cat): n for cat, n in target.items()}
    if "numina" in strategies:
        _numina(row, handle, call, prompt, target, nouns, _generator(noise_seed))
    if "numina-oracle-layout" in strategies:
        _oracle(row, handle, call, prompt, target, nouns, noise_seed)
    if "seed-search" in strategies:
        _search(row, handle, call, prompt, target, candidates, noise_seed, search)
    return row


def _numina(row, handle, call, prompt, target, nouns, generator) -> None:
    t0 = time.perf_counter()
    out = handle(prompt=prompt.text, counts=nouns, generator=generator, **call)
    row["numina"] = _scores(out, target)
    row["numina"].update(seconds=time.perf_counter() - t0, phase2_ran=bool(out.numina.phase2_ran))


def _oracle(row, handle, call, prompt, target, nouns, noise_seed) -> None:
    refine, order = oracle_refiner(target, 10_000 + noise_seed)
    order.extend(nouns)  # run_numina refines the nouns in the order of ``counts``
    t0 = time.perf_counter()
    with mock.patch.object(generate_mod, "refine_layouts", refine), \
            mock.patch.object(generate_mod.LayoutReader, "matches", lambda self, c: False):
        row["numina-oracle-layout"] = _scores(handle(prompt=prompt.text, counts=nouns,
                                                     generator=_generator(noise_seed), **call), target)
    row["numina-oracle-layout"]["seconds"] = time.perf_counter() - t0


def _search(row, handle, call, prompt, target, candidates, noise_seed, search) -> None:
    t0 = time.perf_counter()
    for k in range(1, search):
        s = noise_seed + 100_000 * k
        candidates.append(_scores(handle.run_pipeline(prompt=prompt.text, generator=_generator(s), **call), target))
    best = max(range(len(candidates)), key=lambda j: (candidates[j]["count_acc"], -j))
    row["seed-search"] = {**candidates[best], "chosen": best, "candidates": len(candidates),
                          "seconds": row["plain"]["seconds"] + time.perf_counter() - t0}


def load_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("rows-*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


def summarize(rows: list[dict], settings: dict) -> tuple[dict, str]:
    """Per strategy: CountAcc, TC, seconds; paired bootstrap deltas vs plain; by asked count."""
    rows = sorted(rows, key=lambda r: r["index"])
    summary = {"pairs": len(rows), "settings": settings, "strategies": {}}
    plain = {m: [r["plain"][m] for r in rows] for m in ("count_acc", "tc")}
    for s in [s for s in STRATEGIES if all(s in r for r in rows)]:
        entry = {m: float(np.mean([r[s][m] for r in rows])) for m in ("count_acc", "tc")}
        entry["seconds"] = float(np.mean([r[s]["seconds"] for r in rows]))
        if s != "plain":
            for m in ("count_acc", "tc"):
                entry[f"{m}_vs_plain"] = paired_bootstrap(plain[m], [r[s][m] for r in rows])
        by = {}
        for r in rows:
            for noun_cat, asked in r["asked"].items():
                cells = [f[noun_cat] == asked for f in r[s]["found"]]
                by.setdefault(asked, []).extend(cells)
        entry["by_asked"] = {str(k): {"acc": float(np.mean(v)), "cells": len(v)} for k, v in sorted(by.items())}
        summary["strategies"][s] = entry
    ran = [r["numina"]["phase2_ran"] for r in rows if "numina" in r]
    summary["numina_phase2_ran"] = float(np.mean(ran)) if ran else None

    def pct(v):
        return f"{100 * v:.1f}"

    md = ["| strategy | CountAcc (%) | vs plain (95% CI) | TC (%) | vs plain (95% CI) | s / video |",
          "|---|---|---|---|---|---|"]
    for s, e in summary["strategies"].items():
        md.append(f"| {s} | {pct(e['count_acc'])} | {format_gain(e['count_acc_vs_plain']) if s != 'plain' else '-'} | "
                  f"{pct(e['tc'])} | {format_gain(e['tc_vs_plain']) if s != 'plain' else '-'} | {e['seconds']:.2f} |")
    counts = sorted({k for e in summary["strategies"].values() for k in e["by_asked"]}, key=int)
    md += ["", "Cells (frame x noun) counted right, by asked count:", "",
           "| strategy | " + " | ".join(f"asked {k}" for k in counts) + " |", "|---" * (len(counts) + 1) + "|"]
    for s, e in summary["strategies"].items():
        md.append(f"| {s} | " + " | ".join(
            f"{pct(e['by_asked'][k]['acc'])} ({e['by_asked'][k]['cells']})" if k in e["by_asked"] else "-"
            for k in counts) + " |")
    ran_line = ("" if summary["numina_phase2_ran"] is None
                else f"NUMINA ran phase 2 in {pct(summary['numina_phase2_ran'])}% of them; ")
    md += ["", f"{len(rows)} held-out prompt-seed pairs; {ran_line}seed search over {settings.get('search')} seeds; "
               f"toy weights step {settings.get('weights_step')}; config {settings.get('config') or 'default'}; "
               f"machine: {settings.get('machine_line')}."]
    return summary, "\n".join(md) + "\n"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_same_run(out: Path, identity: dict) -> None:
    """Rows on disk are resumed only when they come from the same weights, config, seed and
    search width (``OUT/run.json``); anything else would mix two runs in one table."""
    path = out / "run.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != json.loads(json.dumps(identity)):
            changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
            raise SystemExit(f"{out} holds rows of another run (different {', '.join(changed)}): "
                             f"pass a new --out, or delete {out} to start over")
    elif load_rows(out):
        raise SystemExit(f"{out} holds rows but no run.json saying which weights and config made "
                         f"them: pass a new --out, or delete {out} to start over")
    else:
        path.write_text(json.dumps(identity, indent=1, sort_keys=True) + "\n")


def check_summary_run(out: Path, identity: dict, weights_dir: Path) -> None:
    """``--summarize`` labels the table with its own ``--weights``, ``--seed``, ``--search``
    and ``--config``: refuse when the rows on disk were made with others (``identity``, the
    run's as ``check_same_run`` compares it, against ``OUT/run.json``; a key the file lacks is
    not compared), so that a table never names weights, pairs or a config its rows did not
    come from."""
    path = out / "run.json"
    if not path.exists():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(identity))  # as run.json stores it (tuples as lists)
    hints = {"weights_sha256": f"weights (pass the --weights the rows were made with, not {weights_dir})",
             "seed": f"--seed {before.get('seed')} (not {now['seed']})",
             "search": f"--search {before.get('search')} (not {now['search']})",
             "config": "config (pass the --config the rows were made with)"}
    wrong = [hint for key, hint in hints.items() if key in before and before[key] != now[key]]
    if wrong:
        raise SystemExit(f"{out} holds rows made with other settings: {'; '.join(wrong)}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="held-out prompt-seed pairs")
    ap.add_argument("--seed", type=int, default=0, help="selects the prompts and the noise seeds")
    ap.add_argument("--weights", default=None, help="toy weights folder (default: the shipped weights)")
    ap.add_argument("--search", type=int, default=3, help="seeds tried by seed-search")
    ap.add_argument("--config", default=None, help="NuminaConfig fields as JSON (default: the defaults)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help="comma-separated strategies to run (plain always runs); default all four")
    ap.add_argument("--shard", default="0/1", help="k/m: run pairs i with i %% m == k")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--summarize", action="store_true", help="only merge the rows on disk and print the table")
    a = ap.parse_args(argv)
    k, m = (int(v) for v in a.shard.split("/"))
    strategies = tuple(x.strip() for x in a.strategies.split(",") if x.strip())
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        ap.error(f"--strategies {a.strategies}: unknown {', '.join(unknown)}; expected some of {', '.join(STRATEGIES)}")
    if a.n < 1 or a.search < 1 or not 0 <= k < m:
        ap.error(f"need --n >= 1, --search >= 1 and a shard k/m with 0 <= k < m; got {a.n}, {a.search}, {a.shard}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_dir = Path(a.weights) if a.weights else toy_model.WEIGHTS_DIR
    info = json.loads((weights_dir / "info.json").read_text())
    torch.set_num_threads(1)  # the runs use one thread; the summary's machine line says so
    settings = {"n": a.n, "seed": a.seed, "search": a.search, "config": a.config,
                "weights": str(a.weights or "shipped"), "weights_step": info.get("steps"),
                "machine": describe(), "machine_line": machine_line(describe())}
    from dataclasses import asdict

    from numina_hooks.numina.config import NuminaConfig

    config = NuminaConfig(**json.loads(a.config)) if a.config else NuminaConfig()
    identity = {"seed": a.seed, "search": a.search, "config": asdict(config),
                "weights_sha256": _sha256(weights_dir / "model.safetensors")}
    if a.summarize:
        check_summary_run(out, identity, weights_dir)
    else:
        if set(strategies) != set(STRATEGIES):  # runs of all four (older run.json files) stay resumable
            identity["strategies"] = sorted(set(strategies) | {"plain"})
        check_same_run(out, identity)
        pipe = toy_model.load_toy_pipeline(a.weights)
        pipe.set_progress_bar_config(disable=True)
        call = dict(toy_model.TOY_CALL)
        done = {r["index"] for r in load_rows(out)}
        prompts = held_out_prompts(a.n, seed=a.seed, counts_in=toy_model.weights_count_range(a.weights))
        with numina_hooks.attach(pipe, config=config) as handle, torch.no_grad(), \
                open(out / f"rows-{k}.jsonl", "a") as fh:
            for i, prompt in enumerate(prompts):
                if i % m != k or i in done:
                    continue
                row = {"index": i, **run_pair(handle, call, prompt, 1000 * a.seed + i, a.search, strategies)}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(i, {s: round(row[s]["count_acc"], 2) for s in STRATEGIES if s in row}, flush=True)
    rows = [r for r in load_rows(out) if r["index"] < a.n]
    if not rows:
        print("no rows yet")
        return {}
    summary, md = summarize(rows, settings)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(md)
    print(md)
    return summary


if __name__ == "__main__":
    main()
