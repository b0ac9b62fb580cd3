"""The run loop of ``numina eval``: generate a video per (prompt, strategy), score it, save it.

:func:`run_eval` writes each result to ``OUT/results/<strategy>/<index>.json`` as soon as it
is done (``results.py``), so a crash or Ctrl-C loses at most the item in progress and a
rerun with the same settings resumes; the chosen video goes to
``OUT/videos/<strategy>/<index>.gif`` (or ``.mp4``); the summary, table and plot are
``report.py``'s.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from .benchmark import EvalItem
from .results import atomic_write_json, check_settings, is_done, result_path, strategies_on_disk

if TYPE_CHECKING:  # torch and transformers load only when a run starts (keeps `numina --help` fast)
    from .detectors import Counter
    from .strategies import EvalModel, PromptSession

__all__ = ["DEFAULT_STRATEGIES", "run_eval", "check_mp4_writer"]

DEFAULT_STRATEGIES = ("plain", "seed-search", "numina", "numina+seed-search", "layout-seeds")


def check_mp4_writer(out_dir: Path) -> None:
    """RuntimeError before generating anything when MP4 cannot be written in ``out_dir``."""
    from ..media import VideoWriterError, check_video_writer

    try:
        check_video_writer(Path(out_dir) / "videos" / "probe.mp4")
    except VideoWriterError as err:
        raise RuntimeError(f"{err}; or use --save-videos gif") from None


def _write_video_atomic(frames: np.ndarray, path: Path) -> None:
    from ..media import write_video

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(frames, tmp)
    os.replace(tmp, path)


def progress_bar(total: int, desc: str):
    """A tqdm bar counting videos."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="video", dynamic_ncols=True, smoothing=0.1)


def run_eval(items: Sequence[EvalItem], model: EvalModel, counter: Counter, out_dir, *,
             strategies: Sequence[str] = DEFAULT_STRATEGIES, seeds: Sequence[int] = (1, 2, 3, 4, 5),
             clip=None, enhance: Optional[Callable[[str], str]] = None, save_videos: Optional[str] = "gif",
             settings: Optional[dict] = None, on_result: Optional[Callable[[Path, dict], None]] = None,
             write_reports: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Generate and score every (item, strategy); returns the summary (``report.summarize``).

    ``counter`` counts objects (``detectors.make_counter``); ``clip`` is an optional
    ``ClipScorer``; ``enhance`` rewrites prompts for ``+enhance`` strategies;
    ``save_videos`` is ``"gif"``, ``"mp4"`` or ``None``. ``settings`` adds entries to the
    recorded identity of the run. ``on_result(path, result)`` is called after each result
    is on disk (tests use it to interrupt a run).
    """
    from . import report as report_mod
    from ..numina.config import NuminaConfig
    from .strategies import PromptSession, split_strategy

    strategies = list(dict.fromkeys(strategies))
    for name in strategies:
        split_strategy(name)
    if any(split_strategy(s)[1] for s in strategies) and enhance is None:
        raise ValueError("a '+enhance' strategy needs enhance= (a callable str -> str)")
    if save_videos not in (None, "gif", "mp4"):
        raise ValueError(f"save_videos={save_videos!r}: expected 'gif', 'mp4' or None")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    out_dir = Path(out_dir)
    if save_videos == "mp4":
        check_mp4_writer(out_dir)
    config = getattr(model.handle, "config", None) or NuminaConfig()
    identity = {
        "model": model.name,
        "model_info": model.info,
        "call": {k: v for k, v in model.call.items() if k != "output_type"},
        "seeds": seeds,
        "counter": counter.settings,
        "clip": getattr(clip, "settings", None),
        "numina_config": dataclasses.asdict(config),
        "enhance": getattr(enhance, "__qualname__", None) if enhance is not None else None,
        **(settings or {}),
    }
    check_settings(out_dir, {"identity": identity, "strategies": strategies, "mode": "generate"})

    todo = [(it, s) for it in items for s in strategies if not is_done(result_path(out_dir, s, it.index))]
    skipped = len(items) * len(strategies) - len(todo)
    if skipped:
        echo(f"{skipped} result(s) already in {out_dir / 'results'}: skipped")
    bar = progress_bar(len(todo), "numina eval")
    errors = 0
    try:
        by_item: dict[int, list[str]] = {}
        for it, s in todo:
            by_item.setdefault(it.index, []).append(s)
        lookup = {it.index: it for it in items}
        for index, names in by_item.items():
            it = lookup[index]
            session = PromptSession(model, counter, it.prompt, it.counts, enhance=enhance)
            for name in names:
                bar.set_postfix_str(f"#{index} {name}", refresh=False)
                path = result_path(out_dir, name, index)
                t0 = time.perf_counter()
                try:
                    result = generate_one(session, it, name, seeds, clip)
                except Exception as exc:  # record and go on; KeyboardInterrupt is not caught
                    errors += 1
                    result = {"index": index, "prompt": it.prompt, "counts": it.counts, "strategy": name,
                              "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                    echo(f"#{index} {name}: {result['error']}")
                else:
                    if save_videos:
                        video = out_dir / "videos" / name / f"{index:04d}.{save_videos}"
                        video.parent.mkdir(parents=True, exist_ok=True)
                        _write_video_atomic(result.pop("_frames"), video)
                        result["video"] = str(video.relative_to(out_dir))
                    else:
                        result.pop("_frames")
                result["wall_seconds"] = round(time.perf_counter() - t0, 3)
                atomic_write_json(path, result)
                bar.update(1)
                if on_result is not None:
                    on_result(path, result)
    finally:
        bar.close()
    if errors:
        echo(f"{errors} item(s) failed; their results hold the error, and a rerun retries them")
    if not write_reports:
        return {}
    return report_mod.write_reports(out_dir, strategies=strategies_on_disk(out_dir, strategies))


def generate_one(session: PromptSession, it: EvalItem, name: str, seeds: Sequence[int], clip) -> dict:
    """One (item, strategy): run the strategy and return its result (the chosen video's
    frames under ``"_frames"``, which :func:`run_eval` saves or drops before writing)."""
    from .strategies import run_strategy

    outcome = run_strategy(name, session, seeds)
    video = outcome.video
    result = {
        "index": it.index,
        "prompt": it.prompt,
        "generation_prompt": outcome.generation_prompt,
        "counts": it.counts,
        "strategy": name,
        "seed": video.seed,
        "seeds": list(seeds),
        "counts_found": video.counts,
        "count_acc": video.scores["count_acc"],
        "tc": video.scores["tc"],
        "clip": clip.score(video.frames, it.prompt) if clip is not None else None,
        "frames": int(video.frames.shape[0]),
        "cost_seconds": round(outcome.cost_seconds, 3),
        "numina": video.numina,
        "candidates": [c.row() for c in outcome.candidates],
        "counter": session.counter.settings,
        "_frames": video.frames,
    }
    return result
