"""Checks of the Wan2.1-like synthetic scene generator (benchmarks/synthetic_rope_scenes.py)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from synthetic_rope_scenes import ROPE_HEAD_TYPES, make_rope_scene  # benchmarks/ (on sys.path via conftest.py)

torch.set_num_threads(1)

EIGHT = np.ones((3, 3), dtype=bool)


def test_deterministic_from_seed():
    a = make_rope_scene(3, (15, 26), n_frames=2, noise=0.5, seed=5)
    b = make_rope_scene(3, (15, 26), n_frames=2, noise=0.5, seed=5)
    c = make_rope_scene(3, (15, 26), n_frames=2, noise=0.5, seed=6)
    assert a.head_types == b.head_types
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    assert not all(torch.equal(x, y) for x, y in zip(a.tensors(), c.tensors()))
    assert not torch.equal(a.frames[0].self_attn, c.frames[0].self_attn)


@pytest.mark.parametrize("grid", [(30, 52), (15, 26)])
def test_shapes_dtypes_row_sums(grid):
    H, W = grid
    sc = make_rope_scene(4, grid, n_frames=2, noise=0.5, seed=1)
    assert sc.grid == grid and sc.noise == 0.5 and len(sc.frames) == 2
    nh = len(sc.head_types)
    assert nh == len(ROPE_HEAD_TYPES) == 12
    for f in sc.frames:
        assert f.self_attn.shape == (nh, H * W, H * W) and f.self_attn.dtype == torch.float32
        assert f.cross_attn.shape == (nh, H * W) and f.cross_attn.dtype == torch.float32
        assert f.labels.shape == (H, W) and f.labels.dtype == np.int32
        assert torch.isfinite(f.self_attn).all() and (f.self_attn >= 0).all()
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(nh, H * W), atol=1e-4)
        assert torch.isfinite(f.cross_attn).all() and (f.cross_attn >= 0).all()
        assert (f.cross_attn <= 1).all()
        assert f.count == 4
        # the noun token is attended more from object patches than from background, per head
        fg = torch.from_numpy(f.labels.reshape(-1) > 0)
        assert (f.cross_attn[:, fg].mean(1) > 2 * f.cross_attn[:, ~fg].median(1).values).all()


@pytest.mark.parametrize("n", range(1, 9))
def test_labels_components_not_touching(n):
    for grid in [(15, 26), (30, 52)]:
        sc = make_rope_scene(n, grid, n_frames=3, noise=0.5, seed=10 + n, head_types=("instance",))
        prev = None
        for f in sc.frames:
            L = f.labels
            assert f.count == n and set(np.unique(L)) == set(range(n + 1))
            assert ndimage.label(L > 0, structure=EIGHT)[1] == n
            for i in range(1, n + 1):
                assert ndimage.label(L == i, structure=EIGHT)[1] == 1
                grown = ndimage.binary_dilation(L == i, structure=EIGHT)
                assert not np.any(grown & (L > 0) & (L != i))
            centroids = np.array(ndimage.center_of_mass(L > 0, L, range(1, n + 1)))
            if prev is not None:  # slow drift
                assert np.abs(centroids - prev).max() < 2.0
            prev = centroids


def _own_other_and_matched_density(A: np.ndarray, labels: np.ndarray):
    """For foreground queries of a head's rows A [HW, HW]:
    (mean mass kept in the own object) / (mean over queries of the largest mass given to any
    other single object), and (attention per own-object key) / (attention per background key)
    compared at equal query-key offsets |dy|^2 + |dx|^2 in {1, 2, 4, 5}, so that the positional
    preference every head has cancels out."""
    H, W = labels.shape
    L = labels.reshape(-1)
    yy, xx = np.divmod(np.arange(H * W), W)
    own, other, d_own, d_bg = [], [], [], []
    for i in range(1, labels.max() + 1):
        qi = np.flatnonzero(L == i)
        rows = A[qi]
        own.append(rows[:, L == i].sum(1))
        other.append(np.max(np.stack([rows[:, L == j].sum(1)
                                      for j in range(1, labels.max() + 1) if j != i]), 0))
        d2 = (yy[qi, None] - yy[None]) ** 2 + (xx[qi, None] - xx[None]) ** 2
        for r2 in (1, 2, 4, 5):
            ring = d2 == r2
            ko, kb = ring & (L == i)[None], ring & (L == 0)[None]
            both = ko.any(1) & kb.any(1)  # queries with own and background keys at this offset
            if both.any():
                d_own.append((rows * ko).sum(1)[both] / ko.sum(1)[both])
                d_bg.append((rows * kb).sum(1)[both] / kb.sum(1)[both])
    return (np.concatenate(own).mean() / np.concatenate(other).mean(),
            np.concatenate(d_own).mean() / np.concatenate(d_bg).mean())


def test_instance_head_separates_positional_does_not():
    for n, seed in [(3, 0), (4, 1), (5, 2)]:
        sc = make_rope_scene(n, (30, 52), noise=0.5, seed=seed)
        f = sc.frames[0]
        types = list(sc.head_types)
        inst = types.index("instance")
        ratio, dens = _own_other_and_matched_density(f.self_attn[inst].numpy(), f.labels)
        assert ratio >= 2.0, (n, ratio)
        assert dens >= 3.0, (n, dens)
        for h in [h for h, t in enumerate(types) if t == "positional"]:
            _, pdens = _own_other_and_matched_density(f.self_attn[h].numpy(), f.labels)
            assert pdens < 1.4, (n, h, pdens)


def test_head_types_shuffled_with_one_instance():
    orders = set()
    for seed in range(4):
        sc = make_rope_scene(2, (15, 26), seed=seed)
        assert sc.head_types.count("instance") == 1
        assert sorted(sc.head_types) == sorted(ROPE_HEAD_TYPES)
        assert sc.frames[0].self_attn.shape[0] == len(sc.head_types)
        orders.add(sc.head_types)
    assert len(orders) > 1
    assert ROPE_HEAD_TYPES.count("instance") == 1 and len(ROPE_HEAD_TYPES) == 12
    given = ("positional", "instance") + ("category", "sink", "diffuse", "texture") * 2
    sc = make_rope_scene(2, (15, 26), seed=0, head_types=given, shuffle_heads=False)
    assert sc.head_types == given and sc.frames[0].self_attn.shape[0] == len(given)
    shuffled = make_rope_scene(2, (15, 26), seed=0, head_types=given)
    assert sorted(shuffled.head_types) == sorted(given)


def test_scene_without_objects():
    """n=0: the noun is absent (the benchmark's absent-noun frames): no labels, maps valid."""
    sc = make_rope_scene(0, (15, 26), n_frames=2, seed=3)
    for f in sc.frames:
        assert f.count == 0
        assert torch.allclose(f.self_attn.sum(-1), torch.ones(12, 390), atol=1e-4)
        assert bool((f.cross_attn >= 0).all()) and bool(torch.isfinite(f.cross_attn).all())
    with pytest.raises(ValueError, match="n_instances=-1"):
        make_rope_scene(-1, (15, 26))
