"""Scoring videos that already exist (``numina eval --videos DIR``).

A folder holds one video per prompt line, named by its line number (``0007.mp4``,
``7.gif``, ``0007_three_cats.mp4``, or a frame folder ``0007/``), or one such folder per
strategy. :func:`score_videos` counts each with the counter and writes results exactly as
``run.run_eval`` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..media import FRAME_SUFFIXES, VIDEO_SUFFIXES, read_video
from .benchmark import EvalItem
from .results import atomic_write_json, check_settings, is_done, result_path
from .run import progress_bar

if TYPE_CHECKING:
    from .detectors import Counter

__all__ = ["score_videos", "find_videos"]

_INDEX_NAME = re.compile(r"^(\d+)(?:[_\-. ].*)?$")


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
    folder per strategy. Results go to ``out_dir`` exactly as ``run_eval`` writes them
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
    check_settings(out_dir, {"identity": identity, "strategies": list(sets), "mode": "score"})
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
            if i in lookup and not is_done(result_path(out_dir, label, i))]
    bar = progress_bar(len(todo), "scoring videos")
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
