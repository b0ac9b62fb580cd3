"""Blurrier noun maps (benchmarks/noun_map_blur.py): each head's bumps wider and lower over a
floor, the head's total and the self-attention unchanged, the same blur relative to the frame
on every grid."""

import numpy as np
import pytest
import torch

from noun_map_blur import blur_noun_maps  # benchmarks/ (on sys.path via conftest.py)
from synthetic_shared_scenes import make_shared_scene


def _scene(grid, seed: int = 3):
    return make_shared_scene(3, grid, n_frames=2, noise=0.5, seed=seed)


def _second_moment(m: np.ndarray, y: float, x: float) -> float:
    """The map's mass-weighted mean squared distance from (y, x), in patches^2."""
    yy, xx = np.mgrid[:m.shape[0], :m.shape[1]]
    return float((m * ((yy - y) ** 2 + (xx - x) ** 2)).sum() / m.sum())


def test_blur_spreads_each_bump_keeps_the_total_and_leaves_the_self_attention():
    grid = (30, 52)
    scene = _scene(grid)
    before = [(f.self_attn.clone(), f.cross_attn.clone()) for f in scene.frames]
    assert blur_noun_maps(scene.frames, grid, sigma=2.0, floor=0.0) == pytest.approx(2.0)
    for (sa, ca), f in zip(before, scene.frames):
        assert torch.equal(f.self_attn, sa)
        assert f.cross_attn.shape == ca.shape and f.cross_attn.dtype == ca.dtype
        labels = np.asarray(f.labels).reshape(grid)
        for h in range(len(ca)):
            old = ca[h].double().reshape(grid).numpy()
            new = f.cross_attn[h].double().reshape(grid).numpy()
            assert new.sum() == pytest.approx(old.sum(), rel=1e-5)
            assert new.max() < old.max()
            # each object's bump spreads: its map, around its centre, reaches further
            ys, xs = np.nonzero(labels == 1)
            cy, cx = ys.mean(), xs.mean()
            win = np.zeros(grid, dtype=bool)
            win[max(0, int(cy) - 6):int(cy) + 7, max(0, int(cx) - 6):int(cx) + 7] = True
            if old[win].sum() > 0:
                assert _second_moment(np.where(win, new, 0), cy, cx) > _second_moment(np.where(win, old, 0), cy, cx)


def test_the_floor_lifts_every_patch_to_its_share_of_the_peak():
    grid = (15, 26)
    scene = _scene(grid)
    blur_noun_maps(scene.frames, grid, sigma=1.0, floor=0.05)
    for f in scene.frames:
        maps = f.cross_attn.double()
        # peak p + 0.05 p over a floor of at least 0.05 p: min / max >= 0.05 / 1.05
        assert (maps.min(1).values >= 0.05 / 1.05 * maps.max(1).values * (1 - 1e-6)).all()


def test_blur_scales_with_the_grid_and_checks_its_arguments():
    small = _scene((15, 26))
    assert blur_noun_maps(small.frames, (15, 26), sigma=2.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="frames is empty"):
        blur_noun_maps([], (15, 26), sigma=1.0)
    with pytest.raises(ValueError, match="sigma=0"):
        blur_noun_maps(_scene((15, 26)).frames, (15, 26), sigma=0)
    with pytest.raises(ValueError, match="floor=-0.1"):
        blur_noun_maps(_scene((15, 26)).frames, (15, 26), sigma=1.0, floor=-0.1)
