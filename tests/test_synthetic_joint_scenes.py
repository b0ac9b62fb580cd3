"""Tests of the CogVideoX-style joint-attention synthetic family
(benchmarks/synthetic_joint_scenes.py)."""

import functools
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import synthetic_joint_scenes as sjs  # noqa: E402
from synthetic_joint_scenes import JOINT_HEAD_TYPES, make_joint_scene  # noqa: E402

SMALL = (15, 26)
GRIDS = [(30, 52), (15, 26), (30, 45)]
FAST_HEADS = ("instance", "class")


@functools.lru_cache(maxsize=None)
def scene(n, grid=SMALL, n_frames=3, noise=0.5, seed=0, head_types=None):
    return make_joint_scene(n, grid, n_frames=n_frames, noise=noise, seed=seed, head_types=head_types)


@functools.lru_cache(maxsize=None)
def scene_and_info(n, grid=SMALL, noise=0.5, seed=0):
    return sjs._make(n, grid, 2, noise, seed, None, True)


def separation(sc, htype):
    """Mean over object rows (and frames, and heads of that type) of
    log(per-patch attention on the row's own object / per-patch attention on
    the other counted objects), and the ratio of the mean total masses."""
    logs, own_tot, oth_tot = [], [], []
    for f in sc.frames:
        lab = f.labels.ravel()
        n = int(lab.max())
        onehot = np.stack([lab == k for k in range(1, n + 1)], 1).astype(np.float32)
        sizes = onehot.sum(0)
        rows = np.nonzero(lab)[0]
        k = lab[rows] - 1
        for h, t in enumerate(sc.head_types):
            if t != htype:
                continue
            m = f.self_attn[h].numpy()[rows] @ onehot  # [rows, n]
            own = m[np.arange(rows.size), k]
            oth = m.sum(1) - own
            logs.append(np.mean(np.log((own / sizes[k]) / (oth / (sizes.sum() - sizes[k])))))
            own_tot.append(own.mean())
            oth_tot.append(oth.mean())
    return float(np.mean(logs)), float(np.mean(own_tot) / np.mean(oth_tot))


# --------------------------------------------------------------------------- API


def test_head_types():
    assert len(JOINT_HEAD_TYPES) == 12
    assert len(set(JOINT_HEAD_TYPES)) == 12
    assert JOINT_HEAD_TYPES.count("instance") == 1
    assert all(isinstance(t, str) for t in JOINT_HEAD_TYPES)


def test_shapes_and_dtypes():
    sc = scene(3)
    H, W = SMALL
    assert sc.grid == SMALL
    assert sc.noise == 0.5
    assert len(sc.frames) == 3
    assert sorted(sc.head_types) == sorted(JOINT_HEAD_TYPES)  # shuffled, same multiset
    for f in sc.frames:
        assert f.self_attn.shape == (12, H * W, H * W)
        assert f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (12, H * W)
        assert f.cross_attn.dtype == torch.float32
        assert f.labels.shape == (H, W)
        assert f.labels.dtype == np.int32
        assert f.other_cross == {}
        assert f.count == 3


@pytest.mark.parametrize("grid", GRIDS)
def test_grids_work(grid):
    sc = make_joint_scene(2, grid, n_frames=1, seed=5, head_types=FAST_HEADS)
    H, W = grid
    f = sc.frames[0]
    assert f.self_attn.shape == (2, H * W, H * W)
    assert f.labels.shape == (H, W)
    assert f.count == 2


def test_rows_sum_to_one_and_maps_are_valid():
    sc = scene(4, noise=1.0)
    for f in sc.frames:
        A = f.self_attn
        assert torch.isfinite(A).all()
        assert (A >= 0).all()
        assert torch.allclose(A.sum(-1), torch.ones(A.shape[:2]), atol=1e-4)
        c = f.cross_attn
        assert torch.isfinite(c).all()
        assert (c >= 0).all()
        # a probability on one or two text tokens: small, not renormalised
        assert c.max() < 1.0
        assert c.sum(-1).min() > 0


def test_one_frame_and_no_shuffle():
    sc = make_joint_scene(3, SMALL, n_frames=1, seed=2, shuffle_heads=False)
    assert sc.head_types == JOINT_HEAD_TYPES
    assert len(sc.frames) == 1


# ------------------------------------------------------------------ determinism


def test_deterministic_for_a_seed():
    a = make_joint_scene(3, SMALL, n_frames=2, seed=11, head_types=FAST_HEADS)
    b = make_joint_scene(3, SMALL, n_frames=2, seed=11, head_types=FAST_HEADS)
    assert a.head_types == b.head_types
    for fa, fb in zip(a.frames, b.frames):
        assert torch.equal(fa.self_attn, fb.self_attn)
        assert torch.equal(fa.cross_attn, fb.cross_attn)
        assert np.array_equal(fa.labels, fb.labels)


def test_global_rng_untouched_and_seeds_differ():
    torch.manual_seed(0)
    np.random.seed(0)
    ref_t, ref_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    a = make_joint_scene(3, SMALL, n_frames=2, seed=1, head_types=FAST_HEADS)
    assert torch.equal(torch.rand(3), ref_t)
    assert np.array_equal(np.random.rand(3), ref_n)
    b = make_joint_scene(3, SMALL, n_frames=2, seed=2, head_types=FAST_HEADS)
    assert not np.array_equal(a.frames[0].labels, b.frames[0].labels)
    assert not torch.equal(a.frames[0].cross_attn, b.frames[0].cross_attn)


# ------------------------------------------------------------- counts and labels


@pytest.mark.parametrize("n", range(1, 9))
def test_counts_and_labels(n):
    for grid, seed in ((SMALL, n), ((30, 45), 100 + n), ((30, 52), 200 + n)):
        sc = make_joint_scene(n, grid, n_frames=3, seed=seed, head_types=("instance",))
        for f in sc.frames:
            assert f.count == n
            assert set(np.unique(f.labels).tolist()) == set(range(n + 1))
            sizes = np.bincount(f.labels.ravel(), minlength=n + 1)[1:]
            assert sizes.min() >= 3, sizes


def test_objects_move_between_frames():
    moved = [not np.array_equal(scene(4, seed=s).frames[0].labels, scene(4, seed=s).frames[2].labels)
             for s in range(3)]
    assert any(moved)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, "3", True])
def test_bad_n_refused(bad):
    with pytest.raises(ValueError, match="n must be"):
        make_joint_scene(bad, SMALL)


def test_bad_arguments_refused():
    with pytest.raises(ValueError):
        make_joint_scene(2, SMALL, noise=3.0)
    with pytest.raises(ValueError):
        make_joint_scene(2, SMALL, head_types=("instance", "not_a_head"))
    with pytest.raises(ValueError):
        make_joint_scene(2, SMALL, n_frames=0)


# --------------------------------------------------------- what the heads carry


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_head_separates_objects_class_head_does_not(seed):
    sc = scene(4, noise=0.25, seed=seed)
    inst_log, inst_mass = separation(sc, "instance")
    cls_log, _ = separation(sc, "class")
    # instance rows keep more mass on their own object than on all others together
    assert inst_mass > 1.0
    assert inst_log > 1.0
    # the class head treats all objects of the class alike
    assert cls_log < 0.8
    assert inst_log > cls_log + 0.5


def test_harder_noise_weakens_instance_separation():
    easy = np.mean([separation(scene(4, noise=0.25, seed=s), "instance")[0] for s in range(3)])
    hard = np.mean([separation(scene(4, noise=1.0, seed=s), "instance")[0] for s in range(3)])
    assert hard < easy - 0.3


def test_noun_map_highlights_objects_in_class_head():
    for s in range(3):
        sc = scene(4, noise=0.25, seed=s)
        h = sc.head_types.index("class")
        for f in sc.frames:
            lab = f.labels.ravel()
            c = f.cross_attn[h].numpy()
            assert c[lab > 0].mean() > 3 * c[lab == 0].mean()
            assert 1e-4 < c.max() < 0.5


def test_text_sinks_take_much_of_the_mass():
    sc, info = scene_and_info(4, seed=3)
    text = info["text_mass"].mean(dim=(0, 2))  # per head
    types = sc.head_types
    assert text[types.index("text_sink")] > 0.9
    assert float(text.median()) > 0.3
    # and the share is query dependent
    assert info["text_mass"][0, types.index("class")].std() > 0.01


def test_forty_heads():
    types = JOINT_HEAD_TYPES + tuple(t for t in JOINT_HEAD_TYPES if t != "instance") * 3
    types = types[:40]
    assert len(types) == 40
    sc = make_joint_scene(3, SMALL, n_frames=2, seed=4, head_types=types)
    HW = SMALL[0] * SMALL[1]
    assert len(sc.head_types) == 40
    assert sorted(sc.head_types) == sorted(types)
    assert sc.head_types.count("instance") == 1
    for f in sc.frames:
        assert f.self_attn.shape == (40, HW, HW)
        assert f.cross_attn.shape == (40, HW)
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(40, HW), atol=1e-4)
    # heads of the same type are drawn separately
    idx = [i for i, t in enumerate(sc.head_types) if t == "class"]
    assert not torch.equal(sc.frames[0].self_attn[idx[0]], sc.frames[0].self_attn[idx[1]])
