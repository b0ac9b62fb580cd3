"""Tests of the held-out synthetic attention scenes (benchmarks/synthetic_heldout_scenes.py)."""

import functools
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import ndimage

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

from synthetic_heldout_scenes import HELDOUT_HEAD_TYPES, make_heldout_scene  # noqa: E402

SMALL = (15, 26)
WAN = (30, 52)


@functools.lru_cache(maxsize=None)
def _scene(n, grid, n_frames=3, noise=0.5, seed=0, head_types=None):
    torch.set_num_threads(1)
    return make_heldout_scene(n, grid, n_frames=n_frames, noise=noise, seed=seed,
                              head_types=head_types)


def _density_ratio(rows_attn: torch.Tensor, labels: np.ndarray) -> float:
    """Mean attention density (mass / area) of object queries on their own object,
    over the mean density on each other object."""
    lab = labels.ravel()
    n = int(lab.max())
    masks = np.stack([lab == k for k in range(1, n + 1)]).astype(np.float32)
    areas = masks.sum(1)
    A = rows_attn.numpy()
    own, other = [], []
    for k in range(n):
        dens = A[masks[k] > 0] @ masks.T / areas  # [queries, objects]
        own.append(dens[:, k].mean())
        other.append(np.delete(dens, k, axis=1).mean())
    return float(np.mean(own) / np.mean(other))


def test_head_type_names():
    assert len(HELDOUT_HEAD_TYPES) == 12
    assert len(set(HELDOUT_HEAD_TYPES)) == 12
    assert HELDOUT_HEAD_TYPES.count("instance") == 1


@pytest.mark.parametrize("grid", [SMALL, WAN])
def test_shapes_dtypes_and_distributions(grid):
    n = 5
    sc = _scene(n, grid)
    H, W = grid
    assert sc.grid == grid
    assert sc.noise == 0.5
    assert len(sc.frames) == 3
    assert isinstance(sc.head_types, tuple) and len(sc.head_types) == 12
    for f in sc.frames:
        assert f.self_attn.shape == (12, H * W, H * W)
        assert f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (12, H * W)
        assert f.cross_attn.dtype == torch.float32
        assert isinstance(f.labels, np.ndarray)
        assert f.labels.shape == (H, W) and f.labels.dtype == np.int32
        assert f.count == n
        assert torch.isfinite(f.self_attn).all() and (f.self_attn >= 0).all()
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(12, H * W), atol=1e-4)
        assert torch.isfinite(f.cross_attn).all() and (f.cross_attn >= 0).all()
        assert (f.cross_attn.amax(1) > 0).all()


@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("seed", [0, 7])
def test_labels_are_complete_and_objects_never_touch(n, seed):
    sc = _scene(n, SMALL, n_frames=3, noise=0.25, seed=seed, head_types=("instance",))
    eight = np.ones((3, 3), bool)
    for f in sc.frames:
        lab = f.labels
        assert set(np.unique(lab).tolist()) == set(range(n + 1))
        for k in range(1, n + 1):
            obj = lab == k
            assert ndimage.label(obj, structure=eight)[1] == 1  # one piece
            ring = ndimage.binary_dilation(obj, structure=eight) & ~obj
            assert not ((lab[ring] > 0) & (lab[ring] != k)).any(), f"object {k} touches another"


def test_twelve_objects_on_the_wan_grid():
    sc = make_heldout_scene(12, WAN, n_frames=2, seed=3, head_types=("local",))
    assert [f.count for f in sc.frames] == [12, 12]


def test_objects_drift_a_little_and_sizes_vary():
    sc = _scene(8, SMALL, n_frames=3, noise=0.25, seed=7, head_types=("instance",))
    sizes, drifts = [], []
    for k in range(1, 9):
        first, last = sc.frames[0].labels == k, sc.frames[-1].labels == k
        sizes.append(int(first.sum()))
        c0 = np.array(ndimage.center_of_mass(first))
        c1 = np.array(ndimage.center_of_mass(last))
        drifts.append(float(np.linalg.norm(c1 - c0)))
    assert max(drifts) <= 4.0
    assert max(drifts) > 0.0
    assert max(sizes) >= 2 * min(sizes)


def test_reproducible_for_a_seed_and_different_for_another():
    a = make_heldout_scene(3, SMALL, seed=11)
    b = make_heldout_scene(3, SMALL, seed=11)
    c = make_heldout_scene(3, SMALL, seed=12)
    assert a.head_types == b.head_types
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a.tensors(), c.tensors()))
    assert not np.array_equal(a.frames[0].labels, c.frames[0].labels)


def test_same_objects_and_heads_at_two_noise_levels():
    mild = _scene(4, SMALL, noise=0.25, seed=5)
    hard = _scene(4, SMALL, noise=1.0, seed=5)
    assert mild.head_types == hard.head_types
    assert mild.noise == 0.25 and hard.noise == 1.0
    for fm, fh in zip(mild.frames, hard.frames):
        assert np.array_equal(fm.labels, fh.labels)
        assert not torch.equal(fm.self_attn, fh.self_attn)


def test_default_heads_are_a_shuffled_permutation_with_one_instance_head():
    orders = set()
    for seed in range(4):
        sc = make_heldout_scene(2, SMALL, n_frames=1, seed=seed)
        assert sorted(sc.head_types) == sorted(HELDOUT_HEAD_TYPES)
        assert sc.head_types.count("instance") == 1
        orders.add(sc.head_types)
    assert len(orders) > 1


def test_forty_heads_with_repeats():
    types = tuple(HELDOUT_HEAD_TYPES[i % 12] for i in range(40))
    sc = make_heldout_scene(3, SMALL, n_frames=2, seed=2, head_types=types)
    assert Counter(sc.head_types) == Counter(types)
    H, W = SMALL
    for f in sc.frames:
        assert f.self_attn.shape == (40, H * W, H * W)
        assert f.cross_attn.shape == (40, H * W)
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(40, H * W), atol=1e-4)


@pytest.mark.parametrize("kwargs, value", [
    (dict(n=0), "0"),
    (dict(n=2.5), "2.5"),
    (dict(grid=(7, 26)), "(7, 26)"),
    (dict(grid=(15,)), "(15,)"),
    (dict(n_frames=0), "0"),
    (dict(noise=-0.5), "-0.5"),
    (dict(noise=float("nan")), "nan"),
    (dict(seed=-3), "-3"),
    (dict(seed=1.5), "1.5"),
    (dict(head_types=("instance", "bogus")), "bogus"),
])
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, value):
    args = dict(n=2, grid=SMALL, n_frames=1, noise=0.5, seed=0)
    args.update(kwargs)
    name = next(iter(kwargs))
    with pytest.raises(ValueError) as err:
        make_heldout_scene(**args)
    msg = str(err.value)
    assert name in msg
    assert value in msg
    assert "expected" in msg


@pytest.mark.parametrize("grid", [SMALL, WAN])
def test_instance_head_separates_objects_and_class_head_does_not(grid):
    inst_ratios, class_ratios = [], []
    for seed in (1, 2, 4):
        sc = _scene(5, grid, n_frames=1, noise=0.25, seed=seed, head_types=("instance", "class"))
        f = sc.frames[0]
        ri = _density_ratio(f.self_attn[sc.head_types.index("instance")], f.labels)
        rc = _density_ratio(f.self_attn[sc.head_types.index("class")], f.labels)
        assert ri > 1.0  # more mass on its own object than on another object
        assert ri > rc
        inst_ratios.append(ri)
        class_ratios.append(rc)
    assert np.mean(class_ratios) < 0.5 * np.mean(inst_ratios)


def test_rows_are_dominated_by_a_broad_component():
    sc = _scene(5, WAN)
    f = sc.frames[0]
    obj = torch.from_numpy(f.labels.ravel() > 0)
    for h, kind in enumerate(sc.head_types):
        rows = f.self_attn[h][obj]
        # no head puts most of a row on its single strongest key, except sinks
        if kind != "sink":
            assert rows.max(1).values.mean() < 0.5, kind


def test_sink_head_concentrates_on_a_few_tokens():
    sc = _scene(5, WAN)
    f = sc.frames[0]
    sink = f.self_attn[sc.head_types.index("sink")]
    diffuse = f.self_attn[sc.head_types.index("diffuse")]
    assert sink.mean(0).topk(3).values.sum() > 0.15
    assert sink.mean(0).topk(3).values.sum() > 5 * diffuse.mean(0).topk(3).values.sum()


@pytest.mark.parametrize("noise", [0.25, 1.0])
def test_cross_attention_is_higher_on_objects_than_on_background(noise):
    for seed in (0, 3):
        sc = _scene(4, SMALL, noise=noise, seed=seed)
        for f in sc.frames:
            obj = torch.from_numpy(f.labels.ravel() > 0)
            for h in range(f.cross_attn.shape[0]):
                c = f.cross_attn[h]
                assert c[obj].mean() > 2 * c[~obj].mean()


def test_cross_attention_has_a_low_nonzero_background():
    sc = make_heldout_scene(3, WAN, n_frames=1, noise=0.0, seed=4, head_types=("local",) * 4)
    f = sc.frames[0]
    far = ndimage.distance_transform_edt(f.labels == 0).ravel() > 6
    for h in range(4):
        c = f.cross_attn[h].numpy()
        level = np.median(c[far]) / c.max()
        assert 0.01 < level < 0.15
