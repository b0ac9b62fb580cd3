"""Counting metrics (CountAcc, TC) and evaluation helpers.

The CountBench runner (``numina eval``, docs/eval.md): :func:`run_eval` /
:func:`score_videos` in ``runner``, the strategies in ``strategies``, counters
(GroundingDINO, OWLv2, the toy world's exact counter) in ``detectors``, the CLIP score in
``clip_score`` and the summary, table and plot in ``report``.
"""

from .metrics import count_acc, summarize, temporal_consistency, video_scores
from .clip_score import ClipScorer
from .detectors import Counter, ToyCounter, ZeroShotDetector, make_counter
from .report import markdown_table, summarize_results, write_reports
from .runner import EvalItem, load_benchmark, load_model, parse_seeds, run_eval, score_videos, toy_benchmark
from .strategies import BASE_STRATEGIES, EvalModel, PromptSession, run_strategy, score_counts

__all__ = [
    "count_acc", "temporal_consistency", "video_scores", "summarize",
    "ClipScorer", "Counter", "ToyCounter", "ZeroShotDetector", "make_counter",
    "EvalItem", "load_benchmark", "toy_benchmark", "parse_seeds", "load_model", "run_eval", "score_videos",
    "BASE_STRATEGIES", "EvalModel", "PromptSession", "run_strategy", "score_counts",
    "markdown_table", "summarize_results", "write_reports",
]
