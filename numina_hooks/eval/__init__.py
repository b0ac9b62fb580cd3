"""Counting metrics (CountAcc, TC) and evaluation helpers.

The CountBench runner (``numina eval``, docs/eval.md): :func:`run_eval` /
:func:`score_videos` in ``runner``, the strategies in ``strategies``, counters
(GroundingDINO, OWLv2, the toy world's exact counter) in ``detectors``, the CLIP score in
``clip_score``, the summary, table and plot in ``report`` and the paired bootstrap interval
in ``stats``. Names load on first use (``numina --help`` does not import torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "count_acc": ".metrics", "temporal_consistency": ".metrics", "video_scores": ".metrics",
    "summarize": ".metrics", "paired_bootstrap": ".stats",
    "ClipScorer": ".clip_score",
    "Counter": ".detectors", "ToyCounter": ".detectors", "ZeroShotDetector": ".detectors",
    "make_counter": ".detectors",
    "EvalItem": ".runner", "load_benchmark": ".runner", "toy_benchmark": ".runner", "parse_seeds": ".runner",
    "load_model": ".runner", "run_eval": ".runner", "score_videos": ".runner",
    "BASE_STRATEGIES": ".strategies", "EvalModel": ".strategies", "PromptSession": ".strategies",
    "run_strategy": ".strategies", "score_counts": ".strategies",
    "markdown_table": ".report", "summarize_results": ".report", "write_reports": ".report",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .clip_score import ClipScorer
    from .detectors import Counter, ToyCounter, ZeroShotDetector, make_counter
    from .metrics import count_acc, summarize, temporal_consistency, video_scores
    from .report import markdown_table, summarize_results, write_reports
    from .runner import EvalItem, load_benchmark, load_model, parse_seeds, run_eval, score_videos, toy_benchmark
    from .stats import paired_bootstrap
    from .strategies import BASE_STRATEGIES, EvalModel, PromptSession, run_strategy, score_counts


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
