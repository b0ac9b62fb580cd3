"""``peak_ratio`` as documented: the focus is the pixels at or above median + peak_ratio * (peak - median)."""

import numpy as np
import pytest

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import focus_mask


def _map_with_block(level_inside: float, probe: float) -> np.ndarray:
    """A 10 x 10 cross map: clutter at 0.5 (the median), a 3 x 3 object at 1.0, a 3 x 3 patch at ``probe``."""
    c = np.full((10, 10), 0.5)
    c[1:4, 1:4] = level_inside
    c[6:9, 6:9] = probe
    return c


@pytest.mark.parametrize("probe, in_focus", [(0.56, True), (0.54, False)])
def test_threshold_is_taken_above_the_median(probe, in_focus):
    cfg = NuminaConfig(peak_ratio=0.1)  # threshold 0.5 + 0.1 * (1.0 - 0.5) = 0.55
    mask = focus_mask(_map_with_block(1.0, probe), (10, 10), cfg)
    assert mask[1:4, 1:4].all()
    assert bool(mask[6:9, 6:9].all()) is in_focus and not mask[6:9, 6:9].any() is in_focus
    # the clutter itself is never focus, although it is far above peak_ratio * peak = 0.1
    assert not mask[0].any() and not mask[:, 0].any()
