"""Objects too small for the edge cut, found on the noun map's bumps that no instance touches
(``NuminaConfig.unclaimed_peaks``, ``partition.unclaimed_peaks``), on hand-built maps with
known answers."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hand_built_maps import instance_head, noisy_heads, positional_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import cross_peaks, layout_from_attention, noun_focus, with_unclaimed
from numina_hooks.numina.partition import unclaimed_peaks

GRID = (15, 26)
N = GRID[0] * GRID[1]


def _objects() -> np.ndarray:
    """Two 4x4 objects and one of 3 patches: under ``min_region`` (4), no region holds it."""
    labels = np.zeros(GRID, dtype=np.int64)
    labels[3:7, 3:7] = 1
    labels[8:12, 12:16] = 2
    labels[4, 20:23] = 3
    return labels


def _bump(mask: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """A blurred bump over ``mask`` whose peak is 1."""
    b = gaussian_filter(mask.astype(np.float64), sigma)
    return b / b.max()


def _frame(labels: np.ndarray, clutter: np.ndarray | None = None, noise: float = 0.2, seed: int = 0):
    """Three heads (positional, instance, positional) with per-entry log-normal noise, and a
    cross map with one bump per object, each peaking at 1 (plus ``clutter``'s bump)."""
    heads = [positional_head(GRID, 0.8), instance_head(labels, 0.5), positional_head(GRID, 1.5)]
    sa = noisy_heads(heads, noise, seed)
    cross = sum(_bump(labels == k) for k in range(1, int(labels.max()) + 1)) + 0.02
    if clutter is not None:
        cross = cross + _bump(clutter)
    return sa, torch.from_numpy(np.stack([cross.reshape(-1)] * 3)).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_object_too_small_for_the_cut_is_counted_from_its_bump(seed):
    labels = _objects()
    sa, cross = _frame(labels, seed=seed)
    without = layout_from_attention(sa, cross, GRID, NuminaConfig(unclaimed_peaks=False), self_head=1)
    assert without.count == 2 and not (without.labels[labels == 3] > 0).any()
    layout = layout_from_attention(sa, cross, GRID, self_head=1)
    assert layout.count == 3
    small = layout.labels[labels == 3]
    assert (small > 0).all() and len(np.unique(small)) == 1
    for k in (1, 2):  # the two others keep one instance each, apart from the new one
        assert set(np.unique(layout.labels[labels == k])).isdisjoint(np.unique(small))


def test_a_clutter_bump_over_background_is_not_an_instance():
    labels = _objects()
    clutter = np.zeros(GRID, dtype=bool)
    clutter[11, 3:6] = True  # a bump of the map where the self-attention holds no object
    sa, cross = _frame(labels, clutter=clutter)
    layout = layout_from_attention(sa, cross, GRID, self_head=1)
    focus = noun_focus(cross.mean(0), GRID)
    peaks = cross_peaks(focus)
    assert peaks[clutter].all() and len(np.unique(peaks[clutter])) == 1  # the map shows it apart
    assert layout.count == 3 and not (layout.labels[clutter] > 0).any()


def test_no_instance_no_bump_counted():
    # a head with no instance keeps the noun at 0: an absent noun's map still has bumps
    labels = _objects()
    sa, cross = _frame(labels)
    focus = noun_focus(cross.mean(0), GRID)
    none = np.zeros(GRID, dtype=np.int32)
    out = with_unclaimed(none, focus, sa, 1, NuminaConfig(), np.zeros(N, dtype=bool))
    assert out.max() == 0
    # the function alone, given the same empty instances, would count the bumps
    assert unclaimed_peaks(none, cross_peaks(focus), sa, 1, min_lift=0.05, link_ratio=None,
                           sample=256).max() == 3


def test_a_bump_linked_to_an_instance_joins_it():
    # an instance covering the left part of an object; the map's second bump on its right
    # part touches no instance: it is the rest of that object (linked) and joins it
    labels = np.zeros(GRID, dtype=np.int64)
    labels[4:10, 4:16] = 1
    sa = torch.stack([instance_head(labels, 1.0), positional_head(GRID, 0.8)]).float()
    found = np.zeros(GRID, dtype=np.int32)
    found[4:10, 4:8] = 1
    peaks = np.zeros(GRID, dtype=np.int32)
    peaks[5:9, 11:15] = 1
    joined = unclaimed_peaks(found, peaks, sa, 0, min_lift=-1.0, link_ratio=0.75, sample=256)
    assert joined.max() == 1 and (joined[5:9, 11:15] == 1).all()
    apart = unclaimed_peaks(found, peaks, sa, 0, min_lift=-1.0, link_ratio=None, sample=256)
    assert apart.max() == 2
    # a bump that touches an instance is that instance's: nothing changes
    touching = peaks.copy()
    touching[5:9, 7:11] = 1
    same = unclaimed_peaks(found, touching, sa, 0, min_lift=-1.0, link_ratio=None, sample=256)
    assert np.array_equal(same, found)


def test_the_config_refuses_a_non_bool():
    with pytest.raises(ValueError, match="unclaimed_peaks=1 .*True or False"):
        NuminaConfig(unclaimed_peaks=1)


def test_bumps_of_another_shape_are_refused_with_both_shapes_named():
    labels = _objects()
    sa, _ = _frame(labels)
    with pytest.raises(ValueError, match=r"peaks has shape \(26, 15\); expected the instances' shape \(15, 26\)"):
        unclaimed_peaks(np.zeros(GRID, np.int32), np.zeros((26, 15), np.int32), sa, 1, min_lift=0.05,
                        link_ratio=None)
