"""The counting metrics, CountAcc and TC, under their older path.

They live in :mod:`numina_hooks.metrics` (a leaf module, so that the toy package can score
videos without importing ``eval``); this module re-exports them.
"""

from ..metrics import count_acc, summarize, temporal_consistency, video_scores

__all__ = ["count_acc", "temporal_consistency", "video_scores", "summarize"]
