"""CountBench-style evaluation (``numina eval``, docs/eval.md) and the counting metrics.

One idea a module:

- ``benchmark``: the items (CountBench's two files, which ship in ``countbench/``, held-out
  toy prompts);
- ``model_loading``: the toy model or a diffusers pipeline, attached, as an ``EvalModel``;
- ``strategies``: plain, seed search, NUMINA, ... on one prompt;
- ``run``: the run loop, :func:`run_eval` (generate, score, save; resumable);
- ``results``: the output folder's result files and recorded settings;
- ``scoring``: :func:`score_videos`, for videos that already exist;
- ``detectors`` (GroundingDINO, OWLv2, the toy world's exact counter), ``clip_score``;
- ``report`` (summary, table, plot) and ``stats`` (the paired bootstrap interval);
- ``command``: the ``numina eval`` arguments and their checks.

CountAcc and TC are :mod:`numina_hooks.metrics`' (re-exported here). This package may
import ``numina_hooks.toy`` (the toy benchmark and counter), never ``numina_hooks.cli``.
Names load on first use (``numina --help`` does not import torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "count_acc": "..metrics", "temporal_consistency": "..metrics", "video_scores": "..metrics",
    "summarize": "..metrics", "paired_bootstrap": ".stats",
    "ClipScorer": ".clip_score",
    "Counter": ".detectors", "ToyCounter": ".detectors", "ZeroShotDetector": ".detectors",
    "make_counter": ".detectors",
    "EvalItem": ".benchmark", "countbench_files": ".benchmark", "load_benchmark": ".benchmark",
    "toy_benchmark": ".benchmark",
    "parse_seeds": "..options", "load_model": ".model_loading", "run_eval": ".run", "score_videos": ".scoring",
    "BASE_STRATEGIES": ".strategies", "EvalModel": ".strategies", "PromptSession": ".strategies",
    "run_strategy": ".strategies", "score_counts": ".strategies",
    "markdown_table": ".report", "summarize_results": ".report", "write_reports": ".report",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .clip_score import ClipScorer
    from .detectors import Counter, ToyCounter, ZeroShotDetector, make_counter
    from ..metrics import count_acc, summarize, temporal_consistency, video_scores
    from ..options import parse_seeds
    from .benchmark import EvalItem, countbench_files, load_benchmark, toy_benchmark
    from .model_loading import load_model
    from .report import markdown_table, summarize_results, write_reports
    from .run import run_eval
    from .scoring import score_videos
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
