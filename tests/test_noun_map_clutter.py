"""Clutter added to a scene's noun maps (benchmarks/noun_map_clutter.py): bumps as strong as
the objects, away from them, in the cross-attention only, the same for the same seed."""

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from noun_map_clutter import add_clutter  # benchmarks/ (on sys.path via conftest.py)
from synthetic_shared_scenes import make_shared_scene

GRID = (15, 26)


def _scene(seed: int = 3):
    return make_shared_scene(2, GRID, n_frames=2, noise=0.5, seed=seed)


def test_clutter_lands_away_from_the_objects_as_strong_as_they_are_and_only_in_the_noun_map():
    scene = _scene()
    before = [(f.self_attn.clone(), f.cross_attn.clone()) for f in scene.frames]
    placed = add_clutter(scene.frames, GRID, seed=7, amp=(0.8, 0.9), num=(3, 4), clearance=3.0)
    assert placed == 3
    objects = np.zeros(GRID, dtype=bool)
    for f in scene.frames:
        objects |= np.asarray(f.labels) > 0
    near = distance_transform_edt(~objects) < 2.0
    for (sa, ca), f in zip(before, scene.frames):
        assert torch.equal(f.self_attn, sa)  # the self-attention holds no object there
        added = (f.cross_attn.double() - ca.double()).reshape(len(ca), *GRID).numpy()
        assert (added >= -1e-9).all()
        for h in range(len(ca)):
            m = ca[h].double().reshape(GRID).numpy()
            span = m[np.asarray(f.labels) > 0].max() - np.median(m)
            # every head's map gets bumps at 0.8-0.9 (summed where two overlap) of its objects'
            # height over its median, and next to nothing on the objects
            assert 0.8 * span - 1e-6 <= added[h].max() <= 2 * 0.9 * span + 1e-6
            assert added[h][near].max() < 0.5 * added[h].max()


def test_clutter_is_seeded_and_checks_its_arguments():
    a, b = _scene(), _scene()
    add_clutter(a.frames, GRID, seed=11)
    add_clutter(b.frames, GRID, seed=11)
    assert all(torch.equal(x.cross_attn, y.cross_attn) for x, y in zip(a.frames, b.frames))
    c = _scene()
    add_clutter(c.frames, GRID, seed=12)
    assert not torch.equal(a.frames[0].cross_attn, c.frames[0].cross_attn)
    with pytest.raises(ValueError, match="frames is empty"):
        add_clutter([], GRID, seed=0)
    with pytest.raises(ValueError, match="amp="):
        add_clutter(_scene().frames, GRID, seed=0, amp=(0.9, 0.5))
    # no room away from the objects: nothing placed, the maps as they were
    full = _scene()
    kept = [f.cross_attn.clone() for f in full.frames]
    assert add_clutter(full.frames, GRID, seed=0, clearance=100.0) == 0
    assert all(torch.equal(f.cross_attn, k) for f, k in zip(full.frames, kept))


def test_a_head_whose_objects_are_no_brighter_than_its_median_gets_no_clutter():
    # the joint family has such heads; a negative amplitude made negative map entries
    scene = _scene()
    for f in scene.frames:
        ca = f.cross_attn.clone()
        objects = torch.as_tensor(np.asarray(f.labels).reshape(-1) > 0)
        ca[0] = torch.where(objects, ca[0].min(), ca[0].max())  # head 0: objects at its floor
        f.cross_attn = ca
    kept = [f.cross_attn.clone() for f in scene.frames]
    assert add_clutter(scene.frames, GRID, seed=5) > 0
    for f, k in zip(scene.frames, kept):
        assert (f.cross_attn >= 0).all()
        assert torch.equal(f.cross_attn[0], k[0])  # nothing added to that head
        assert (f.cross_attn[1:] > k[1:]).any()  # the other heads got their clutter
