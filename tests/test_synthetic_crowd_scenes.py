"""Checks of the crowd synthetic scene family (benchmarks/synthetic_crowd_scenes.py)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from synthetic_crowd_scenes import (  # benchmarks/ (on sys.path via conftest.py)
    CROWD_HEAD_TYPES,
    crowd_head_types,
    make_crowd_scene,
    separation_ratio,
)

torch.set_num_threads(1)

GRID = (15, 26)
FOUR = ndimage.generate_binary_structure(2, 1)


def test_head_types_have_exactly_one_instance_head():
    assert len(CROWD_HEAD_TYPES) == 12 and len(set(CROWD_HEAD_TYPES)) == 12
    assert CROWD_HEAD_TYPES.count("instance") == 1


@pytest.mark.parametrize("n", [3, 8])
def test_maps_are_probabilities_and_labels_are_valid_objects(n):
    sc = make_crowd_scene(n, GRID, n_frames=2, noise=1.0, seed=3)
    H, W = GRID
    nh = len(sc.head_types)
    assert sc.grid == GRID and sc.noise == 1.0 and len(sc.frames) == 2
    assert sorted(sc.head_types) == sorted(CROWD_HEAD_TYPES)
    for f in sc.frames:
        assert f.self_attn.shape == (nh, H * W, H * W) and f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (nh, H * W) and f.cross_attn.dtype == torch.float32
        assert torch.isfinite(f.self_attn).all() and (f.self_attn >= 0).all()
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(nh, H * W), atol=1e-4)
        assert torch.isfinite(f.cross_attn).all() and (f.cross_attn >= 0).all()
        assert f.other_cross == {}
        assert f.labels.shape == GRID and f.labels.dtype == np.int32
        assert f.count == n
        assert set(np.unique(f.labels).tolist()) == set(range(n + 1))
        for k in range(1, n + 1):
            m = f.labels == k
            assert m.sum() >= 4
            assert ndimage.label(m, structure=FOUR)[1] == 1


def test_same_seed_same_maps_other_seed_differs():
    a = make_crowd_scene(3, GRID, n_frames=2, noise=0.5, seed=5)
    b = make_crowd_scene(3, GRID, n_frames=2, noise=0.5, seed=5)
    c = make_crowd_scene(3, GRID, n_frames=2, noise=0.5, seed=6)
    assert a.head_types == b.head_types
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    assert not torch.equal(a.frames[0].self_attn, c.frames[0].self_attn)
    assert not torch.equal(a.frames[0].cross_attn, c.frames[0].cross_attn)


def test_no_instances_gives_empty_labels():
    sc = make_crowd_scene(0, GRID, noise=0.5, seed=2)
    f = sc.frames[0]
    assert f.count == 0 and not f.labels.any()
    assert torch.allclose(f.self_attn.sum(-1), torch.ones(12, GRID[0] * GRID[1]), atol=1e-4)


def test_forty_heads():
    types = crowd_head_types(40)
    assert len(types) == 40 and types.count("instance") == 1 and types[:12] == CROWD_HEAD_TYPES
    sc = make_crowd_scene(2, (8, 10), noise=0.5, seed=1, head_types=types)
    assert len(sc.head_types) == 40 and sorted(sc.head_types) == sorted(types)
    f = sc.frames[0]
    assert f.self_attn.shape == (40, 80, 80) and f.cross_attn.shape == (40, 80)
    assert torch.allclose(f.self_attn.sum(-1), torch.ones(40, 80), atol=1e-4)


def test_instance_head_separates_objects_better_than_positional_head():
    inst, pos = [], []
    for seed in range(3):
        sc = make_crowd_scene(5, GRID, noise=0.25, seed=seed)
        f = sc.frames[0]
        inst.append(separation_ratio(f.self_attn[sc.head_types.index("instance")], f.labels))
        pos.append(separation_ratio(f.self_attn[sc.head_types.index("positional")], f.labels))
    # (on 15x26, 6 seeds, the instance/positional ratio of the means was 1.6-1.8)
    assert np.mean(inst) > 1.3 * np.mean(pos), (inst, pos)


def test_cross_attention_marks_objects_above_the_background_floor():
    sc = make_crowd_scene(4, GRID, noise=0.25, seed=7)
    f = sc.frames[0]
    c = f.cross_attn[sc.head_types.index("category")].reshape(GRID).numpy()
    floor = np.median(c[f.labels == 0])
    assert floor > 0
    peaks = np.array([c[f.labels == k].max() for k in range(1, 5)])
    assert (peaks > 1.5 * floor).all()
