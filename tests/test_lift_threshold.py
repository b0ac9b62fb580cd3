"""A head's own lift threshold (``NuminaConfig.min_lift_null_factor``, ``partition.lift_threshold``):
what a diffuse head's objects keep is far under ``min_lift``, a share of a row; measured against
the same head's regions off the focus, they stand out."""

import dataclasses

import numpy as np
import pytest

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import layout_from_attention
from numina_hooks.numina.partition import MIN_NULL_REGIONS, lift_threshold
from synthetic_rope_scenes import make_rope_scene  # benchmarks/ (on sys.path via conftest.py)

#: index 0 unused (no region); regions 1-2 on the focus, 3-6 off it
ON_FOCUS = np.array([False, True, True, False, False, False, False])


def test_threshold_follows_the_heads_background_regions():
    lift = np.array([np.nan, 0.02, 0.004, 0.001, 0.002, 0.003, 0.0025])
    threshold = lift_threshold(ON_FOCUS, lift, 0.05, 2.0)
    assert threshold == pytest.approx(2.0 * np.percentile([0.001, 0.002, 0.003, 0.0025], 90))
    assert 0.004 < threshold < 0.02  # the object at 0.02 passes, the speck at 0.004 does not


def test_threshold_is_never_stricter_than_min_lift_nor_used_without_a_background():
    noisy = np.array([np.nan, 0.3, 0.2, 0.1, 0.12, 0.09, 0.11])  # a head whose background keeps a lot
    assert lift_threshold(ON_FOCUS, noisy, 0.05, 2.0) == 0.05
    few = np.array([np.nan, 0.02, 0.004, 0.001, np.nan, np.nan, np.nan])  # one measured off-focus region
    assert MIN_NULL_REGIONS > 1 and lift_threshold(ON_FOCUS, few, 0.05, 2.0) == 0.05
    flat = np.array([np.nan, 0.02, 0.004, -0.001, -0.002, -0.003, 0.0])  # nothing kept off the focus
    assert lift_threshold(ON_FOCUS, flat, 0.05, 2.0) == 0.05
    assert lift_threshold(ON_FOCUS, np.array([np.nan, 0.02, 0.004, 0.001, 0.002, 0.003, 0.0025]),
                          0.05, None) == 0.05


@pytest.mark.parametrize("seed", [900, 902])
def test_diffuse_heads_objects_are_counted_with_the_heads_own_threshold(seed):
    """A rope-family frame (3D rotary position terms, rows spread over the frame; noise 1.0):
    the instance head's objects keep 0.01-0.03 of a row beyond a moved copy, so ``min_lift``
    alone finds nothing, while the head's own threshold counts the three objects."""
    frame = make_rope_scene(3, (30, 52), noise=1.0, seed=seed).frames[0]
    assert frame.count == 3
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52)).count == 0
    own = dataclasses.replace(NuminaConfig(), min_lift_null_factor=2.0, min_member_lift=None)
    assert layout_from_attention(frame.self_attn, frame.cross_attn, (30, 52), own).count == 3


def test_the_factor_is_validated():
    for bad in (0, -1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="min_lift_null_factor"):
            NuminaConfig(min_lift_null_factor=bad)
    assert NuminaConfig(min_lift_null_factor=2.0).min_lift_null_factor == 2.0
