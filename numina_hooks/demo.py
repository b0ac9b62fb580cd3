"""``numina demo``: plain vs NUMINA on the shipped toy model.

The toy model (``numina_hooks.toy``) is a real diffusers ``WanPipeline`` with a tiny
trained transformer; its world has red discs, blue squares and yellow triangles, which an
exact counter counts per frame. The demo runs a fixed set of held-out prompts with fixed
seeds, plain and with NUMINA, prints a table and the CountAcc difference with a paired 95%
bootstrap interval over the prompt-seed pairs, writes a labelled side-by-side GIF and the
NUMINA layout pictures to a folder, and optionally the figures as JSON.

Time: each prompt-seed pair is three to four toy generations (plain, NUMINA phase 1 and,
when the layout needs correcting, phase 2); a progress bar shows each one and estimates
the rest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

N_BOOT = 10000
GIF_SCALE = 6  # toy frames are 24 x 24: shown as 144 x 144, nearest neighbour


def frame_counts(frames: np.ndarray) -> list[dict[str, int]]:
    """Exact per-frame counts (category name -> n) of uint8 frames ``[F, H, W, 3]``."""
    from .toy.counter import count_objects

    return count_objects(frames)


def _score(counts: list[dict[str, int]], target: dict[str, int]) -> dict:
    from .metrics import video_scores

    return video_scores(counts, target)


def demo_prompts(n: int):
    """``n`` held-out toy prompts of the count range the shipped weights were trained on."""
    from .toy.model import weights_count_range
    from .toy.world import held_out_prompts

    return held_out_prompts(n, seed=0, counts_in=weights_count_range())


def run_demo(
    out_dir: str | Path = "numina-out/demo",
    prompts: int = 4,
    seeds: Sequence[int] = (0, 1),
    steps: Optional[int] = None,
    json_path: Optional[str | Path] = None,
    weights_dir: Optional[str | Path] = None,
    config=None,
    echo=print,
    threads: Optional[int] = 1,
    progress: bool = True,
) -> dict:
    """Run the demo; returns the figures (also written to ``json_path`` when given).

    ``threads``: torch CPU threads while the demo runs (1, the default, is as fast for the
    tiny model and immune to the slowdown that threads waiting for a busy core cause);
    ``None`` keeps torch's setting. ``progress``: a tqdm bar on stderr.
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out_dir, prompts, seeds, steps, json_path, weights_dir, config, echo, progress)
    finally:
        torch.set_num_threads(before)


def _run(out_dir, prompts, seeds, steps, json_path, weights_dir, config, echo, progress) -> dict:
    import torch
    from tqdm.auto import tqdm

    import numina_hooks

    from .numina.config import NuminaConfig
    from .progress import StepProgress
    from .toy.model import TOY_CALL, load_toy_pipeline, toy_frames

    chosen = demo_prompts(prompts)
    pairs = len(chosen) * len(seeds)
    call = dict(TOY_CALL)
    if steps is not None:
        call["num_inference_steps"] = steps
    echo(f"numina demo: {len(chosen)} held-out toy prompt(s) x {len(seeds)} seed(s) = {pairs} pair(s), each "
         f"generated plain and with NUMINA ({call['num_inference_steps']} steps). A pair took 8 s on a 2-core "
         "CPU shared with a training run, 32 s with six jobs sharing it; the bar estimates the rest.")
    pipe = load_toy_pipeline(weights_dir)
    pipe.set_progress_bar_config(disable=True)
    rows, gif_rows = [], []
    t_start = time.perf_counter()
    bar = tqdm(total=pairs, desc="demo", unit="pair", disable=not progress, dynamic_ncols=True)
    try:
        with numina_hooks.attach(pipe, numina_hooks.Numina(config or NuminaConfig())) as numina, torch.no_grad():
            for i, prompt in enumerate(chosen):
                target = dict(prompt.counts)
                nouns = numina_hooks.parse_counts(prompt.text)
                for seed in seeds:
                    steps_bar = StepProgress(prefix=f"prompt {i} seed {seed}: ", outer=bar if progress else None,
                                             disable=not progress)
                    numina.register(steps_bar)
                    try:
                        plain = toy_frames(numina.run_pipeline(
                            prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call))
                        out = numina(prompt=prompt.text, generator=torch.Generator().manual_seed(seed), **call)
                    finally:
                        numina.unregister(steps_bar)
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
                    gif_rows.append((plain, guided))
                    bar.update(1)
    finally:
        bar.close()
    figures = {
        "prompts": len(rows),
        "baseline": _mean(rows, "baseline"),
        "numina": _mean(rows, "numina"),
        "count_acc_difference": _difference(rows),
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    gif = out_dir / "plain_vs_numina.gif"
    write_labelled_gif(rows, gif_rows, gif)
    _print_table(rows, figures, echo)
    echo(f"side by side, labelled (left plain, right NUMINA): {gif}")
    echo(f"layout pictures: {out_dir / 'layouts'}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2, default=_jsonable))
        echo(f"figures: {json_path}")
    return figures


def _mean(rows, key) -> dict:
    return {m: float(np.mean([r[key][m] for r in rows])) for m in ("count_acc", "tc")}


def _difference(rows) -> dict:
    """NUMINA - plain CountAcc over the pairs, with its paired 95% bootstrap interval."""
    from .eval.stats import paired_bootstrap

    mean, lo, hi = paired_bootstrap([r["baseline"]["count_acc"] for r in rows],
                                    [r["numina"]["count_acc"] for r in rows], n_boot=N_BOOT, seed=0)
    return {"mean": mean, "ci95": [lo, hi], "n": len(rows), "n_boot": N_BOOT,
            "method": "paired percentile bootstrap over prompt-seed pairs"}


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x))


def _per_frame(counts: list[dict[str, int]], category: str) -> str:
    return "/".join(str(c.get(category, 0)) for c in counts)


def _print_table(rows, figures, echo) -> None:
    echo(f"{'prompt':52s} {'seed':>4s}  {'category':9s} {'asked':>5s}  {'plain (per frame)':>17s}  {'NUMINA':>9s}")
    for r in rows:
        for k, (cat, n) in enumerate(sorted(r["asked"].items())):
            text = r["prompt"][:50] if k == 0 else ""
            seed = str(r["seed"]) if k == 0 else ""
            echo(f"{text:52s} {seed:>4s}  {cat:9s} {n:5d}  {_per_frame(r['plain_counts'], cat):>17s}  "
                 f"{_per_frame(r['numina_counts'], cat):>9s}")
    b, n, d = figures["baseline"], figures["numina"], figures["count_acc_difference"]
    echo(f"CountAcc: plain {b['count_acc']:.3f}  NUMINA {n['count_acc']:.3f}   "
         f"TC: plain {b['tc']:.3f}  NUMINA {n['tc']:.3f}   ({d['n']} prompt-seed pairs, {figures['seconds']:.0f} s)")
    verdict = ("the interval excludes 0" if d["ci95"][0] > 0 or d["ci95"][1] < 0
               else "the interval includes 0: no difference shown at this sample size")
    echo(f"CountAcc difference NUMINA - plain: {d['mean']:+.3f}, 95% paired bootstrap interval "
         f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] over n = {d['n']} prompt-seed pairs ({verdict})")


# ---------------------------------------------------------------------------- the GIF
def write_labelled_gif(rows: list[dict], videos: list[tuple[np.ndarray, np.ndarray]], path: Path,
                       scale: int = GIF_SCALE) -> Path:
    """One GIF: a block per prompt-seed pair with the prompt and seed, the plain and the
    NUMINA video side by side (scaled up ``scale`` x, nearest neighbour) under "plain" and
    "NUMINA", and under each the counts in the frame shown against the asked counts
    (green when equal, red when not)."""
    from PIL import Image

    frames = [_draw_frame(rows, videos, f, scale) for f in range(videos[0][0].shape[0])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=600, loop=0)
    return Path(path)


def _draw_frame(rows, videos, f: int, scale: int):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    line, pad, gap = 17, 8, 16
    side = videos[0][0].shape[1] * scale
    n_cats = max(len(r["asked"]) for r in rows)
    block_h = 2 * line + line + side + n_cats * line + gap
    width = max(2 * side + 3 * pad + gap, 460)
    canvas = Image.new("RGB", (width, len(rows) * block_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for b, (row, (plain, guided)) in enumerate(zip(rows, videos)):
        y = pad + b * block_h
        draw.text((pad, y), _fit(draw, row["prompt"], font, width - 2 * pad), fill="black", font=font)
        draw.text((pad, y + line), f"seed {row['seed']}   frame {f + 1}/{plain.shape[0]}", fill="dimgray",
                  font=font)
        y += 2 * line
        for col, (name, video, key) in enumerate((("plain", plain, "plain_counts"),
                                                  ("NUMINA", guided, "numina_counts"))):
            x = pad + col * (side + pad + gap)
            draw.text((x, y), name, fill="black", font=font)
            pic = Image.fromarray(video[f]).resize((side, side), Image.NEAREST)
            canvas.paste(pic, (x, y + line))
            for k, (cat, asked) in enumerate(sorted(row["asked"].items())):
                got = row[key][f].get(cat, 0)
                draw.text((x, y + line + side + 2 + k * line), f"{cat}: {got} (asked {asked})",
                          fill=(0, 130, 0) if got == asked else (200, 0, 0), font=font)
        draw.line([(0, pad + (b + 1) * block_h - gap // 2), (width, pad + (b + 1) * block_h - gap // 2)],
                  fill=(210, 210, 210))
    return canvas


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
