"""The local region tests of the noun's focus (``focus.py``): specks the density clustering
drops, and a region brighter than its ring, on hand-built maps with known answers."""

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.focus import FocusUnion, _inner_and_ring_means, heads_hits, region_hits
from numina_hooks.numina.layout import layout_from_attention, noun_focus
from test_identify_v2 import _instance_head, _local

GRID = (10, 16)
#: (top, left) of 3x3 objects, at least one patch apart
OBJECTS = [(1, 1), (1, 6), (1, 11), (6, 1), (6, 6), (6, 11)]


def _labels(corners, size=(3, 3)):
    labels = np.zeros(GRID, dtype=np.int64)
    for k, (y, x) in enumerate(corners, start=1):
        labels[y:y + size[0], x:x + size[1]] = k
    return labels


def _self_attention(labels):
    """A positional head, an instance head (index 1) and a diffuse one."""
    n = GRID[0] * GRID[1]
    heads = [_local(GRID, 0.8), _instance_head(labels, GRID),
             torch.full((n, n), 1.0 / n, dtype=torch.float64)]
    return torch.stack(heads).float()


def _cross(labels, levels, heads=3):
    """The noun's map: ``levels[k - 1]`` on object k (no blur), 0.01 elsewhere."""
    m = np.full(GRID, 0.01)
    for k, level in enumerate(levels, start=1):
        m[labels == k] += level
    return torch.from_numpy(np.stack([m.reshape(-1)] * heads)).float()


def test_ring_means_match_a_dilation_reference():
    rng = np.random.default_rng(0)
    regions = rng.integers(0, 5, size=(7, 9))
    cross = rng.random((7, 9))
    inner, ring = _inner_and_ring_means(regions, cross, 4)
    for r in range(1, 5):
        m = regions == r
        around = binary_dilation(m) & ~m  # 4-neighbours (scipy's default structure)
        assert inner[r] == pytest.approx(cross[m].mean())
        assert ring[r] == pytest.approx(cross[around].mean())


def test_a_weak_object_in_a_crowd_is_counted():
    # five objects of the noun; the fifth's cross-attention is 8% of the others': below the
    # frame-wide threshold (median + 0.1 of the range) but clearly above its surroundings
    labels = _labels(OBJECTS[:5])
    sa, cross = _self_attention(labels), _cross(labels, [1.0, 1.0, 1.0, 1.0, 0.08])
    default = layout_from_attention(sa, cross, GRID)
    overlap_only = layout_from_attention(sa, cross, GRID, NuminaConfig(focus_contrast=None))
    assert default.self_head == 1 and default.count == 5
    assert overlap_only.count == 4
    assert not default.focus[labels == 5].any()  # the focus mask itself is unchanged


def test_another_objects_flat_cross_attention_is_not_counted():
    # object 6 is separated by the instance head like the others, but this noun's map is at
    # the background's level there (another noun's object): no contrast, no instance
    labels = _labels(OBJECTS)
    sa, cross = _self_attention(labels), _cross(labels, [1.0, 1.0, 1.0, 1.0, 0.08, 0.0])
    layout = layout_from_attention(sa, cross, GRID)
    assert layout.count == 5
    assert not layout.labels[labels == 6].any()
    # nor does a bar of 0.1 of the range take the weak one
    assert layout_from_attention(sa, cross, GRID, NuminaConfig(focus_contrast=0.1)).count == 4


def test_specks_the_clustering_drops_count_on_a_region():
    # object 3's bump reaches the threshold in two pixels only: too few for the density
    # clustering (3 within 1.5 patches), a third of the 2x3 object for the overlap test
    labels = _labels(OBJECTS[:3], size=(2, 3))
    cross = _cross(labels, [1.0, 1.0, 0.02])
    flat = cross[0].reshape(GRID).clone()
    flat[1, 11] = flat[1, 12] = 0.6
    cross = torch.stack([flat.reshape(-1)] * 3)
    sa = _self_attention(labels)
    # step 5c's shape-matched null off too: it finds the speck object's bump on its own (3)
    without = NuminaConfig(focus_contrast=None, focus_specks=False, unclaimed_peak_null_z=None)
    assert layout_from_attention(sa, cross, GRID, without).count == 2
    assert layout_from_attention(sa, cross, GRID, NuminaConfig(focus_contrast=None)).count == 3


def test_union_of_nouns_and_plain_masks():
    labels = _labels(OBJECTS[:2])
    cfg = NuminaConfig()
    a = noun_focus(_cross(labels, [1.0, 0.0])[0], GRID, cfg)
    b = noun_focus(_cross(labels, [0.0, 1.0])[0], GRID, cfg)
    assert region_hits(labels, a, 0.2).tolist() == [False, True, False]
    assert region_hits(labels, a | b, 0.2).tolist() == [False, True, True]
    assert isinstance(a | b, FocusUnion) and ((a | b).mask == (a.mask | b.mask)).all()
    # a plain bool mask: the overlap test alone
    assert region_hits(labels, labels == 2, 0.2).tolist() == [False, False, True]


def test_config_checks_and_paper_preset():
    with pytest.raises(ValueError, match="focus_contrast"):
        NuminaConfig(focus_contrast=-0.1)
    with pytest.raises(ValueError, match="focus_specks"):
        NuminaConfig(focus_specks="yes")
    paper = NuminaConfig.paper()
    assert paper.focus_specks is False and paper.focus_contrast is None


def test_all_heads_at_once_equal_one_head_at_a_time():
    rng = np.random.default_rng(1)
    regions = rng.integers(0, 6, size=(4, *GRID)).astype(np.int32)
    regions[2] = 0  # a head without regions
    labels = _labels(OBJECTS[:4])
    cross = _cross(labels, [1.0, 0.5, 0.08, 0.0])[0]
    together = heads_hits(regions, noun_focus(cross, GRID, NuminaConfig()), 0.2)
    for k in range(regions.shape[0]):
        alone = noun_focus(cross, GRID, NuminaConfig()).region_hits(regions[k], 0.2)
        assert together[k].tolist() == alone.tolist()
        inner, ring = _inner_and_ring_means(regions[k], cross.reshape(GRID).double().numpy(), 5)
        focus = noun_focus(cross, GRID, NuminaConfig())
        expect = [False] + [bool((focus.mask | focus.bright)[regions[k] == r].mean() >= 0.2
                                 or inner[r] - ring[r] > 0.05 * focus.spread)
                            if (regions[k] == r).any() else False for r in range(1, 6)]
        assert alone.tolist() == expect[:len(alone)]


def test_phase_one_rule_for_several_nouns_counts_the_weak_object():
    # phase 1's rule (read_nouns): the head chosen on the union of the nouns' focus, each
    # noun's instances on its own focus; the second noun's map is flat (nothing of it on
    # screen), and it takes none of the first noun's objects
    from numina_hooks.numina.identify import read_nouns
    from numina_hooks.numina.layout import partition_options, self_attention_source
    from numina_hooks.numina.partition import partition_heads

    cfg = NuminaConfig()
    labels = _labels(OBJECTS[:5])
    source = self_attention_source(_self_attention(labels), cfg)
    parts = partition_heads(source, GRID, **partition_options(cfg))
    maps = {"cat": _cross(labels, [1.0, 1.0, 1.0, 1.0, 0.08])[0], "dog": torch.full((GRID[0] * GRID[1],), 0.01)}
    focus = {noun: noun_focus(m, GRID, cfg) for noun, m in maps.items()}
    read = read_nouns(parts, focus, {noun: m.reshape(GRID).numpy() for noun, m in maps.items()}, cfg,
                      source=source)
    found = {noun: r.labels for noun, r in read.items()}
    assert read["cat"].head == 1 and not read["cat"].from_cross
    assert read["dog"].head == 1
    assert int(found["cat"].max()) == 5 and int(found["dog"].max()) == 0
