"""Identify v2 (adaptive cut, containment head choice, temporal vote) on hand-built maps
with known answers, the paper preset, and the shared-component scene family."""

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import layout_from_attention, layout_from_maps, temporal_vote
from numina_hooks.numina.partition import otsu_threshold
from synthetic_shared_scenes import SHARED_HEAD_TYPES, make_shared_scene  # benchmarks/ (on sys.path via conftest.py)

GRID = (8, 12)


def _positions(grid):
    H, W = grid
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)


def _local(grid, sigma):
    """Rows: a Gaussian bump around the query (a positional head), rows sum to 1."""
    d2 = torch.cdist(_positions(grid), _positions(grid)).square()
    a = torch.exp(-d2 / (2 * sigma * sigma))
    return a / a.sum(1, keepdim=True)


def _instance_head(labels, grid, share=0.5):
    """Foreground rows put ``share`` of their attention uniformly on their own instance, the
    rest on a broad positional bump; background rows are the positional bump only."""
    lab = torch.from_numpy(labels.reshape(-1))
    same = ((lab[:, None] == lab[None, :]) & (lab[:, None] > 0)).double()
    own = same / same.sum(1, keepdim=True).clamp_min(1)
    base = _local(grid, 3.0)
    fg = (lab > 0)[:, None]
    return torch.where(fg, (1 - share) * base + share * own, base)


def _touching_pair():
    labels = np.zeros(GRID, dtype=np.int64)
    labels[2:6, 2:6] = 1
    labels[2:6, 6:10] = 2  # shares a whole side with instance 1: no background between
    return labels


def _cross(labels, heads):
    """One blurry bump over both instances (they merge in the cross map)."""
    from scipy.ndimage import gaussian_filter
    m = gaussian_filter((labels > 0).astype(np.float64), 1.0) + 0.01
    return torch.from_numpy(np.stack([m.reshape(-1)] * heads)).float()


def _heads(labels, instance_at, kinds):
    heads = []
    for kind in kinds:
        if kind == "instance":
            heads.append(_instance_head(labels, GRID))
        elif kind == "positional":
            heads.append(_local(GRID, 0.8))
        else:  # diffuse
            heads.append(torch.full((GRID[0] * GRID[1],) * 2, 1.0 / (GRID[0] * GRID[1]),
                                    dtype=torch.float64))
    out = torch.stack(heads).float()
    assert kinds[instance_at] == "instance"
    return out


def test_two_touching_instances_are_separated():
    labels = _touching_pair()
    kinds = ["positional", "diffuse", "instance", "positional"]
    sa = _heads(labels, 2, kinds)
    layout = layout_from_attention(sa, _cross(labels, 4), GRID)
    assert layout.self_head == 2
    assert layout.count == 2
    # each found instance is exactly one of the two squares
    found = {frozenset(map(tuple, np.argwhere(layout.labels == k))) for k in (1, 2)}
    truth = {frozenset(map(tuple, np.argwhere(labels == k))) for k in (1, 2)}
    assert found == truth


def test_the_paper_preset_merges_the_touching_pair_or_loses_it():
    # the same maps under the paper's fixed cut: not the two squares (why the default changed)
    labels = _touching_pair()
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    layout = layout_from_attention(sa, _cross(labels, 4), GRID, NuminaConfig.paper())
    assert layout.count != 2


def test_positional_head_is_not_chosen_over_the_instance_head():
    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:4, 1:4] = 1
    labels[4:7, 7:11] = 2
    kinds = ["positional", "positional", "diffuse", "instance"]
    sa = _heads(labels, 3, kinds)
    layout = layout_from_attention(sa, _cross(labels, 4), GRID)
    assert layout.self_head == 3, layout.head_scores
    assert layout.count == 2
    # both positional heads score below the instance head
    assert layout.head_scores[3] > max(layout.head_scores[0], layout.head_scores[1])


def test_forced_head_is_used():
    labels = _touching_pair()
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    layout = layout_from_attention(sa, _cross(labels, 4), GRID, self_head=0)
    assert layout.self_head == 0
    with pytest.raises(ValueError, match="self_head=7 is out of range"):
        layout_from_attention(sa, _cross(labels, 4), GRID, self_head=7)


def test_constant_and_nan_maps_are_refused_by_layout_from_maps():
    n = GRID[0] * GRID[1]
    cross = torch.rand(n)
    with pytest.raises(ValueError, match="self_map is constant"):
        layout_from_maps(torch.full((n, n), 1.0 / n), cross, GRID)
    sm = _local(GRID, 1.0).float()
    with pytest.raises(ValueError, match="cross_map is constant"):
        layout_from_maps(sm, torch.zeros(n), GRID)
    bad = sm.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="self_map contains 1 NaN/inf"):
        layout_from_maps(bad, cross, GRID)


def test_otsu_splits_two_clusters_between_them():
    v = torch.tensor([[0.0, 0.1, 0.2, 0.1, 3.0, 3.2, 2.9]])
    thr = float(otsu_threshold(v)[0])
    assert 0.2 < thr < 2.9
    assert otsu_threshold(torch.ones(1, 5))[0] == float("inf")  # nothing to split


def test_temporal_vote_is_a_sliding_median():
    assert temporal_vote([2, 2, 5, 2, 2], 1) == [2, 2, 2, 2, 2]
    # the first frame votes over frames 0..2 (the window moves inward at the ends)
    assert temporal_vote([1, 3, 3, 4], 1) == [3, 3, 3, 3]
    assert temporal_vote([2, 5], 1) == [2, 5]  # two frames: a tie, no vote
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"temporal_vote: window=.*expected an int >= 0"):
            temporal_vote([2, 2, 5], bad)
    assert temporal_vote([2, 5, 2], 0) == [2, 5, 2]


def test_paper_preset_and_new_fields_are_validated():
    paper = NuminaConfig.paper()
    assert (paper.proposal_cut, paper.head_choice, paper.temporal_window, paper.boost_mode) == \
        ("correlation", "image_score", 0, "absolute")
    assert NuminaConfig.paper(focus_overlap=0.3).focus_overlap == 0.3
    default = NuminaConfig()
    assert (default.proposal_cut, default.head_choice) == ("adaptive", "containment")
    for field, value, words in [("edge_band", -1, "an int >= 0"),
                                ("temporal_window", 1.5, "an int >= 0"),
                                ("edge_reference_quantile", 1.5, "[0, 1] or None"),
                                ("min_lift", -0.1, "[0, 1)"),
                                ("sink_mass", 0.0, "(0, 1]"),
                                ("core_quantile", 1.0, "[0, 1) or None"),
                                ("link_ratio", 0.0, "(0, 1] or None"),
                                ("focus_floor_quantile", 1.0, "[0, 1)"),
                                ("head_choice", "pca", "one of")]:
        with pytest.raises(ValueError, match=rf"NuminaConfig\.{field}=.*{re.escape(words)}"):
            NuminaConfig(**{field: value})


def test_shared_family_is_reproducible_and_well_formed():
    a = make_shared_scene(3, (10, 16), noise=0.5, seed=4, n_frames=2)
    b = make_shared_scene(3, (10, 16), noise=0.5, seed=4, n_frames=2)
    assert a.head_types == b.head_types and sorted(a.head_types) == sorted(SHARED_HEAD_TYPES)
    assert a.head_types.count("instance") == 1
    fr = a.frames[0]
    assert torch.equal(fr.self_attn, b.frames[0].self_attn)
    assert fr.self_attn.shape == (12, 160, 160) and fr.cross_attn.shape == (12, 160)
    assert torch.allclose(fr.self_attn.sum(-1), torch.ones(12, 160), atol=1e-4)
    assert fr.count == 3 and (fr.cross_attn >= 0).all()


def test_feature_family_is_reproducible_and_its_instance_head_separates_objects():
    from synthetic_feature_scenes import FEATURE_HEAD_TYPES, make_feature_scene
    a = make_feature_scene(3, (12, 20), noise=0.5, seed=4, n_frames=2)
    b = make_feature_scene(3, (12, 20), noise=0.5, seed=4, n_frames=2)
    assert a.head_types == b.head_types and sorted(a.head_types) == sorted(FEATURE_HEAD_TYPES)
    fr = a.frames[0]
    assert torch.equal(fr.self_attn, b.frames[0].self_attn)
    assert fr.self_attn.shape == (12, 240, 240) and fr.cross_attn.shape == (12, 240)
    assert torch.allclose(fr.self_attn.sum(-1), torch.ones(12, 240), atol=1e-4)
    assert fr.count == 3 and (fr.cross_attn >= 0).all()
    # the instance head keeps an object's rows on the object far more than another object
    head = fr.self_attn[a.head_types.index("instance")]
    lab = torch.from_numpy(fr.labels.reshape(-1))
    own = torch.stack([head[lab == k][:, lab == k].sum(1).mean() for k in (1, 2, 3)])
    other = torch.stack([head[lab == k][:, (lab > 0) & (lab != k)].sum(1).mean() for k in (1, 2, 3)])
    assert (own > 3 * other).all()


def test_class_head_first_does_not_take_the_choice():
    # a class-level head (every foreground row spreads over both touching squares), first
    # in head order so that it would win a tie: the instance head is still chosen
    labels = _touching_pair()
    class_head = _instance_head((labels > 0).astype(np.int64), GRID).float()
    sa = torch.cat([class_head[None],
                    _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])])
    layout = layout_from_attention(sa, _cross(labels, 5), GRID)
    assert layout.self_head == 3 and layout.count == 2


@pytest.mark.parametrize("cut", ["adaptive", "correlation"])
@pytest.mark.parametrize("choice", ["containment", "image_score"])
def test_every_cut_and_head_choice_combination_gives_a_consistent_layout(cut, choice):
    labels = _touching_pair()
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    layout = layout_from_attention(sa, _cross(labels, 4), GRID,
                                   NuminaConfig(proposal_cut=cut, head_choice=choice))
    assert layout.labels.shape == GRID and layout.proposals.shape == GRID
    assert layout.count == int(layout.labels.max())
    assert set(np.unique(layout.labels)) == set(range(layout.count + 1))
    assert layout.head_scores.shape == (4,)


def test_partition_reads_half_precision_maps_like_float32():
    from numina_hooks.numina.partition import partition_heads

    sa = _heads(_touching_pair(), 2, ["positional", "diffuse", "instance", "positional"])
    want = partition_heads(sa, GRID)
    got = partition_heads(sa.bfloat16(), GRID)
    assert np.array_equal(got.regions, want.regions)
    assert got.regions[2].max() >= 2  # the instance head's two squares are separate regions


def test_an_instance_claimed_by_two_nouns_goes_to_the_stronger_one():
    from numina_hooks.numina.identify import exclusive_instances

    cats = np.zeros((4, 6), np.int32)
    cats[0:2, 0:2] = 1  # shared with the dogs
    cats[0:2, 4:6] = 2  # the cats' own
    dogs = np.zeros((4, 6), np.int32)
    dogs[0:2, 0:3] = 1  # overlaps cats' 1
    dogs[3, 0:2] = 2
    cross_cats = np.full((4, 6), 0.1, np.float32)
    cross_cats[0:2, 4:6] = 1.0  # the cats' peak is on their own instance; weak on the shared one
    cross_dogs = np.full((4, 6), 0.1, np.float32)
    cross_dogs[0:2, 0:3] = 0.9
    cross_dogs[3, 0:2] = 1.0
    labels = {"cats": cats.copy(), "dogs": dogs.copy()}
    exclusive_instances(labels, {"cats": cross_cats, "dogs": cross_dogs})
    assert labels["dogs"].max() == 2 and np.array_equal(labels["dogs"], dogs)  # dogs keep both
    assert labels["cats"].max() == 1  # the shared one left the cats, renumbered
    assert (labels["cats"] == 1).sum() == 4 and labels["cats"][0, 4] == 1
    assert not ((labels["cats"] > 0) & (labels["dogs"] > 0)).any()


def test_a_noun_spread_over_the_frame_does_not_take_an_object_from_one_that_singles_it_out():
    """Relative to its own peak a flat map is near 1 everywhere; the noun whose attention
    concentrates on the object keeps it."""
    from numina_hooks.numina.identify import exclusive_instances

    shared = np.zeros((4, 6), np.int32)
    shared[1:3, 1:3] = 1
    cross_flat = np.full((4, 6), 0.20, np.float32)  # "cats": the same share on every patch
    cross_flat[1:3, 1:3] = 0.21
    cross_local = np.full((4, 6), 0.02, np.float32)  # "dogs": on the object, little elsewhere
    cross_local[1:3, 1:3] = 0.5
    labels = {"cats": shared.copy(), "dogs": shared.copy()}
    exclusive_instances(labels, {"cats": cross_flat, "dogs": cross_local})
    assert labels["cats"].max() == 0 and np.array_equal(labels["dogs"], shared)


def _split_object_and_neighbour(occluder: int = 1):
    """Instance 1 is one object seen in two 3x3 pieces with an occluder ``occluder`` patches
    wide (background) between them; instance 2 is a separate object below."""
    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:4, 1:4] = 1
    labels[1:4, 4 + occluder:7 + occluder] = 1
    labels[5:8, 4:8] = 2
    return labels


def test_an_object_cut_in_two_by_an_occluder_counts_once():
    labels = _split_object_and_neighbour()
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    cross = _cross(labels, 4)
    layout = layout_from_attention(sa, cross, GRID)
    assert layout.self_head == 2 and layout.count == 2
    left, right = layout.labels[1:4, 1:4], layout.labels[1:4, 5:8]
    assert (left > 0).mean() >= 0.75 and (right > 0).mean() >= 0.75
    assert len(set(left[left > 0].tolist()) | set(right[right > 0].tolist())) == 1  # one label
    # without the link the two pieces are counted as two objects
    assert layout_from_attention(sa, cross, GRID, NuminaConfig(link_ratio=None)).count == 3


@pytest.mark.parametrize("occluder", [2, 3, 4])
def test_pieces_out_of_reach_are_not_joined(occluder):
    """Two 3x3 pieces that the instance head gives one identity, with ``occluder`` patches
    between them, lie ``occluder + 1`` apart (patch centres): beyond the default reach on
    this 8x12 grid (max(2, a tenth of 8, half the diameter of a disc of 18 patches, 2.4)).
    They count as two objects (two identical animals, or a head that gives a few objects one
    identity, look like this too); a reach that takes them in, or none, joins them (the map's
    veto off: the noun's map falls to its background over the occluder, and the default veto
    keeps the two pieces apart at any reach: a known cost of ``link_map_veto``)."""
    labels = _split_object_and_neighbour(occluder=occluder)
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    cross = _cross(labels, 4)
    layout = layout_from_attention(sa, cross, GRID)
    assert layout.self_head == 2 and layout.count == 3
    assert layout_from_attention(sa, cross, GRID, NuminaConfig(link_reach=None)).count == 3  # vetoed
    no_veto = NuminaConfig(link_map_veto=None)
    assert layout_from_attention(sa, cross, GRID, no_veto).count == 3
    assert layout_from_attention(sa, cross, GRID, replace(no_veto, link_reach=occluder + 1.0)).count == 2
    assert layout_from_attention(sa, cross, GRID, replace(no_veto, link_reach=None)).count == 2
    # the reach grows with the pieces' size: a factor of 1 reaches the diameter of a disc
    # of 18 patches, 4.8: the pieces 3 and 4 apart join, those 5 apart do not
    wide = replace(no_veto, link_reach_factor=1.0)
    assert layout_from_attention(sa, cross, GRID, wide).count == (2 if occluder <= 3 else 3)
    # and with the grid: half the grid's 8 rows reaches 4 patches
    finer = replace(no_veto, link_reach_grid_share=0.5)
    assert layout_from_attention(sa, cross, GRID, finer).count == (2 if occluder <= 3 else 3)


@pytest.mark.parametrize("n, seed", [(2, 3), (3, 2), (4, 0)])
def test_noisy_edges_across_a_seam_do_not_merge_touching_objects(n, seed):
    # project scenes at the highest noise on the small grid: a few edges across the seam
    # between two objects pass the cut; plain components merge the objects, cores do not
    # (nor do the regions' peaks, which are left out here to compare the cores alone)
    from synthetic_scenes import SELF_HEAD_TYPES, make_scene
    fr = make_scene(n, (15, 26), n_frames=1, noise=1.0, seed=seed).frames[0]
    head = SELF_HEAD_TYPES.index("instance")
    plain = layout_from_attention(fr.self_attn, fr.cross_attn, (15, 26),  # cores alone compared
                                  NuminaConfig(core_quantile=None, unclaimed_min_lift=None, peak_gap=None),
                                  self_head=head)
    assert plain.count < fr.count
    assert layout_from_attention(fr.self_attn, fr.cross_attn, (15, 26)).count == fr.count


def test_bar_objects_are_elongated_and_a_bad_shape_is_refused():
    from synthetic_scenes import random_instance_masks
    rng = np.random.default_rng(3)
    masks, _, _ = random_instance_masks(rng, (30, 52), 4, (3.0, 4.0), 0.0, shape="bar")
    assert len(masks) == 4
    for m in masks:  # the spread along the long axis is well over the short axis'
        ys, xs = np.nonzero(m)
        low, high = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(float)))
        assert high > 3.0 * low
    with pytest.raises(ValueError, match="shape='star'"):
        random_instance_masks(rng, (30, 52), 1, shape="star")


def test_elongated_objects_are_counted_in_every_family():
    from synthetic_feature_scenes import make_feature_scene
    from synthetic_scenes import make_scene
    cfg = NuminaConfig()
    for make in (make_scene, make_shared_scene, make_feature_scene):
        sc = make(3, (20, 32), noise=0.25, seed=11, n_frames=1, radius=(2.5, 3.0), shape="bar")
        fr = sc.frames[0]
        assert fr.count == 3
        assert layout_from_attention(fr.self_attn, fr.cross_attn, (20, 32), cfg).count == 3, make.__name__


def test_shared_family_instance_share_weakens_only_the_instance_head():
    def kept_on_objects(share):
        sc = make_shared_scene(3, (10, 16), noise=0.0, seed=4, instance_share=share)
        fr, types = sc.frames[0], sc.head_types
        lab = torch.from_numpy(fr.labels.reshape(-1))
        same = (lab[:, None] == lab[None, :]) & (lab[:, None] > 0)
        return [float((fr.self_attn[k] * same).sum() / (lab > 0).sum()) for k in range(len(types))], types
    full, types = kept_on_objects(1.0)
    half, _ = kept_on_objects(0.5)
    inst = types.index("instance")
    assert half[inst] < full[inst] - 0.05  # its rows keep less on their own object
    assert all(abs(a - b) < 1e-6 for k, (a, b) in enumerate(zip(full, half)) if k != inst)
    with pytest.raises(ValueError, match="instance_share=0"):
        make_shared_scene(3, (10, 16), instance_share=0)
