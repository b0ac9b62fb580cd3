"""The multi-category synthetic attention scenes (benchmarks/synthetic_multi_scenes.py)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from synthetic_multi_scenes import MULTI_HEAD_TYPES, instance_margin, make_multi_scene

GRID = (15, 26)
EIGHT = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def scene():
    return make_multi_scene(4, GRID, n_frames=2, noise=0.25, seed=3)


def test_default_head_types():
    assert len(MULTI_HEAD_TYPES) == 12
    assert MULTI_HEAD_TYPES.count("instance") == 1


def test_shapes_dtypes_and_normalisation(scene):
    H, W = GRID
    assert scene.grid == GRID and len(scene.frames) == 2
    assert sorted(scene.head_types) == sorted(MULTI_HEAD_TYPES)
    for f in scene.frames:
        assert f.self_attn.shape == (12, H * W, H * W) and f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (12, H * W) and f.cross_attn.dtype == torch.float32
        assert f.labels.shape == (H, W) and f.labels.dtype == np.int32
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(12, H * W), atol=1e-4)
        assert (f.self_attn >= 0).all() and (f.cross_attn >= 0).all()


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_labels_hold_n_separate_connected_objects(n):
    sc = make_multi_scene(n, GRID, n_frames=3, seed=n + 11, head_types=("instance",))
    for f in sc.frames:
        assert f.count == n
        assert set(np.unique(f.labels)) == set(range(n + 1))
        for k in range(1, n + 1):
            m = f.labels == k
            assert ndimage.label(m)[1] == 1  # 4-connected
            others = (f.labels > 0) & ~m
            assert not (ndimage.binary_dilation(m, EIGHT) & others).any()  # never 8-touch


def test_count_zero_has_distractors_only():
    sc = make_multi_scene(0, GRID, seed=5, head_types=("category",))
    assert sc.frames[0].count == 0
    assert len(sc.layout.categories) >= 1 and "noun" not in sc.layout.categories


def test_deterministic_from_seed():
    a = make_multi_scene(3, GRID, seed=7, head_types=("instance", "category", "sink"))
    b = make_multi_scene(3, GRID, seed=7, head_types=("instance", "category", "sink"))
    c = make_multi_scene(3, GRID, seed=8, head_types=("instance", "category", "sink"))
    assert a.head_types == b.head_types
    assert torch.equal(a.frames[0].self_attn, b.frames[0].self_attn)
    assert torch.equal(a.frames[0].cross_attn, b.frames[0].cross_attn)
    assert np.array_equal(a.frames[0].labels, b.frames[0].labels)
    assert not np.array_equal(a.frames[0].labels, c.frames[0].labels)
    assert not torch.equal(a.frames[0].cross_attn, c.frames[0].cross_attn)


def test_shuffled_head_types_match_the_heads(scene):
    assert scene.head_types != MULTI_HEAD_TYPES  # seed 3 permutes the heads
    inst = scene.head_types.index("instance")
    own_i, other_i, _ = instance_margin(scene, head=inst)
    for h, t in enumerate(scene.head_types):
        if t == "category":
            own_c, other_c, _ = instance_margin(scene, head=h)
            assert own_i / other_i > 1.5 * own_c / other_c
    # the sink head puts much of its mass on the sink tokens; the diffuse head does not
    W = GRID[1]
    sinks = [y * W + x for y, x in scene.layout.sinks]
    A = scene.frames[0].self_attn
    sink_mass = A[:, :, sinks].sum(-1).mean(-1)
    for h, t in enumerate(scene.head_types):
        if t == "sink":
            assert sink_mass[h] > 0.3
        if t in ("diffuse", "instance", "category"):
            assert sink_mass[h] < 0.1


def test_unshuffled_keeps_order():
    types = ("sink", "instance", "part", "diffuse")
    sc = make_multi_scene(2, GRID, seed=1, head_types=types, shuffle_heads=False)
    assert sc.head_types == types and sc.frames[0].self_attn.shape[0] == 4


def test_cross_attention_prefers_noun_and_leaks_to_similar():
    found = 0
    for seed in range(40):
        sc = make_multi_scene(3, GRID, seed=seed, noise=0.25, head_types=("positional",))
        L = sc.layout
        if not {"similar", "dissimilar"} <= set(L.categories):
            continue
        c = sc.frames[0].cross_attn.mean(0).numpy().reshape(GRID)
        occ = L.masks[0].any(0)
        bg = float(np.median(c[~occ]))

        def strength(cat):
            return np.mean([c[L.masks[0, k]].mean() for k, cc in enumerate(L.categories)
                            if cc == cat]) - bg
        noun, sim, dis = strength("noun"), strength("similar"), strength("dissimilar")
        assert noun > 1.0 * bg and noun > 0
        assert noun > sim > dis
        assert 0.15 < sim / noun < 0.8
        found += 1
        if found == 3:
            break
    assert found == 3


def test_sizes_vary_within_frame():
    ratios = []
    for seed in range(6):
        L = make_multi_scene(5, (30, 52), seed=seed, head_types=("diffuse",)).layout
        sizes = L.masks[0, :5].sum((1, 2))
        assert sizes.min() >= 6
        ratios.append(sizes.max() / sizes.min())
    assert max(ratios) > 2.0


@pytest.mark.parametrize("kwargs, word", [
    (dict(n_instances=-1), "n_instances"),
    (dict(n_instances=9), "n_instances"),
    (dict(n_instances=2, head_types=("instance", "bogus")), "bogus"),
    (dict(n_instances=2, head_types=()), "head_types"),
    (dict(n_instances=2, grid=(5, 26)), "too small"),
    (dict(n_instances=2, noise=-1.0), "noise"),
    (dict(n_instances=2, n_frames=0), "n_frames"),
    (dict(n_instances=8, grid=(8, 8)), "do not fit"),
])
def test_bad_inputs_raise(kwargs, word):
    kwargs.setdefault("grid", GRID)
    with pytest.raises(ValueError, match=word):
        make_multi_scene(**kwargs)
