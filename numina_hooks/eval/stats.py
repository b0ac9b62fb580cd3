"""Uncertainty of a comparison between two methods scored on the same items.

:func:`paired_bootstrap` resamples *items* (prompt-seed pairs, benchmark lines) with
replacement and keeps each item's two scores together, so the interval reflects how much
the difference depends on which items happened to be in the sample. It is the interval
``numina demo`` prints for the CountAcc difference NUMINA - plain, and the one to use for
any end-to-end comparison of two strategies on a common item set.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``b - a`` over items and its percentile bootstrap interval.

    Args:
        a: per-item scores of the reference method (e.g. plain), length N >= 1.
        b: per-item scores of the compared method on the same items, in the same order.
        n_boot: bootstrap resamples (each draws N items with replacement).
        seed: seed of the resampling (the interval is reproducible).
        confidence: coverage of the interval (0.95 -> the 2.5 and 97.5 percentiles).

    Returns:
        ``(mean_diff, lo, hi)``: the observed mean of ``b - a`` and the interval's ends.
        With N = 1 (or identical differences) the interval collapses to the mean: one item
        says nothing about the spread, so quote N alongside the interval.

    Raises:
        ValueError: different lengths, no items, non-finite scores, n_boot < 1, or a
            confidence outside (0, 1).
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: a has {x.size} scores but b has {y.size}; "
                         "both must score the same items in the same order")
    if x.size == 0:
        raise ValueError("paired_bootstrap: no items to compare (a and b are empty)")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired_bootstrap: scores must be finite numbers (found NaN or inf)")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"paired_bootstrap: n_boot={n_boot!r}: expected an int >= 1 (e.g. 10000)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_bootstrap: confidence={confidence!r}: expected a number in (0, 1), e.g. 0.95")
    diff = y - x
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    chunk = max(1, 2_000_000 // diff.size)  # resamples per batch: memory stays ~16 MB for any N
    for start in range(0, int(n_boot), chunk):
        stop = min(int(n_boot), start + chunk)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(diff.mean()), float(lo), float(hi)
