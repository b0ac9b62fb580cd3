"""Checks of the early-step synthetic scene family (benchmarks/synthetic_early_scenes.py)."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from synthetic_early_scenes import (  # benchmarks/ (on sys.path via conftest.py)
    EARLY_HEAD_TYPES,
    early_head_types,
    instance_separation,
    make_early_scene,
)

torch.set_num_threads(1)

GRID = (15, 26)
FOUR = ndimage.generate_binary_structure(2, 1)
POSITIONAL = ("local_narrow", "local_mid", "local_wide", "row", "column")


def _pieces(mask):
    return ndimage.label(mask, FOUR)[1]


def test_head_types_have_exactly_one_instance_head():
    assert len(EARLY_HEAD_TYPES) == 12 and len(set(EARLY_HEAD_TYPES)) == 12
    assert EARLY_HEAD_TYPES.count("instance") == 1


@pytest.mark.parametrize("n", [0, 1, 5, 8])
def test_maps_are_probabilities_and_counts_hold_in_every_frame(n):
    sc = make_early_scene(n, GRID, n_frames=3, noise=0.5, seed=n + 11)
    H, W = GRID
    heads = len(sc.head_types)
    assert sc.grid == GRID and sc.noise == 0.5 and len(sc.frames) == 3 and heads == 12
    for f in sc.frames:
        assert f.self_attn.dtype == torch.float32 and f.self_attn.shape == (heads, H * W, H * W)
        assert f.cross_attn.dtype == torch.float32 and f.cross_attn.shape == (heads, H * W)
        assert f.labels.dtype == np.int32 and f.labels.shape == (H, W)
        assert torch.isfinite(f.self_attn).all() and (f.self_attn >= 0).all()
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(heads, H * W), atol=1e-4)
        assert torch.isfinite(f.cross_attn).all() and (f.cross_attn >= 0).all()
        assert f.count == n
        assert set(np.unique(f.labels)) == set(range(n + 1))
        for i in range(1, n + 1):
            assert (f.labels == i).sum() >= 4
            assert 1 <= _pieces(f.labels == i) <= 2


def test_same_seed_is_bit_identical_and_another_seed_differs():
    a = make_early_scene(4, GRID, n_frames=2, noise=0.5, seed=5)
    b = make_early_scene(4, GRID, n_frames=2, noise=0.5, seed=5)
    c = make_early_scene(4, GRID, n_frames=2, noise=0.5, seed=6)
    assert a.head_types == b.head_types
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    same = [x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.tensors(), c.tensors())]
    assert not all(same)


def test_head_order_is_shuffled_by_seed_and_matches_the_maps():
    orders = set()
    for seed in range(4):
        sc = make_early_scene(3, GRID, n_frames=1, noise=0.5, seed=seed)
        assert sorted(sc.head_types) == sorted(EARLY_HEAD_TYPES)
        orders.add(sc.head_types)
        # the returned order is the one used: the sink head sends most attention to 1-2 keys
        A = sc.frames[0].self_attn
        sink = sc.head_types.index("sink")
        top2 = A[sink].mean(0).topk(2).values.sum().item()
        assert top2 > 0.4
        others = [h for h, t in enumerate(sc.head_types) if t != "sink"]
        assert all(A[h].mean(0).topk(2).values.sum().item() < 0.2 for h in others)
    assert len(orders) >= 3


def test_forty_head_types_are_accepted():
    types = early_head_types(40)
    assert len(types) == 40 and types[:12] == EARLY_HEAD_TYPES and types.count("instance") == 1
    sc = make_early_scene(3, GRID, n_frames=1, noise=0.5, seed=2, head_types=types)
    assert sorted(sc.head_types) == sorted(types)
    f = sc.frames[0]
    assert f.self_attn.shape == (40, GRID[0] * GRID[1], GRID[0] * GRID[1])
    assert f.cross_attn.shape == (40, GRID[0] * GRID[1]) and f.count == 3
    assert torch.allclose(f.self_attn.sum(-1), torch.ones(40, GRID[0] * GRID[1]), atol=1e-4)


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=9), ["9", "8"]),
    (dict(n=-1), ["-1", "0..8"]),
    (dict(n=2.5), ["2.5", "integer"]),
    (dict(grid=(7, 26)), ["(7, 26)", "8x8"]),
    (dict(grid=(15,)), ["(15,)", "(H, W)"]),
    (dict(n_frames=0), ["n_frames=0", ">= 1"]),
    (dict(noise=-0.1), ["-0.1", ">= 0"]),
    (dict(noise=math.nan), ["nan", "finite"]),
    (dict(noise=math.inf), ["inf", "finite"]),
    (dict(head_types=("instance", "bogus")), ["bogus", "instance", "local_narrow", "sink"]),
    (dict(head_types=()), ["()", "non-empty"]),
])
def test_bad_arguments_are_refused_with_the_value_named(kwargs, words):
    args = dict(n=3, grid=GRID, n_frames=1, noise=0.5, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        make_early_scene(**args)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_instance_head_separates_objects_better_than_positional_heads(seed):
    sc = make_early_scene(5, GRID, n_frames=1, noise=0.25, seed=seed)
    f = sc.frames[0]
    sep = {t: instance_separation(f, h) for h, t in enumerate(sc.head_types)}
    assert sep["instance"] > 0
    for t in POSITIONAL:
        assert sep["instance"] > sep[t], (t, sep)


def test_every_head_is_mostly_local_except_sink_and_diffuse():
    sc = make_early_scene(4, GRID, n_frames=1, noise=0.5, seed=9)
    H, W = GRID
    yy, xx = np.mgrid[0:H, 0:W]
    y, x = yy.ravel(), xx.ravel()
    near = np.hypot(y[:, None] - y[None], x[:, None] - x[None]) <= 3
    share = {t: (sc.frames[0].self_attn[h].numpy() * near).sum(1).mean()
             for h, t in enumerate(sc.head_types)}
    uniform = near.sum(1).mean() / (H * W)
    for t, s in share.items():
        if t not in ("sink", "diffuse"):
            assert s > 4 * uniform, (t, s, uniform)


def test_objects_move_between_frames():
    moved = 0
    for seed in range(4):
        sc = make_early_scene(4, GRID, n_frames=3, noise=0.5, seed=seed)
        for i in range(1, 5):
            c = [np.argwhere(f.labels == i).mean(0) for f in sc.frames]
            step = max(np.abs(c[t + 1] - c[t]).max() for t in range(2))
            assert step < 3.5  # up to ~2 patches per frame (plus border clipping)
            moved += step >= 0.5
    assert moved >= 4


def test_an_occluder_can_cut_an_object_into_two_close_pieces():
    found = None
    for seed in range(40):
        sc = make_early_scene(3, GRID, n_frames=2, noise=0.5, seed=seed)
        split = [i for i in range(1, 4) if _pieces(sc.frames[0].labels == i) == 2]
        if split:
            found = (sc, split)
            break
    assert found is not None, "no scene in 40 seeds has an occluded object in two pieces"
    sc, split = found
    assert len(split) == 1  # one occluder crosses one object
    for f in sc.frames:  # still one instance, in two pieces 1-2 patches apart, in every frame
        assert f.count == 3
        lab, k = ndimage.label(f.labels == split[0], FOUR)
        assert k == 2
        a, b = np.argwhere(lab == 1), np.argwhere(lab == 2)
        gap = np.abs(a[:, None] - b[None]).max(-1).min()  # Chebyshev distance of the pieces
        assert 2 <= gap <= 4


def test_objects_reach_the_frame_border_and_at_most_one_pair_touches():
    on_border = 0
    for seed in range(6):
        sc = make_early_scene(5, GRID, n_frames=2, noise=0.5, seed=seed)
        for f in sc.frames:
            lab = f.labels
            edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
            on_border += (edge > 0).any()
            pairs = set()
            for a, b in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1])):
                m = (a > 0) & (b > 0) & (a != b)
                pairs |= {tuple(sorted(p)) for p in zip(a[m], b[m])}
            assert len(pairs) <= 1
    assert on_border >= 1


def test_sizes_span_near_and_far_objects():
    sc = make_early_scene(6, (30, 52), n_frames=1, noise=0.5, seed=4)
    areas = np.bincount(sc.frames[0].labels.ravel())[1:]
    assert areas.min() >= 4 and areas.max() <= 0.09 * 30 * 52
    assert areas.max() >= 3 * areas.min()


def test_cross_attention_is_high_on_objects():
    sc = make_early_scene(4, GRID, n_frames=1, noise=0.5, seed=1)
    f = sc.frames[0]
    obj = f.labels.ravel() > 0
    mean = f.cross_attn.mean(0).numpy()
    assert mean[obj].mean() > 1.5 * mean[~obj].mean()


def test_large_grid_works():
    sc = make_early_scene(8, (45, 80), n_frames=1, noise=1.0, seed=0)
    f = sc.frames[0]
    assert f.self_attn.shape == (12, 3600, 3600) and f.count == 8
    assert torch.allclose(f.self_attn[:, ::97].sum(-1), torch.ones(12, 38), atol=1e-4)
