"""``numina eval``: CountBench-style evaluation of strategies on any diffusers Wan/CogVideoX model.

Two entry points:

- :func:`run_eval` generates a video per (prompt, strategy) and scores it;
- :func:`score_videos` scores videos that already exist (``numina eval --videos DIR``).

Inputs are CountBench's two files: ``prompts.txt`` (one prompt a line) and
``noun_counts.jsonl`` (one JSON object ``{noun: count}`` a line); line i of one matches line
i of the other, and item ``index`` is the 0-based line number.

Everything goes to one output folder::

    OUT/settings.json                       what was run (model, sizes, seeds, counter, ...)
    OUT/results/<strategy>/<index>.json     one result per (prompt, strategy), written
                                            atomically as soon as it is done
    OUT/videos/<strategy>/<index>.gif       the chosen video (``save_videos``)
    OUT/summary.json  OUT/table.md  OUT/accuracy_by_count.png   (see ``report.py``)

``<index>`` is zero-padded to four digits. A rerun with the same settings skips every result
already on disk, so a crash or Ctrl-C loses at most the item in progress; a result that
failed (``"error"`` in its JSON) is retried. A rerun with different settings (model, steps,
size, seeds, counter, NUMINA config) into the same folder is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch and transformers load only when a run starts (keeps `numina --help` fast)
    from .detectors import Counter
    from .strategies import EvalModel, PromptSession

__all__ = [
    "EvalItem",
    "load_benchmark",
    "toy_benchmark",
    "toy_noun_as_written",
    "write_benchmark",
    "parse_seeds",
    "load_model",
    "run_eval",
    "score_videos",
    "read_video",
    "find_videos",
    "atomic_write_json",
    "result_path",
]

DEFAULT_STRATEGIES = ("plain", "seed-search", "numina", "numina+seed-search", "layout-seeds")
VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_INDEX_NAME = re.compile(r"^(\d+)(?:[_\-. ].*)?$")


class SettingsMismatch(ValueError):
    """The output folder holds results made with other settings."""


@dataclass(frozen=True)
class EvalItem:
    """One benchmark line: its 0-based index, the prompt and the counts it asks for."""

    index: int
    prompt: str
    counts: dict


# ---------------------------------------------------------------------------- inputs
def load_benchmark(prompts_file, counts_file, limit: Optional[int] = None) -> list[EvalItem]:
    """Read a CountBench-format pair of files; line i of one matches line i of the other.

    Blank lines are items too (and fail), so that indices always equal line numbers.
    """
    prompts = Path(prompts_file).read_text(encoding="utf-8").splitlines()
    lines = Path(counts_file).read_text(encoding="utf-8").splitlines()
    while prompts and not prompts[-1].strip():
        prompts.pop()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(prompts) != len(lines):
        raise ValueError(f"{prompts_file} has {len(prompts)} prompts but {counts_file} has {len(lines)} count "
                         "lines: line i of one must match line i of the other")
    items = []
    for i, (prompt, line) in enumerate(zip(prompts, lines)):
        try:
            counts = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{counts_file} line {i + 1}: {line!r} is not JSON ({err}); expected "
                             '{"noun": count, ...}') from None
        if not prompt.strip():
            raise ValueError(f"{prompts_file} line {i + 1} is empty")
        if (not isinstance(counts, dict) or not counts
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts.values())):
            raise ValueError(f"{counts_file} line {i + 1}: {line!r}: expected a non-empty object noun -> int >= 1")
        items.append(EvalItem(i, prompt.strip(), {str(k): int(v) for k, v in counts.items()}))
    return items[:limit] if limit is not None else items


def toy_noun_as_written(prompt: str, category: str) -> str:
    """The toy category's noun as the prompt writes it (singular or plural)."""
    from ..numina.tokens import find_noun_spans
    from ..toy.world import CATEGORY_BY_NAME

    cat = CATEGORY_BY_NAME[category]
    for word in (cat.plural, cat.noun):
        if find_noun_spans(prompt, word):
            return word
    raise ValueError(f"toy prompt {prompt!r} does not name {category!r}")


def toy_benchmark(n: int, seed: int = 0) -> list[EvalItem]:
    """``n`` held-out toy prompts (``toy.world.held_out_prompts``) as benchmark items, with
    nouns as the prompt writes them (``{"discs": 3}``), as CountBench annotates."""
    from ..toy.world import held_out_prompts

    return [EvalItem(i, p.text, {toy_noun_as_written(p.text, c): k for c, k in p.counts.items()})
            for i, p in enumerate(held_out_prompts(n, seed=seed))]


def write_benchmark(items: Sequence[EvalItem], folder) -> tuple[Path, Path]:
    """Write ``prompts.txt`` and ``noun_counts.jsonl`` for ``items``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prompts, counts = folder / "prompts.txt", folder / "noun_counts.jsonl"
    prompts.write_text("".join(it.prompt + "\n" for it in items), encoding="utf-8")
    counts.write_text("".join(json.dumps(it.counts) + "\n" for it in items), encoding="utf-8")
    return prompts, counts


def parse_seeds(text: str) -> list[int]:
    """``"1..5"`` -> [1, 2, 3, 4, 5]; ``"1,4,7"`` -> [1, 4, 7]; ``"3"`` -> [3]; mixes work."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("..")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"seeds {text!r}: expected a range like 1..5 or a list like 1,2,3") from None
    if not seeds:
        raise ValueError(f"seeds {text!r}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {text!r}: a seed is repeated")
    return seeds


# ---------------------------------------------------------------------------- the model
def _uint8_frames(out) -> np.ndarray:
    """Frames of a pipeline output made with ``output_type="np"`` -> uint8 [F, H, W, 3]."""
    frames = out.frames if hasattr(out, "frames") else out[0]
    arr = np.asarray(frames[0] if not isinstance(frames, np.ndarray) or frames.ndim == 5 else frames)
    if arr.ndim == 5:
        arr = arr[0]
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return arr


def load_model(model: str, *, steps: Optional[int] = None, height: Optional[int] = None,
               width: Optional[int] = None, num_frames: Optional[int] = None,
               guidance_scale: Optional[float] = None, dtype: str = "auto", device: Optional[str] = None,
               config=None) -> EvalModel:
    """Load ``model`` (a diffusers model id or local folder, or ``"toy"``) and attach NUMINA.

    For a real model this is ``DiffusionPipeline.from_pretrained(model, dtype=...)`` (Wan's
    VAE kept in float32), called with ``output_type="np"``; ``None`` arguments keep the
    pipeline's defaults. ``"toy"`` is the shipped toy model (``numina_hooks.toy``), whose
    frame geometry is fixed.
    """
    import torch

    import numina_hooks
    from ..numina.config import NuminaConfig
    from .strategies import EvalModel

    config = config or NuminaConfig()
    if model == "toy":
        from ..toy.model import TOY_CALL, load_toy_pipeline, toy_frames

        for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
            if value is not None and value != TOY_CALL[name]:
                raise ValueError(f"--{name.replace('_', '-')} {value}: the toy model only makes "
                                 f"{TOY_CALL[name]} (leave it unset)")
        pipe = load_toy_pipeline(device=device or "cpu")
        call = dict(TOY_CALL)
        if steps is not None:
            call["num_inference_steps"] = steps
        if guidance_scale is not None:
            call["guidance_scale"] = guidance_scale
        handle = numina_hooks.attach(pipe, config=config)
        return EvalModel(handle, call, toy_frames, name="toy", device="cpu", info=_toy_weights_info())

    from ..cli import resolve_dtype

    device = device if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(dtype, device)
    if dtype not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"dtype={dtype!r}: expected 'auto', 'bf16', 'fp16' or 'fp32'")
    log.info("loading %s (%s on %s)", model, dtype, device)
    pipe = load_pipeline(model, dtype, device)
    pipe.set_progress_bar_config(disable=True)
    call: dict = {"output_type": "np"}
    for name, value in (("num_inference_steps", steps), ("height", height), ("width", width),
                        ("num_frames", num_frames), ("guidance_scale", guidance_scale)):
        if value is not None:
            call[name] = value
    handle = numina_hooks.attach(pipe, config=config)
    return EvalModel(handle, call, _uint8_frames, name=model, device=device)


def load_pipeline(model: str, dtype: str, device: str):
    """``DiffusionPipeline.from_pretrained(model)`` in ``dtype`` ("bf16", "fp16", "fp32") on
    ``device``; Wan's VAE stays in float32, as it is meant to run."""
    import torch
    from diffusers import DiffusionPipeline

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    try:  # diffusers >= 0.36 names it dtype (torch_dtype is deprecated); older releases only know torch_dtype
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        pipe = DiffusionPipeline.from_pretrained(model, dtype=torch_dtype)
    except ImportError:
        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    if type(pipe).__name__.startswith("Wan") and getattr(pipe, "vae", None) is not None:
        pipe.vae.to(torch.float32)
    return pipe.to(device)


def _toy_weights_info() -> dict:
    """Which toy weights: their hash and training step (the shipped weights change as training goes)."""
    import hashlib

    from ..toy.model import WEIGHTS_DIR

    info = {"weights_sha1": hashlib.sha1((WEIGHTS_DIR / "model.safetensors").read_bytes()).hexdigest()[:12]}
    meta = WEIGHTS_DIR / "info.json"
    if meta.exists():
        info["weights_step"] = json.loads(meta.read_text()).get("steps")
    return info


# ---------------------------------------------------------------------------- files
def atomic_write_json(path, data) -> None:
    """Write JSON so that ``path`` is either absent or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=_jsonable)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def result_path(out_dir, strategy: str, index: int) -> Path:
    return Path(out_dir) / "results" / strategy / f"{index:04d}.json"


def _done(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        return "error" not in json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False


def _write_video_atomic(frames: np.ndarray, path: Path) -> None:
    from ..video_io import write_video

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(frames, tmp)
    os.replace(tmp, path)


def _check_mp4_writer(out_dir: Path) -> None:
    """Fail before generating anything when MP4 cannot be written here."""
    from ..video_io import VideoWriterError, check_video_writer

    try:
        check_video_writer(out_dir / "videos" / "probe.mp4")
    except VideoWriterError as err:
        raise RuntimeError(f"{err}; or use --save-videos gif") from None


def _check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix results made with different settings in one folder."""
    file = out_dir / "settings.json"
    if file.exists():
        old = json.loads(file.read_text(encoding="utf-8"))
        keys = sorted(k for k in set(old["identity"]) | set(settings["identity"])
                      if old["identity"].get(k) != settings["identity"].get(k))
        if keys:
            diff = ", ".join(f"{k}: {old['identity'].get(k)!r} -> {settings['identity'].get(k)!r}" for k in keys)
            raise SettingsMismatch(f"{out_dir} holds results made with other settings ({diff}); "
                             "use another --out folder, or delete that one to start over")
        settings = {**settings, "strategies": list(dict.fromkeys(old.get("strategies", []) + settings["strategies"]))}
    atomic_write_json(file, settings)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="video", dynamic_ncols=True, smoothing=0.1)


# ---------------------------------------------------------------------------- generate and score
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
        _check_mp4_writer(out_dir)
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
    _check_settings(out_dir, {"identity": identity, "strategies": strategies, "mode": "generate"})

    todo = [(it, s) for it in items for s in strategies if not _done(result_path(out_dir, s, it.index))]
    skipped = len(items) * len(strategies) - len(todo)
    if skipped:
        echo(f"{skipped} result(s) already in {out_dir / 'results'}: skipped")
    bar = _progress(len(todo), "numina eval")
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
                    result = _generate_one(session, it, name, seeds, clip)
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
    return report_mod.write_reports(out_dir, strategies=_strategies_on_disk(out_dir, strategies))


def _generate_one(session: PromptSession, it: EvalItem, name: str, seeds: Sequence[int], clip) -> dict:
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


def _strategies_on_disk(out_dir: Path, first: Sequence[str]) -> list[str]:
    found = sorted(p.name for p in (out_dir / "results").glob("*") if p.is_dir())
    return list(dict.fromkeys([s for s in first if s in found] + found))


# ---------------------------------------------------------------------------- existing videos
def read_video(path) -> np.ndarray:
    """A video file (GIF via Pillow; MP4 and others via imageio) or a folder of frame
    images (sorted by name) -> uint8 [F, H, W, 3]."""
    from .detectors import check_frames

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no frame images ({', '.join(FRAME_SUFFIXES)})")
        from PIL import Image

        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        return check_frames(np.stack(frames))
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
        return check_frames(np.stack(frames))
    try:
        import imageio.v3 as iio
    except ImportError as err:
        raise ImportError(f"reading {path.suffix} videos needs imageio with a video backend: "
                          "pip install imageio imageio-ffmpeg (or av)") from err
    try:
        arr = np.asarray(iio.imread(path, index=None))
    except Exception as err:
        raise RuntimeError(f"could not read {path} ({err}); for MP4 install a backend: "
                           "pip install imageio-ffmpeg (or av)") from err
    if arr.ndim == 4 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return check_frames(arr)


def find_videos(folder, index_base: int = 0) -> dict[int, Path]:
    """``{item index: video path}`` for the videos in ``folder``.

    A video is a file with a video suffix, or a folder of frame images, whose name starts
    with the item's line number: ``7.mp4``, ``0007.gif``, ``0007_three_cats.mp4``,
    ``0007/`` (holding ``000.png``, ``001.png``, ...). ``index_base=1`` when the names
    count lines from 1. Two videos for one index is an error.
    """
    folder = Path(folder)
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _INDEX_NAME.match(p.stem if p.is_file() else p.name)
        if not m or p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        if p.is_dir() and not any(q.suffix.lower() in FRAME_SUFFIXES for q in p.iterdir()):
            continue
        index = int(m.group(1)) - index_base
        if index in found:
            raise ValueError(f"two videos for item {index}: {found[index].name} and {p.name}")
        found[index] = p
    return found


def _video_sets(folder: Path, index_base: int) -> dict[str, dict[int, Path]]:
    """One set (strategy name -> videos) for ``folder``, or one per sub-folder when
    ``folder`` holds strategy folders (like ``OUT/videos`` of a generating run)."""
    own = find_videos(folder, index_base)
    if own:
        return {folder.name: own}
    sets = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not _INDEX_NAME.match(p.name)):
        videos = find_videos(sub, index_base)
        if videos:
            sets[sub.name] = videos
    if not sets:
        raise ValueError(f"no videos in {folder}: expected files named by prompt line (0007.mp4, 7.gif, "
                         "0007_any_text.mp4) or frame folders (0007/000.png ...), or sub-folders of such, "
                         "one per strategy")
    return sets


def score_videos(videos_dir, items: Sequence[EvalItem], counter: Counter, out_dir, *, clip=None,
                 name: Optional[str] = None, index_base: int = 0, echo: Callable[[str], None] = print) -> dict:
    """Score existing videos (``numina eval --videos DIR``); returns the summary.

    ``videos_dir`` holds one video per prompt line (see :func:`find_videos`), or one such
    folder per strategy. Results go to ``out_dir`` exactly as :func:`run_eval` writes them
    (strategy = the folder's name, or ``name``); items without a video are listed as
    missing in the summary.
    """
    from . import report as report_mod
    from .strategies import score_counts

    videos_dir = Path(videos_dir)
    out_dir = Path(out_dir)
    sets = _video_sets(videos_dir, index_base)
    if name is not None:
        if len(sets) != 1:
            raise ValueError(f"--name applies to a folder of videos, but {videos_dir} holds {len(sets)} sets")
        sets = {name: next(iter(sets.values()))}
    identity = {"videos": str(videos_dir.resolve()), "counter": counter.settings,
                "clip": getattr(clip, "settings", None), "index_base": index_base}
    _check_settings(out_dir, {"identity": identity, "strategies": list(sets), "mode": "score"})
    lookup = {it.index: it for it in items}
    for label, videos in sets.items():
        unknown = sorted(set(videos) - set(lookup))
        if unknown:
            echo(f"{label}: {len(unknown)} video(s) name no prompt line of the benchmark "
                 f"(indices {unknown[:5]}{'...' if len(unknown) > 5 else ''}); ignored")
        missing = [it.index for it in items if it.index not in videos]
        if missing:
            echo(f"{label}: no video for {len(missing)} of {len(items)} prompt(s)")
    todo = [(label, lookup[i], p) for label, videos in sets.items() for i, p in sorted(videos.items())
            if i in lookup and not _done(result_path(out_dir, label, i))]
    bar = _progress(len(todo), "scoring videos")
    try:
        for label, it, video in todo:
            bar.set_postfix_str(f"{label} #{it.index}", refresh=False)
            try:
                frames = read_video(video)
                counts = counter.count(frames, list(it.counts))
                result = {"index": it.index, "prompt": it.prompt, "counts": it.counts, "strategy": label,
                          "video": str(video), "counts_found": counts, **score_counts(counts, it.counts),
                          "clip": clip.score(frames, it.prompt) if clip is not None else None,
                          "frames": int(frames.shape[0]), "counter": counter.settings}
            except Exception as exc:
                result = {"index": it.index, "prompt": it.prompt, "counts": it.counts, "strategy": label,
                          "video": str(video), "error": f"{type(exc).__name__}: {exc}"}
                echo(f"{video}: {result['error']}")
            atomic_write_json(result_path(out_dir, label, it.index), result)
            bar.update(1)
    finally:
        bar.close()
    return report_mod.write_reports(out_dir, strategies=list(sets), items=len(items))


# ---------------------------------------------------------------------------- command line
def add_arguments(parser) -> None:
    """The arguments of ``numina eval`` (added to ``parser``, an argparse (sub)parser).

    ``--threads``, ``--debug`` and ``--verbose`` are added by the ``numina`` command itself."""
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--prompts", help="prompt file, one a line (CountBench's prompts.txt); with --model toy and "
                     "no --prompts, held-out toy prompts are used (as many as --limit, default 20)")
    src.add_argument("--counts", help="counts file, one JSON object noun -> count a line (noun_counts.jsonl)")
    src.add_argument("--limit", type=int, help="only the first N prompts (default: all; 20 toy prompts with --model toy)")
    src.add_argument("--model", help="'toy', a diffusers hub id or a local folder (Wan, CogVideoX)")
    src.add_argument("--videos", help="score existing videos in this folder instead of generating "
                     "(files or frame folders named by 0-based prompt line: 0007.mp4, 7.gif, 0007/; or one "
                     "such folder per strategy)")
    src.add_argument("--index-base", type=int, choices=(0, 1), default=0,
                     help="with --videos: 1 when the names count prompt lines from 1")
    src.add_argument("--name", help="with --videos: the strategy name for this folder (default: its name)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                     help="comma-separated: plain, seed-search, numina, numina+seed-search, layout-seeds; any "
                     "with '+enhance' (needs --enhance)")
    gen.add_argument("--seeds", "--seed", dest="seeds", default="1..5",
                     help="seeds: 0, a list 1,2,3 or a range 1..5; single-trial strategies use the first")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's; the paper uses 50)")
    gen.add_argument("--height", type=int, help="frame height (default: the pipeline's)")
    gen.add_argument("--width", type=int, help="frame width (default: the pipeline's)")
    gen.add_argument("--num-frames", dest="num_frames", type=int, help="frames (default: the pipeline's)")
    gen.add_argument("--guidance-scale", dest="guidance_scale", type=float,
                     help="classifier-free guidance scale (default: the pipeline's)")
    gen.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                     help="weights' dtype; auto: bf16 on CUDA, fp32 on CPU")
    gen.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    gen.add_argument("--config", help="NuminaConfig fields as JSON (or a JSON file), e.g. '{\"cross_head\": \"max\"}'")
    gen.add_argument("--enhance", metavar="MODULE:FUNCTION",
                     help="prompt enhancer for '+enhance' strategies: a callable str -> str, imported by name")
    gen.add_argument("--save-videos", choices=("gif", "mp4", "none"), default="gif",
                     help="write each chosen video to OUT/videos/<strategy>/")
    det = parser.add_argument_group("counting")
    det.add_argument("--detector", choices=("grounding-dino", "owlv2", "toy"),
                     help="counter (default: toy for --model toy, else grounding-dino)")
    det.add_argument("--detector-model", help="detector checkpoint id or folder (default: the detector's default)")
    det.add_argument("--box-threshold", type=float, help="box score threshold (default: GroundingDINO 0.35, OWLv2 0.2)")
    det.add_argument("--text-threshold", type=float, help="GroundingDINO text threshold (default: 0.25)")
    det.add_argument("--nms-iou", type=float, help="IoU above which boxes of one noun are duplicates (default: 0.5)")
    det.add_argument("--max-box-fraction", type=float,
                     help="drop boxes larger than this fraction of the frame (default: keep all)")
    det.add_argument("--clip", action="store_true", help="also compute the CLIP score (frame-averaged)")
    det.add_argument("--clip-model", help="CLIP checkpoint (default: openai/clip-vit-base-patch32)")
    parser.add_argument("--out", default="numina-out/eval", help="output folder (results, videos, table, plot)")


def _import_callable(spec: str) -> Callable[[str], str]:
    import importlib

    from ..cli import CliError

    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise CliError(f"--enhance {spec!r}: expected MODULE:FUNCTION, e.g. mypackage.prompts:enhance")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError as err:
        raise CliError(f"--enhance {spec!r}: cannot import {module} ({err})") from None
    if not callable(fn):
        raise CliError(f"--enhance {spec!r}: {module} has no callable {attr!r}")
    return fn


def _count_results(out_dir: Path) -> tuple[int, int]:
    """(results scored, results that failed) in ``OUT/results``."""
    ok = failed = 0
    for f in (out_dir / "results").glob("*/*.json"):
        try:
            failed_one = "error" in json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            continue
        failed += failed_one
        ok += not failed_one
    return ok, failed


def cmd_eval(args, echo: Callable[[str], None] = print, on_result=None) -> int:
    """``numina eval``: check everything, run (or score), print the table.

    Exit 0 when every item was scored; 1 when some failed or nothing was scored (the
    message says how many); 130 on Ctrl-C, with every finished result kept on disk."""
    from ..cli import CliError

    out = Path(args.out)
    try:
        return _cmd_eval(args, echo, on_result)
    except SettingsMismatch as err:
        raise CliError(str(err)) from None
    except KeyboardInterrupt:
        kept, _ = _count_results(out)
        echo(f"interrupted; {kept} result(s) kept in {out / 'results'}; rerun the same command to resume")
        return 130


def _check_eval_args(args):
    """Everything about ``numina eval``'s arguments that can be checked before loading."""
    from ..cli import (CliError, apply_threads, check_model_arg, parse_config_arg, parse_seed_list, require)

    if bool(args.model) == bool(args.videos):
        raise CliError("give either --model (generate and score) or --videos (score existing videos)")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit {args.limit}: expected a number of prompts >= 1 (leave it out for all)")
    for name in ("steps", "height", "width", "num_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} {value}: expected an int >= 1")
    if args.prompts or args.counts:
        if not (args.prompts and args.counts):
            raise CliError("--prompts and --counts go together (line i of one matches line i of the other)")
        for option, path in (("--prompts", args.prompts), ("--counts", args.counts)):
            if not Path(path).is_file():
                raise CliError(f"{option} {path}: no such file")
    require("matplotlib", "media", "numina eval (the accuracy plot)")
    require("PIL", "media", "numina eval (GIF videos)")
    require("tqdm", "media", "numina eval (progress)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: is a file; expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--out {out}: cannot create it ({err.strerror or err})") from None
    checked = {"config": None, "seeds": None, "strategies": None, "enhance": None}
    if args.model:
        check_model_arg(args.model)
        checked["config"] = parse_config_arg(args.config)
        checked["seeds"] = parse_seed_list(args.seeds)
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if not strategies:
            raise CliError(f"--strategies {args.strategies!r}: no strategy given")
        from .strategies import split_strategy

        for s in strategies:
            try:
                split_strategy(s)
            except ValueError as err:
                raise CliError(f"--strategies: {err}") from None
        if any(s.endswith("+enhance") for s in strategies) and not args.enhance:
            raise CliError("a '+enhance' strategy needs --enhance MODULE:FUNCTION")
        checked["strategies"] = strategies
        checked["enhance"] = _import_callable(args.enhance) if args.enhance else None
        if args.save_videos == "mp4":
            try:
                _check_mp4_writer(out)
            except RuntimeError as err:
                raise CliError(f"--save-videos mp4: {err}") from None
    apply_threads(getattr(args, "threads", None))
    return checked


def _cmd_eval(args, echo, on_result) -> int:
    from ..cli import CliError, resolve_device, resolve_dtype
    from .detectors import make_counter

    checked = _check_eval_args(args)
    detector = args.detector or ("toy" if args.model == "toy" else "grounding-dino")
    if args.prompts:
        items = load_benchmark(args.prompts, args.counts, limit=args.limit)
    elif args.model == "toy" or (args.videos and detector == "toy"):
        items = toy_benchmark(20 if args.limit is None else args.limit)
        write_benchmark(items, Path(args.out) / "benchmark")
        echo(f"{len(items)} held-out toy prompts (written to {Path(args.out) / 'benchmark'})")
    else:
        raise CliError("--prompts FILE --counts FILE are required (CountBench's format)")
    if not items:
        raise CliError(f"{args.prompts}: no prompts to evaluate")
    device = resolve_device(args.device)
    counter = make_counter(detector, args.detector_model, box_threshold=args.box_threshold,
                           text_threshold=args.text_threshold, nms_iou=args.nms_iou,
                           max_box_fraction=args.max_box_fraction, device=device)
    clip = None
    if args.clip:
        from .clip_score import ClipScorer

        clip = ClipScorer(args.clip_model, device=device)
    out = Path(args.out)
    if args.videos:
        summary = score_videos(args.videos, items, counter, out, clip=clip, name=args.name,
                               index_base=args.index_base, echo=echo)
    else:
        model = load_model(args.model, steps=args.steps, height=args.height, width=args.width,
                           num_frames=args.num_frames, guidance_scale=args.guidance_scale,
                           dtype=resolve_dtype(args.dtype, device), device=device, config=checked["config"])
        try:
            summary = run_eval(items, model, counter, out, strategies=checked["strategies"], seeds=checked["seeds"],
                               clip=clip, enhance=checked["enhance"],
                               save_videos=None if args.save_videos == "none" else args.save_videos,
                               on_result=on_result, echo=echo)
        finally:
            model.handle.detach()
    from .report import markdown_table

    echo(markdown_table(summary))
    echo(f"results: {out / 'results'}  summary: {out / 'summary.json'}  table: {out / 'table.md'}  "
         f"plot: {out / 'accuracy_by_count.png'}")
    scored = sum(e["own"]["videos"] for e in summary["strategies"].values())
    failed = sum(len(e["errors"]) for e in summary["strategies"].values())
    if scored == 0:
        echo(f"numina eval: nothing was scored ({failed} result(s) failed; see their result files)")
        return 1
    if failed:
        echo(f"numina eval: {failed} of {scored + failed} result(s) failed (see the table's last line); "
             "rerun the same command to retry them")
        return 1
    return 0
