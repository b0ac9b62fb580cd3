"""Percentiles of the short arrays the layout reads many times a frame.

``np.percentile`` spends most of its time on argument handling when the array holds a
few dozen values (a head's null lifts: about 90 us a call, called 15-35 times a frame at
30x52). ``percentile`` gives the same float, bit for bit (numpy's default "linear" method,
its interpolation included), from one sort.
"""
from __future__ import annotations

import math

import numpy as np


def percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` for a non-empty 1-D array of finite floats and
    ``q`` in [0, 100]; ``ValueError`` for an empty array (numpy raises an ``IndexError``)."""
    if len(values) == 0:
        raise ValueError("percentile of an empty array: expected at least one value")
    v = np.sort(np.asarray(values, dtype=np.float64))
    last = len(v) - 1
    virtual = last * (q / 100)  # numpy: (n - 1) * quantile
    lo = math.floor(virtual)
    if virtual >= last:  # numpy clips both neighbours to the last value
        return float(v[last])
    t = virtual - lo
    a, b = v[lo], v[lo + 1]
    d = b - a
    # numpy's lerp: from the lower value below t = 0.5, from the upper one at and above it
    return float(b - d * (1 - t)) if t >= 0.5 else float(a + d * t)


def median(values) -> float:
    """``float(np.median(values))`` for a non-empty 1-D sequence of finite floats (numpy's
    mean of the two middle values when their number is even)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) == 0:
        raise ValueError("median of an empty sequence: expected at least one value")
    half = len(v) // 2
    return float(v[half]) if len(v) % 2 else float((v[half - 1] + v[half]) / 2)
