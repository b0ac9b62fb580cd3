"""Tests of the part-focused synthetic scene family (benchmarks/synthetic_partial_scenes.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from synthetic_partial_scenes import PARTIAL_HEAD_TYPES, make_partial_scene  # noqa: E402

SMALL = (15, 26)


@pytest.fixture(scope="module")
def scene():
    return make_partial_scene(4, SMALL, n_frames=2, noise=0.5, seed=3)


def test_head_types_list():
    assert len(PARTIAL_HEAD_TYPES) == 12
    assert len(set(PARTIAL_HEAD_TYPES)) == 12
    assert PARTIAL_HEAD_TYPES.count("instance") == 1


def test_same_seed_gives_identical_tensors(scene):
    again = make_partial_scene(4, SMALL, n_frames=2, noise=0.5, seed=3)
    assert again.head_types == scene.head_types
    for a, b in zip(scene.tensors(), again.tensors()):
        assert torch.equal(a, b)


def test_different_seed_differs(scene):
    other = make_partial_scene(4, SMALL, n_frames=2, noise=0.5, seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(scene.tensors(), other.tensors()))


def test_shapes_and_dtypes(scene):
    H, W = SMALL
    heads = len(scene.head_types)
    assert scene.grid == SMALL and len(scene.frames) == 2
    for f in scene.frames:
        assert f.self_attn.dtype == torch.float32 and f.self_attn.shape == (heads, H * W, H * W)
        assert f.cross_attn.dtype == torch.float32 and f.cross_attn.shape == (heads, H * W)
        assert f.labels.dtype == np.int32 and f.labels.shape == (H, W)


def test_self_attention_rows_are_softmaxes(scene):
    for f in scene.frames:
        assert (f.self_attn >= 0).all()
        torch.testing.assert_close(f.self_attn.sum(-1), torch.ones(f.self_attn.shape[:2]),
                                   atol=1e-4, rtol=0)


def test_cross_attention_small_and_non_negative(scene):
    for f in scene.frames:
        assert (f.cross_attn >= 0).all()
        assert f.cross_attn.max() < 1.0


@pytest.mark.parametrize("n", [0, 1, 5, 8])
def test_labels_hold_n_objects_of_at_least_4_patches(n):
    sc = make_partial_scene(n, SMALL, n_frames=2, noise=0.25, seed=n)
    for f in sc.frames:
        ids = sorted(set(np.unique(f.labels)) - {0})
        assert ids == list(range(1, n + 1))
        assert f.count == n
        for i in ids:
            assert (f.labels == i).sum() >= 4


def test_head_types_shuffled_with_one_instance(scene):
    assert sorted(scene.head_types) == sorted(PARTIAL_HEAD_TYPES)
    assert scene.head_types.count("instance") == 1


def test_custom_head_types():
    types = PARTIAL_HEAD_TYPES + ("local_narrow", "diffuse")
    sc = make_partial_scene(2, SMALL, n_frames=1, seed=1, head_types=types)
    assert sorted(sc.head_types) == sorted(types)
    assert sc.frames[0].self_attn.shape[0] == len(types)


def test_part_focused_cross_map():
    """Where an object is big enough, only part of it is above half its own peak."""
    sc = make_partial_scene(3, (30, 52), n_frames=1, noise=0.25, seed=5)
    f = sc.frames[0]
    m = f.cross_attn.mean(0).numpy()
    fracs = []
    for i in range(1, 4):
        v = m[f.labels.ravel() == i]
        if v.size >= 30:
            fracs.append((v > 0.5 * v.max()).mean())
    assert fracs and np.median(fracs) < 0.8


@pytest.mark.parametrize("kwargs, bad", [
    (dict(n=-1), "-1"),
    (dict(n=9), "9"),
    (dict(noise=-0.1), "-0.1"),
    (dict(noise=1.6), "1.6"),
    (dict(grid=(0, 26)), "(0, 26)"),
    (dict(grid=(15, 0)), "(15, 0)"),
    (dict(head_types=PARTIAL_HEAD_TYPES[:-1] + ("wobbly",)), "wobbly"),
    (dict(head_types=PARTIAL_HEAD_TYPES[1:] + ("part",)), "instance"),
    (dict(head_types=PARTIAL_HEAD_TYPES + ("instance",)), "instance"),
    (dict(n_frames=0), "0"),
])
def test_bad_arguments_raise(kwargs, bad):
    args = dict(n=2, grid=SMALL, n_frames=1, noise=0.5, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        make_partial_scene(**args)
    assert bad in str(err.value)
