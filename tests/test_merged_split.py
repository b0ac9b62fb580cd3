"""Step 5d (``NuminaConfig.merged_split_ratio``, ``split.split_merged_instances``): an
instance holding two bumps of the noun's map is split where the head keeps the bumps' parts
apart, and left whole where they attend to each other; hand-built maps with known answers."""

import dataclasses

import numpy as np
import pytest
import torch

from numina_hooks.numina import identify
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.split import bump_peaks, split_merged_instances

H, W = 8, 12
N = H * W


def _objects():
    """Two touching 4x4 objects, side by side."""
    a = np.zeros((H, W), dtype=bool)
    a[2:6, 2:6] = True
    b = np.zeros((H, W), dtype=bool)
    b[2:6, 6:10] = True
    return a, b


def _head(across: float, seed: int = 0) -> torch.Tensor:
    """``[1, N, N]``: each object's rows attend with weight 50 to their own object and
    ``across`` to the other; every other entry 1; light log-normal noise; rows summing to 1."""
    a, b = (m.reshape(-1) for m in _objects())
    rows = np.ones((N, N))
    rows[np.ix_(a, a)] = 50.0
    rows[np.ix_(b, b)] = 50.0
    rows[np.ix_(a, b)] = across
    rows[np.ix_(b, a)] = across
    rows *= np.exp(0.1 * np.random.default_rng(seed).standard_normal((N, N)))
    return torch.from_numpy(rows / rows.sum(1, keepdims=True))[None].float()


def _merged_and_bumps():
    """One instance over both objects; the map's two bumps, one on each, with their peaks."""
    a, b = _objects()
    labels = (a | b).astype(np.int32)
    bumps = np.zeros((H, W), dtype=np.int32)
    bumps[3:5, 3:5] = 1
    bumps[3:5, 7:9] = 2
    cross = np.where(bumps > 0, 1.0, 0.1)
    cross[3, 4] = cross[4, 7] = 2.0
    return labels, bumps, cross


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_touching_objects_the_head_keeps_apart_are_split(seed):
    labels, bumps, cross = _merged_and_bumps()
    out = split_merged_instances(labels, bumps, cross, _head(across=1.0, seed=seed), 0, 0.5)
    a, b = _objects()
    assert out.max() == 2
    assert (out[a] == 1).all() and (out[b] == 2).all()  # each object one instance, cut at the seam
    assert (out[~(a | b)] == 0).all()


def test_parts_that_attend_to_each_other_stay_one_instance():
    # a class-level head (or one object with two bright spots): the parts are one object
    labels, bumps, cross = _merged_and_bumps()
    out = split_merged_instances(labels, bumps, cross, _head(across=50.0), 0, 0.5)
    np.testing.assert_array_equal(out, labels)


def test_an_instance_with_one_bump_or_a_tiny_part_is_left_whole():
    labels, bumps, cross = _merged_and_bumps()
    sa = _head(across=1.0)
    one = np.where(bumps == 2, 0, bumps)
    np.testing.assert_array_equal(split_merged_instances(labels, one, cross, sa, 0, 0.5), labels)
    # the second bump's part would be one patch: no object
    bumps_tiny = labels.copy()
    bumps_tiny[2, 9] = 2
    np.testing.assert_array_equal(split_merged_instances(labels, bumps_tiny, cross, sa, 0, 0.5, min_size=2),
                                  labels)


def test_bump_peaks_are_each_bumps_highest_pixel():
    _, bumps, cross = _merged_and_bumps()
    assert bump_peaks(bumps, cross).tolist() == [3 * W + 4, 4 * W + 7]


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan")])
def test_the_config_refuses_a_ratio_out_of_range(bad):
    with pytest.raises(ValueError, match="merged_split_ratio"):
        NuminaConfig(merged_split_ratio=bad)


def test_the_ratio_reaches_phase_1s_rule(monkeypatch):
    # the default path (``read_nouns``) calls the step with the config's ratio and keeps
    # what it returns; off (None) it is never called
    from tests.test_shape_null import GRID, N as N_SCENE, _head as scene_head, _scene

    objects = _scene()
    flat = torch.full((N_SCENE, N_SCENE), 1.0 / N_SCENE)
    sa = torch.stack([flat, scene_head(objects, small_share=0.5)[0], flat])
    cross = np.full(GRID, 0.02)
    cross[objects > 0] = 1.0
    cross = torch.from_numpy(np.stack([cross.reshape(-1)] * 3)).float()
    calls = []

    def spy(labels, bumps, cross_map, source, head, ratio, **kw):
        calls.append(ratio)
        return np.where(labels > 0, 1, 0).astype(np.int32)  # every instance joined: one

    monkeypatch.setattr(identify, "split_merged_instances", spy)
    from numina_hooks.numina.layout import layout_from_attention

    off = layout_from_attention(sa, cross, GRID, NuminaConfig())
    assert calls == [] and off.count == 2
    on = layout_from_attention(sa, cross, GRID, dataclasses.replace(NuminaConfig(), merged_split_ratio=0.4))
    assert calls == [0.4] and on.count == 1
