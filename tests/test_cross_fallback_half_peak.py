"""The fallback's layout also read at half the noun map's peak (``layout.half_peak_components``,
``NuminaConfig.cross_fallback_half_peak``): the reading with more instances is kept. Hand-built
maps with known answers."""

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import cross_peaks, fallback_layout, half_peak_components, noun_focus

GRID = (20, 30)


def _map(peaks: list[tuple[int, int, float]], floor: float, sigma: float = 1.2) -> np.ndarray:
    """A blurred map: a bump of height ``h`` (above ``floor``) at each ``(y, x, h)``."""
    m = np.zeros(GRID)
    for y, x, h in peaks:
        dot = np.zeros(GRID)
        dot[y, x] = 1.0
        dot = gaussian_filter(dot, sigma)
        m += h * dot / dot.max()
    return m + floor


def _count(labels: np.ndarray) -> int:
    return int(labels.max())


def test_a_faint_bump_on_a_high_floor_is_counted_by_the_half_peak_cut():
    # two strong bumps reach 1.0, a faint one 0.62; the floor is 0.4. The saddle split needs a
    # lone bump at half the range above the floor (0.7): it sees two. Half the peak is 0.5:
    # three bumps stand over it, and the background does not.
    m = _map([(5, 6, 0.6), (14, 8, 0.6), (9, 22, 0.22)], floor=0.4)
    focus = noun_focus(m, GRID)
    assert _count(cross_peaks(focus)) == 2
    assert _count(half_peak_components(focus)) == 3
    labels = fallback_layout(focus)
    assert _count(labels) == 3
    assert labels[9, 22] > 0 and labels[5, 6] > 0 and labels[14, 8] > 0
    off = fallback_layout(focus, NuminaConfig(cross_fallback_half_peak=False))
    assert _count(off) == 2 and off[9, 22] == 0


def test_two_bumps_merged_above_half_the_peak_keep_the_saddle_split():
    # on a floor of 0 two bumps five patches apart merge above half the peak: one component
    # there, two at the saddle. The reading with more instances is the saddle split.
    m = _map([(9, 12, 1.0), (9, 17, 0.9)], floor=0.0, sigma=1.5)
    focus = noun_focus(m, GRID)
    assert _count(half_peak_components(focus)) == 1
    peaks = cross_peaks(focus)
    assert _count(peaks) == 2
    assert np.array_equal(fallback_layout(focus), peaks)


def test_components_under_the_size_floor_are_dropped_and_flat_maps_give_nothing():
    m = np.full(GRID, 0.1)
    m[3, 3] = 1.0  # one patch over half the peak: under cross_fallback_min_size (2)
    m[10:12, 10:12] = 0.9
    labels = half_peak_components(noun_focus(m, GRID))
    assert _count(labels) == 1 and labels[3, 3] == 0 and (labels[10:12, 10:12] == 1).all()
    flat = noun_focus(np.zeros(GRID), GRID)
    assert _count(half_peak_components(flat)) == 0
    assert _count(fallback_layout(flat)) == 0


def test_the_paper_preset_leaves_it_off_and_bad_values_are_refused():
    assert NuminaConfig().cross_fallback_half_peak is True
    assert NuminaConfig.paper().cross_fallback_half_peak is False
    for bad in (1, "yes", None):
        with pytest.raises(ValueError, match=r"cross_fallback_half_peak=.*True or False"):
            NuminaConfig(cross_fallback_half_peak=bad)
    assert dataclasses.replace(NuminaConfig(), cross_fallback_half_peak=False).cross_fallback_half_peak is False
