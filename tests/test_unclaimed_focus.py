"""Objects too large for the edge cut, found in the focus the instances leave unclaimed
(``NuminaConfig.unclaimed_min_lift``, ``partition.unclaimed_instances``), on hand-built maps
with known answers."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hand_built_maps import instance_head, noisy_heads, positional_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import layout_from_attention
from numina_hooks.numina.partition import _sink_keys, unclaimed_instances

GRID = (20, 30)
N = GRID[0] * GRID[1]


def _positional_of(sigma: float) -> torch.Tensor:
    return positional_head(GRID, sigma)


def _frame(labels: np.ndarray, cross_extra: np.ndarray | None = None, noise: float = 0.3, seed: int = 0):
    """Five heads (positional, diffuse, instance, positional, class-level) with per-entry
    log-normal noise, and a blurry cross map over the objects (plus ``cross_extra``)."""
    heads = [_positional_of(0.8), torch.full((N, N), 1.0 / N, dtype=torch.float64), instance_head(labels, 0.35),
             _positional_of(0.8), instance_head((labels > 0).astype(np.int64), 0.35)]
    sa = noisy_heads(heads, noise, seed)
    cross = gaussian_filter((labels > 0).astype(np.float64), 1.0) + 0.01
    if cross_extra is not None:
        cross = cross + cross_extra
    return sa, torch.from_numpy(np.stack([cross.reshape(-1)] * 5)).float()


def _big_and_small() -> np.ndarray:
    labels = np.zeros(GRID, dtype=np.int64)
    labels[3:17, 3:17] = 1  # 196 patches: a third of the frame
    labels[8:12, 22:26] = 2  # 16 patches
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_object_too_large_for_the_cut_is_counted_from_the_unclaimed_focus(seed):
    labels = _big_and_small()
    sa, cross = _frame(labels, seed=seed)
    # the instance head given (head choice aside): the cut breaks the large object into
    # splinters that are no instance, so without the step it is not counted
    without = layout_from_attention(sa, cross, GRID, NuminaConfig(unclaimed_min_lift=None), self_head=2)
    assert without.count == 1 and (without.labels[labels == 1] > 0).mean() < 0.1
    layout = layout_from_attention(sa, cross, GRID, self_head=2)
    assert layout.count == 2
    big = layout.labels[labels == 1]
    assert (big > 0).mean() >= 0.9 and len(np.unique(big[big > 0])) == 1  # one instance covers it
    small = layout.labels[labels == 2]
    assert (small > 0).all() and set(np.unique(small)).isdisjoint(np.unique(big))


def test_the_default_chooses_the_instance_head_and_counts_the_large_object():
    labels = _big_and_small()
    layout = layout_from_attention(*_frame(labels, seed=0), GRID)
    assert layout.self_head == 2 and layout.count == 2
    assert (layout.labels[labels == 1] > 0).mean() >= 0.9


def test_background_left_in_the_focus_is_not_an_instance():
    # one small object, and a clutter bump of the cross map over plain background: the
    # left-over focus there keeps no more attention than a moved copy of itself
    labels = np.zeros(GRID, dtype=np.int64)
    labels[8:12, 4:8] = 1
    clutter = np.zeros(GRID)
    clutter[4:16, 14:27] = 1.0
    clutter = gaussian_filter(clutter, 1.0)
    sa, cross = _frame(labels, cross_extra=clutter)
    layout = layout_from_attention(sa, cross, GRID, self_head=2)
    assert layout.focus[clutter > 0.5].mean() > 0.9  # the clutter is in the focus, left over
    assert (layout.labels[labels == 1] > 0).any() and not (layout.labels[clutter > 0.5] > 0).any()
    # with ``min_lift`` alone the count is exact; the head's own threshold (the default) also
    # counts an 11-patch background region beside the clutter whose lift (0.036, the object's
    # 0.06) exceeds every null lift of this frame's noise (docs/method.md)
    row_share = NuminaConfig(min_lift_null_factor=None, min_member_lift=0.005)
    assert layout_from_attention(sa, cross, GRID, row_share, self_head=2).count == 1


def test_the_rest_of_a_counted_object_joins_its_instance():
    # an instance covering the left third of an object: the rest, left over in the focus
    # (accepted whatever its lift, min_lift=-1: the link alone is tested), is linked to it
    # and joins it instead of counting as a second object
    labels = np.zeros(GRID, dtype=np.int64)
    labels[3:17, 5:25] = 1
    sa = torch.stack([instance_head(labels, 1.0), _positional_of(0.8)]).float()  # rows spread over the whole object
    found = np.zeros(GRID, dtype=np.int32)
    found[3:17, 5:11] = 1
    focus = labels > 0
    joined = unclaimed_instances(found, focus, sa, 0, min_size=16, min_lift=-1.0, link_ratio=0.75)
    assert joined.max() == 1 and (joined[labels == 1] > 0).mean() >= 0.9
    apart = unclaimed_instances(found, focus, sa, 0, min_size=16, min_lift=-1.0, link_ratio=None)
    assert apart.max() == 2
    # a left-over smaller than min_size is halo: nothing changes
    same = unclaimed_instances(found, focus, sa, 0, min_size=10_000, min_lift=-1.0, link_ratio=0.75)
    assert np.array_equal(same, found)


def test_a_left_over_component_holding_an_attention_sink_is_not_an_instance():
    # every row of the head sends a third of its attention to one background key inside the
    # left-over focus: the component keeps that attention because of the sink, not an object
    labels = np.zeros(GRID, dtype=np.int64)
    labels[8:12, 4:8] = 1
    head = _positional_of(1.0).clone()
    sink = 10 * GRID[1] + 20
    head = 0.67 * head
    head[:, sink] += 0.33
    sa = torch.stack([head, _positional_of(0.8)]).float()
    found = np.zeros(GRID, dtype=np.int32)
    found[8:12, 4:8] = 1
    focus = np.zeros(GRID, dtype=bool)
    focus[8:12, 4:8] = True
    focus[6:15, 16:25] = True  # 81 patches of background around the sink key
    kept = unclaimed_instances(found, focus, sa, 0, min_size=16, min_lift=0.05, link_ratio=None, sample=256)
    assert kept.max() == 2  # without the sink check the sink's surroundings pass as an object
    refused = unclaimed_instances(found, focus, sa, 0, min_size=16, min_lift=0.05, link_ratio=None, sample=256,
                                  sink_keys=_sink_keys(sa, 0.05)[0])
    assert np.array_equal(refused, found)
