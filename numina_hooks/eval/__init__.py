"""Counting metrics (CountAcc, TC) and evaluation helpers."""

from .metrics import count_acc, summarize, temporal_consistency, video_scores

__all__ = ["count_acc", "temporal_consistency", "video_scores", "summarize"]
