"""Tests of the synthetic video scene family (benchmarks/synthetic_video_scenes.py)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import synthetic_video_scenes as svs  # noqa: E402
from synthetic_video_scenes import FAMILY_HEAD_TYPES, make_video_scene  # noqa: E402

SMALL = (12, 16)


def _separation(attn: np.ndarray, labels: np.ndarray) -> float:
    """Mean attention from an object's patches to its own other patches minus to other
    objects' patches (times HW, so 0 = no preference), averaged over objects."""
    lab = labels.ravel()
    vals = []
    for i in range(1, int(lab.max()) + 1):
        own = np.nonzero(lab == i)[0]
        oth = np.nonzero((lab > 0) & (lab != i))[0]
        if len(own) < 2 or len(oth) == 0:
            continue
        sub = attn[np.ix_(own, own)]
        to_own = (sub.sum(1) - np.diag(sub)) / (len(own) - 1)
        to_oth = attn[np.ix_(own, oth)].mean(1)
        vals.append(float((to_own - to_oth).mean()) * lab.size)
    return float(np.mean(vals))


def _row_entropy(attn: torch.Tensor) -> float:
    return float(-(attn * torch.log(attn.clamp_min(1e-12))).sum(-1).mean())


def test_family_head_types():
    assert len(FAMILY_HEAD_TYPES) == 12
    assert len(set(FAMILY_HEAD_TYPES)) == 12
    assert FAMILY_HEAD_TYPES.count("instance") == 1


def test_shapes_dtypes_rows_cross_labels():
    H, W = SMALL
    scene = make_video_scene(3, SMALL, n_frames=3, noise=0.5, seed=1)
    assert scene.grid == SMALL and scene.noise == 0.5
    assert sorted(scene.head_types) == sorted(FAMILY_HEAD_TYPES)
    assert len(scene.frames) == 3
    for f in scene.frames:
        assert f.self_attn.shape == (12, H * W, H * W) and f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (12, H * W) and f.cross_attn.dtype == torch.float32
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(12, H * W), atol=1e-4)
        assert (f.self_attn >= 0).all()
        assert (f.cross_attn >= 0).all() and (f.cross_attn <= 1).all()
        assert f.labels.shape == (H, W) and f.labels.dtype == np.int32
        ids = set(np.unique(f.labels).tolist()) - {0}
        assert ids == set(range(1, f.count + 1)) and f.count >= 1
        # the noun's map is higher on the objects than on the background, in most heads
        on = torch.from_numpy(f.labels.ravel() > 0)
        higher = (f.cross_attn[:, on].mean(1) > f.cross_attn[:, ~on].mean(1)).sum()
        assert higher >= 10
    assert scene.frames[1].count == 3  # the middle frame shows n


def test_bf16_grid():
    """Maps went through bfloat16: the cross map is exactly representable in bf16."""
    scene = make_video_scene(2, SMALL, n_frames=1, noise=0.25, seed=3)
    c = scene.frames[0].cross_attn
    assert torch.equal(c, c.to(torch.bfloat16).float())


def test_deterministic():
    a = make_video_scene(4, SMALL, n_frames=3, noise=0.5, seed=7)
    b = make_video_scene(4, SMALL, n_frames=3, noise=0.5, seed=7)
    assert a.head_types == b.head_types
    for x, y in zip(a.tensors(), b.tensors()):
        assert torch.equal(x, y)
    c = make_video_scene(4, SMALL, n_frames=3, noise=0.5, seed=8)
    assert not torch.equal(a.frames[0].self_attn, c.frames[0].self_attn)


def test_noise_keeps_geometry():
    """The noise level changes the maps, not the objects."""
    a = make_video_scene(3, SMALL, n_frames=2, noise=0.25, seed=5, head_types=("instance",))
    b = make_video_scene(3, SMALL, n_frames=2, noise=1.0, seed=5, head_types=("instance",))
    for fa, fb in zip(a.frames, b.frames):
        assert np.array_equal(fa.labels, fb.labels)
    assert not torch.equal(a.frames[0].self_attn, b.frames[0].self_attn)


@pytest.mark.parametrize("kwargs, bad", [
    (dict(n=0), "0"), (dict(n=-2), "-2"), (dict(n=2.5), "2.5"), (dict(n=True), "True"),
    (dict(grid=(7, 16)), "(7, 16)"), (dict(grid=(16,)), "(16,)"), (dict(grid=(12.0, 16)), "12.0"),
    (dict(n_frames=0), "0"), (dict(noise=-0.1), "-0.1"), (dict(noise=float("nan")), "nan"),
    (dict(seed=-1), "-1"), (dict(head_types=("instance", "bogus")), "bogus"),
    (dict(head_types=()), "()"),
])
def test_bad_arguments(kwargs, bad):
    args = dict(n=2, grid=SMALL, n_frames=2, noise=0.5, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        make_video_scene(**args)
    assert bad in str(err.value)


def test_head_types_subset_and_shuffle():
    types = ("instance", "sink", "sink", "temporal")
    scene = make_video_scene(2, SMALL, n_frames=2, noise=0.5, seed=2, head_types=types)
    assert sorted(scene.head_types) == sorted(types)
    assert scene.frames[0].self_attn.shape[0] == 4 and scene.frames[0].cross_attn.shape[0] == 4
    orders = {make_video_scene(2, SMALL, n_frames=1, seed=s).head_types for s in range(6)}
    assert len(orders) > 1  # the order is shuffled per seed


def test_instance_head_separates_objects():
    """Instance head > category and positional heads, per scene, at moderate noise; still
    clearly positive at hard noise."""
    for noise in (0.5, 1.0):
        inst_all = []
        for seed in range(3):
            scene = make_video_scene(3, SMALL, n_frames=3, noise=noise, seed=seed)
            f = scene.frames[1]
            sep = {t: _separation(f.self_attn[h].numpy(), f.labels)
                   for h, t in enumerate(scene.head_types)}
            if noise == 0.5:
                assert sep["instance"] > sep["category"] + 1.0, sep
                assert sep["instance"] > sep["positional"] + 1.0, sep
            inst_all.append(sep["instance"])
        assert np.mean(inst_all) > 3.0


def test_entering_leaving_and_counts():
    diffs = 0
    for seed in range(30):
        n = 1 + seed % 4
        scene = make_video_scene(n, SMALL, n_frames=3, noise=0.5, seed=seed,
                                 head_types=("instance",))
        counts = [f.count for f in scene.frames]
        assert min(counts) >= 1
        assert counts[1] == n
        assert max(counts) - min(counts) <= 1
        for f in scene.frames:
            assert set(np.unique(f.labels).tolist()) - {0} == set(range(1, f.count + 1))
        diffs += len(set(counts)) > 1
    assert 3 <= diffs <= 20  # about a third of the scenes


def test_touching_pairs_sometimes():
    touching = 0
    for seed in range(24):
        lab = make_video_scene(3, SMALL, n_frames=1, noise=0.5, seed=seed,
                               head_types=("instance",)).frames[0].labels
        a, b = lab[:, :-1], lab[:, 1:]
        c, d = lab[:-1, :], lab[1:, :]
        adj = (((a > 0) & (b > 0) & (a != b)).any() or ((c > 0) & (d > 0) & (c != d)).any())
        touching += bool(adj)
    assert 1 <= touching <= 12


def test_camera_pan_moves_objects():
    aligned, shifts = 0, []
    for seed in range(12):
        scene, info = svs._build(3, (15, 26), n_frames=3, noise=0.5, seed=seed,
                                 head_types=("instance",))
        pan = info["camera"].pan
        first, last = scene.frames[0], scene.frames[-1]
        # the same objects (persistent ids) in the first and the last frame
        common = set(info["object_ids"][0]) & set(info["object_ids"][-1])
        d = []
        for pid in common:
            c0 = np.argwhere(first.labels == info["object_ids"][0].index(pid) + 1).mean(0)
            c1 = np.argwhere(last.labels == info["object_ids"][-1].index(pid) + 1).mean(0)
            d.append(c1 - c0)
        shift = np.mean(d, 0)
        shifts.append(np.linalg.norm(shift))
        aligned += float(shift @ pan) > 0
        # the overall label centroid moves too
        all0 = np.argwhere(first.labels > 0).mean(0)
        all1 = np.argwhere(last.labels > 0).mean(0)
        assert np.linalg.norm(all1 - all0) > 0.1
    assert aligned >= 10
    assert np.mean(shifts) > 1.0


def test_temporal_head_is_flatter_and_leaves_the_frame():
    for seed in range(2):
        scene, info = svs._build(3, SMALL, n_frames=3, noise=0.5, seed=seed)
        ti, ii = scene.head_types.index("temporal"), scene.head_types.index("instance")
        for f in scene.frames:
            assert _row_entropy(f.self_attn[ti]) > _row_entropy(f.self_attn[ii]) + 0.2
            on = torch.from_numpy(f.labels.ravel() > 0)  # the object rows: clearer still
            assert _row_entropy(f.self_attn[ti][on]) > _row_entropy(f.self_attn[ii][on]) + 0.5
        mass = info["out_of_frame_mass"]
        assert (mass[ti] > 0.8).all()
        others = [h for h, t in enumerate(scene.head_types) if t != "temporal"]
        assert (mass[others].mean(1) < 0.5).all()


def test_block_of_full_3d_softmax():
    """The frame's map is the renormalised in-frame block of the softmax over all frames."""
    a, _ = svs._build(3, SMALL, n_frames=3, noise=0.5, seed=4)
    b, _ = svs._build(3, SMALL, n_frames=3, noise=0.5, seed=4, full_3d=True)
    for fa, fb in zip(a.frames, b.frames):
        assert torch.allclose(fa.self_attn, fb.self_attn, rtol=1e-2, atol=1e-7)


@pytest.mark.parametrize("grid", [(15, 26), (30, 45)])
def test_other_grids(grid):
    scene = make_video_scene(5, grid, n_frames=2, noise=0.25, seed=1, head_types=("instance",))
    assert scene.frames[0].self_attn.shape == (1, grid[0] * grid[1], grid[0] * grid[1])
    assert scene.frames[0].labels.shape == grid


def test_one_full_size_scene():
    scene = make_video_scene(6, (30, 52), n_frames=3, noise=0.5, seed=0)
    f = scene.frames[1]
    assert f.self_attn.shape == (12, 1560, 1560) and f.count == 6
    areas = np.bincount(f.labels.ravel())[1:]
    assert areas.min() >= 2 and areas.max() / areas.min() >= 4  # a wide scale mixture
    assert math.isclose(float(f.self_attn[0].sum()), 1560.0, rel_tol=1e-4)
