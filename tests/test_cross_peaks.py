"""The fallback's layout split at the saddles of the noun's cross map (``layout.cross_peaks``,
``NuminaConfig.cross_peak_prominence``), on hand-built maps with known answers."""

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import (cross_components, cross_peaks, fallback_layout,
                                        layout_from_attention, map_bumps, noun_focus)

GRID = (20, 30)


def _blurred(weights: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return gaussian_filter(np.asarray(weights, dtype=np.float64), sigma) + 0.01


def _touching_pair() -> np.ndarray:
    """Two 4x4 objects one patch apart: blurred, their bumps meet above half the range."""
    labels = np.zeros(GRID, dtype=np.int64)
    labels[6:10, 6:10] = 1
    labels[6:10, 11:15] = 2
    return labels


def test_two_blurred_objects_merged_by_the_components_are_split_at_their_saddle():
    labels = _touching_pair()
    focus = noun_focus(_blurred(labels > 0), GRID)
    assert cross_components(focus).max() == 1  # one component at half the range
    peaks = cross_peaks(focus)
    assert peaks.dtype == np.int32 and peaks.max() == 2
    # each instance holds one object's centre, and the two are apart
    assert peaks[7, 7] > 0 and peaks[7, 13] > 0 and peaks[7, 7] != peaks[7, 13]
    for k in (1, 2):
        on = labels[peaks == k]
        assert np.bincount(on, minlength=3)[1:].max() >= 0.9 * (on > 0).sum()


def test_a_sharp_ripple_on_a_large_grid_is_smoothed_away():
    # one broad object on a 60x104 grid with a one-patch dip through its middle: unsmoothed
    # the dip is a saddle 0.2 of the range deep; smoothed by the default (one patch at 60
    # rows) it is not
    grid = (60, 104)
    broad = np.zeros(grid)
    broad[20:40, 30:70] = 1.0
    cross = gaussian_filter(broad, 2.0) + 0.01
    cross[:, 50] *= 0.7
    focus = noun_focus(cross, grid)
    assert cross_peaks(focus, NuminaConfig(cross_peak_sigma=0.0)).max() == 2
    assert cross_peaks(focus).max() == 1


def test_a_ripple_on_one_bump_does_not_split_it():
    rng = np.random.default_rng(0)
    broad = np.zeros(GRID)
    broad[4:14, 6:20] = 1.0
    cross = gaussian_filter(broad, 1.5) * (1 + 0.05 * rng.standard_normal(GRID)) + 0.01
    assert cross_peaks(noun_focus(cross, GRID)).max() == 1


def test_a_portrait_frame_reads_as_its_landscape_transpose():
    # two 3x3 objects one patch apart at Wan2.1-1.3B's 30x52: smoothed by the shorter side
    # (half a patch either way) their saddle stays; smoothed by a portrait frame's height
    # (52 rows: 0.87 of a patch) it would fill and the pair would read as one
    grid = (30, 52)
    w = np.zeros(grid)
    w[12:15, 20:23] = 1.0
    w[12:15, 24:27] = 1.0
    cross = gaussian_filter(w, 1.0) + 0.01
    landscape = cross_peaks(noun_focus(cross, grid))
    portrait = cross_peaks(noun_focus(np.ascontiguousarray(cross.T), grid[::-1]))
    assert landscape.max() == 2
    assert portrait.max() == 2
    np.testing.assert_array_equal(portrait > 0, landscape.T > 0)
    by_height = NuminaConfig(cross_peak_sigma=(52 / 30) / 60)  # what the height would give
    assert cross_peaks(noun_focus(cross, grid), by_height).max() == 1


@pytest.mark.parametrize("weak,counted", [(0.6, True), (0.4, False)])
def test_a_bump_alone_counts_when_it_rises_enough_above_the_base(weak, counted):
    w = np.zeros(GRID)
    w[3:7, 3:7] = 1.0
    w[13:17, 20:24] = weak  # far from the other: the two never meet above the base
    focus = noun_focus(_blurred(w), GRID)
    assert cross_peaks(focus).max() == (2 if counted else 1)
    assert cross_components(focus).max() == cross_peaks(focus).max()  # alone: the same cut


def test_flat_maps_size_floor_and_the_switch_back_to_plain_components():
    assert cross_peaks(noun_focus(np.full(GRID, 0.2), GRID)).max() == 0
    focus = noun_focus(_blurred(_touching_pair() > 0), GRID)
    assert cross_peaks(focus, NuminaConfig(cross_fallback_min_size=100)).max() == 0
    plain = NuminaConfig(cross_peak_prominence=None)
    np.testing.assert_array_equal(fallback_layout(focus, plain), cross_components(focus, plain))
    np.testing.assert_array_equal(fallback_layout(focus), cross_peaks(focus))
    # a prominence above the saddle's depth keeps the pair together
    assert cross_peaks(focus, NuminaConfig(cross_peak_prominence=0.6)).max() == 1


@pytest.mark.parametrize("field,value", [("cross_peak_prominence", 0.0), ("cross_peak_prominence", 1.0),
                                         ("cross_peak_base", 1.0), ("cross_peak_base", -0.1),
                                         ("cross_peak_base", None), ("cross_peak_sigma", -0.5),
                                         ("cross_peak_sigma", float("inf"))])
def test_bad_values_are_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(NuminaConfig(), **{field: value})


def test_a_frame_without_instance_structure_reads_the_touching_pair_as_two():
    # positional and diffuse heads only (seed 0: one positional head has pieces on the focus,
    # which do not stand out of its background): the layout falls back to the cross map,
    # whose two touching objects are one component at half its range and two peaks
    from test_cross_fallback import _cross_of, _positional_of, _self_attention

    labels = _touching_pair()
    sa, cross = _self_attention(_positional_of(1.1), seed=0), _cross_of(labels > 0)
    got = layout_from_attention(sa, cross, GRID, NuminaConfig())
    assert got.from_cross and got.count == 2
    for k in (1, 2):  # one instance on each object
        found = np.unique(got.labels[labels == k])
        assert len(found[found > 0]) == 1
    before = layout_from_attention(sa, cross, GRID, NuminaConfig(cross_peak_prominence=None))
    assert before.from_cross and before.count == 1


def test_plain_components_setting_reads_a_frame_whose_self_attention_finds_the_objects():
    # cross_peak_prominence=None (the map's plain components) is a valid setting: step 5c,
    # which looks for objects on the map's bumps no instance touches, must read the bumps the
    # same way instead of calling cross_peaks with no prominence (a TypeError before)
    from synthetic_scenes import make_scene  # benchmarks/ (on sys.path via conftest.py)

    scene = make_scene(3, (15, 26), n_frames=1, noise=0.25, seed=3)
    frame = scene.frames[0]
    plain = NuminaConfig(cross_peak_prominence=None)
    got = layout_from_attention(frame.self_attn, frame.cross_attn, (15, 26), plain)
    assert not got.from_cross and got.count == 3
    assert map_bumps(noun_focus(frame.cross_attn.mean(0), (15, 26)), plain).max() == \
        cross_components(noun_focus(frame.cross_attn.mean(0), (15, 26)), plain).max()
