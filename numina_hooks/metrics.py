"""Counting metrics as the NUMINA paper defines them (Sec. 5, "Evaluation metrics").

- CountAcc: a class scores 1 in a frame when its detected count equals the prompt's
  count, else 0; scores are averaged over the prompt's classes in each frame, then over
  frames, giving the video's score.
- TC (temporal consistency): for each pair of adjacent frames, a class scores 1 when its
  detected count is the same in both frames; averaged over all pairs and classes.

Both take detected counts as a sequence of per-frame dicts ``{class: count}`` (a class
missing from a frame's dict counts 0) and the prompt's counts ``{class: count}``; only the
prompt's classes are scored. Dataset figures are means of per-video scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence


def _check(frame_counts: Sequence[Mapping[str, int]], target: Mapping[str, int]) -> None:
    if len(frame_counts) == 0:
        raise ValueError("need detected counts for at least one frame, got none")
    if not target:
        raise ValueError("the prompt's counts are empty: nothing to score")


def count_acc(frame_counts: Sequence[Mapping[str, int]], target: Mapping[str, int]) -> float:
    """CountAcc of one video in [0, 1] (see the module docstring)."""
    _check(frame_counts, target)
    per_frame = [
        sum(int(fc.get(c, 0) == n) for c, n in target.items()) / len(target) for fc in frame_counts
    ]
    return sum(per_frame) / len(per_frame)


def temporal_consistency(frame_counts: Sequence[Mapping[str, int]],
                         target: Mapping[str, int]) -> float:
    """TC of one video in [0, 1]: unchanged counts over adjacent frame pairs x classes.

    Raises ValueError for a single frame, which has no pair to compare.
    """
    _check(frame_counts, target)
    if len(frame_counts) < 2:
        raise ValueError("temporal consistency needs at least 2 frames, got 1")
    same = [
        int(a.get(c, 0) == b.get(c, 0))
        for a, b in zip(frame_counts[:-1], frame_counts[1:])
        for c in target
    ]
    return sum(same) / len(same)


def video_scores(frame_counts: Sequence[Mapping[str, int]], target: Mapping[str, int]
                 ) -> dict[str, float]:
    """``{"count_acc": x, "tc": y}`` for one video."""
    return {"count_acc": count_acc(frame_counts, target),
            "tc": temporal_consistency(frame_counts, target)}


def summarize(videos: Sequence[tuple[Sequence[Mapping[str, int]], Mapping[str, int]]]
              ) -> dict:
    """Dataset figures from ``[(frame_counts, target), ...]``.

    Returns ``{"videos": n, "count_acc": mean, "tc": mean, "by_requested": {k: {"frames":
    m, "acc": a}}}``, where ``by_requested[k]`` is the fraction of (frame, class) cells
    counted right among classes whose requested count is ``k``.
    """
    if not videos:
        raise ValueError("summarize needs at least one video")
    scores = [video_scores(fc, t) for fc, t in videos]
    hits: dict[int, list[int]] = defaultdict(list)
    for fc, target in videos:
        for c, n in target.items():
            hits[n].extend(int(f.get(c, 0) == n) for f in fc)
    return {
        "videos": len(videos),
        "count_acc": sum(s["count_acc"] for s in scores) / len(scores),
        "tc": sum(s["tc"] for s in scores) / len(scores),
        "by_requested": {k: {"frames": len(v), "acc": sum(v) / len(v)}
                         for k, v in sorted(hits.items())},
    }
