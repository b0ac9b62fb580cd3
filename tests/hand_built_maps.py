"""Hand-built self-attention heads with known group affinities, shared by the linking tests."""

import math

import numpy as np
import torch

from numina_hooks.numina.partition import _as_source


def group_head(groups: list, logd, n: int):
    """One head ``[1, n, n]`` as a source of entries (``partition._as_source``): rows of the
    pixel group ``groups[i]`` (flat indices) attend with density ``exp(logd[i][j]) / n`` to
    group j; the rest of each of those rows is spread over the other keys, and every other
    row is uniform. Returns ``(source, groups)``."""
    logd = np.asarray(logd, dtype=np.float64)
    a = np.full((n, n), np.nan)
    for i, gi in enumerate(groups):
        for j, gj in enumerate(groups):
            a[np.ix_(gi, gj)] = math.exp(logd[i, j]) / n
    rows = set(np.concatenate(groups).tolist())
    for r in range(n):
        if r in rows:
            free = np.isnan(a[r])
            a[r, free] = (1.0 - np.nansum(a[r])) / free.sum()
        else:
            a[r] = 1.0 / n
    assert np.allclose(a.sum(1), 1.0) and (a > 0).all()
    return _as_source(torch.from_numpy(a[None]).float()), groups
