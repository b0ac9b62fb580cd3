"""``numina demo``: plain vs NUMINA on the shipped toy model, in about a minute on a CPU.

The toy model (``numina_hooks.toy``) is a real diffusers ``WanPipeline`` with a tiny
trained transformer; its world has red discs, blue squares and yellow triangles, which an
exact counter counts per frame. The demo runs a fixed set of held-out prompts with fixed
seeds, plain and with NUMINA, prints a table, writes a side-by-side GIF and the NUMINA
layout pictures to a folder, and optionally the figures as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch


def frame_counts(frames: np.ndarray) -> list[dict[str, int]]:
    """Exact per-frame counts (category name -> n) of uint8 frames ``[F, H, W, 3]``."""
    from .toy.counter import count_objects

    return count_objects(frames)


def _score(counts: list[dict[str, int]], target: dict[str, int]) -> dict:
    from .eval.metrics import video_scores

    return video_scores(counts, target)


def demo_prompts(n: int):
    from .toy.world import held_out_prompts

    return held_out_prompts(n, seed=0)


def run_demo(
    out_dir: str | Path = "numina-out/demo",
    prompts: int = 4,
    seeds: Sequence[int] = (0, 1),
    steps: Optional[int] = None,
    json_path: Optional[str | Path] = None,
    weights_dir: Optional[str | Path] = None,
    config=None,
    echo=print,
) -> dict:
    """Run the demo; returns the figures (also written to ``json_path`` when given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the toy model is tiny: one thread is as fast, and immune to the OpenMP slowdown
    # that threads waiting for a busy core cause on a loaded laptop
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out_dir, prompts, seeds, steps, json_path, weights_dir, config, echo)
    finally:
        torch.set_num_threads(threads)


def _run(out_dir, prompts, seeds, steps, json_path, weights_dir, config, echo) -> dict:
    import numina_hooks

    from .numina.config import NuminaConfig
    from .toy.model import TOY_CALL, load_toy_pipeline, toy_frames

    pipe = load_toy_pipeline(weights_dir)
    pipe.set_progress_bar_config(disable=True)
    call = dict(TOY_CALL)
    if steps is not None:
        call["num_inference_steps"] = steps
    rows, gif_rows = [], []
    t_start = time.perf_counter()
    with numina_hooks.attach(pipe, config=config or NuminaConfig()) as numina, torch.no_grad():
        for i, prompt in enumerate(demo_prompts(prompts)):
            target = dict(prompt.counts)
            nouns = numina_hooks.parse_counts(prompt.text)
            for seed in seeds:
                plain = toy_frames(numina.run_pipeline(
                    prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call))
                out = numina(prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)
                guided = toy_frames(out)
                report = out.numina
                report.save(out_dir / "layouts" / f"prompt{i}_seed{seed}")
                plain_counts, guided_counts = frame_counts(plain), frame_counts(guided)
                rows.append({
                    "prompt": prompt.text,
                    "seed": seed,
                    "asked": target,
                    "nouns": nouns,
                    "plain_counts": plain_counts,
                    "numina_counts": guided_counts,
                    "phase2_ran": report.phase2_ran,
                    "layout_counts": report.counts_found,
                    "baseline": _score(plain_counts, target),
                    "numina": _score(guided_counts, target),
                    "seconds": report.timings.get("total"),
                })
                gif_rows.append(np.concatenate([plain, np.full_like(plain[:, :, :2], 255), guided], axis=2))
    figures = {
        "prompts": len(rows),
        "baseline": _mean(rows, "baseline"),
        "numina": _mean(rows, "numina"),
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    gif = out_dir / "plain_vs_numina.gif"
    _write_gif(gif_rows, gif)
    _print_table(rows, figures, echo)
    echo(f"side by side (left plain, right NUMINA): {gif}")
    echo(f"layout pictures: {out_dir / 'layouts'}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2, default=_jsonable))
        echo(f"figures: {json_path}")
    return figures


def _mean(rows, key) -> dict:
    return {m: float(np.mean([r[key][m] for r in rows])) for m in ("count_acc", "tc")}


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x))


def _mean_counts(counts: list[dict[str, int]], category: str) -> str:
    values = [c.get(category, 0) for c in counts]
    return "/".join(str(v) for v in values)


def _print_table(rows, figures, echo) -> None:
    echo(f"{'prompt':52s} {'seed':>4s}  {'category':9s} {'asked':>5s}  {'plain (per frame)':>17s}  {'NUMINA':>9s}")
    for r in rows:
        for k, (cat, n) in enumerate(sorted(r["asked"].items())):
            text = r["prompt"][:50] if k == 0 else ""
            seed = str(r["seed"]) if k == 0 else ""
            echo(f"{text:52s} {seed:>4s}  {cat:9s} {n:5d}  {_mean_counts(r['plain_counts'], cat):>17s}  "
                 f"{_mean_counts(r['numina_counts'], cat):>9s}")
    b, n = figures["baseline"], figures["numina"]
    echo(f"CountAcc: plain {b['count_acc']:.3f}  NUMINA {n['count_acc']:.3f}   "
         f"TC: plain {b['tc']:.3f}  NUMINA {n['tc']:.3f}   ({figures['prompts']} prompt-seed pairs, "
         f"{figures['seconds']:.0f} s)")


def _write_gif(rows: list[np.ndarray], path: Path, scale: int = 6) -> None:
    from PIL import Image

    frames = np.concatenate([np.concatenate([r, np.full_like(r[:, :2], 255)], axis=1) for r in rows], axis=1)
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=300, loop=0)
