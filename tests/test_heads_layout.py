"""Head scoring, cross-attention choice and the countable layout on synthetic scenes."""

import numpy as np
import pytest
import torch

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.heads import score_self_attention_heads, select_cross_attention
from numina_hooks.numina.layout import (layout_from_attention, layout_from_maps,
                                        naive_cross_count)
from synthetic_scenes import SELF_HEAD_TYPES, make_scene  # benchmarks/ (on sys.path via conftest.py)

GRID = (20, 32)


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(n, GRID, noise=0.25, seed=10 + n, close=0.0) for n in (1, 2, 3, 4)]


def test_easy_scenes_counted_exactly(scenes):
    cfg = NuminaConfig(cross_head="mean")
    for sc in scenes:
        fr = sc.frames[0]
        layout = layout_from_attention(fr.self_attn, fr.cross_attn, GRID, cfg)
        assert layout.count == fr.count, (fr.count, SELF_HEAD_TYPES[layout.self_head])
        assert layout.labels.dtype == np.int32 and layout.labels.shape == GRID
        assert set(np.unique(layout.labels)) == set(range(layout.count + 1))


def test_a_layout_prints_as_one_line(scenes):
    fr = scenes[1].frames[0]
    layout = layout_from_attention(fr.self_attn, fr.cross_attn, GRID)
    text = repr(layout)
    sizes = [int((layout.labels == k).sum()) for k in range(1, layout.count + 1)]
    assert "\n" not in text and len(text) < 200
    assert text.startswith(f"Layout(count={layout.count}, grid=20x32, self_head={layout.self_head}, ")
    assert f"instance_patches={sizes}" in text


def test_instances_are_4_connected_and_match_truth(scenes):
    from scipy.ndimage import label
    fr = scenes[2].frames[0]
    inst = fr.self_attn[SELF_HEAD_TYPES.index("instance")]
    cross, _ = select_cross_attention(fr.cross_attn, "mean")
    layout = layout_from_maps(inst, cross, GRID, NuminaConfig())
    assert layout.count == fr.count
    for k in range(1, layout.count + 1):
        assert label(layout.labels == k)[1] == 1
        overlap = np.bincount(fr.labels[layout.labels == k], minlength=fr.count + 1)
        assert overlap[1:].max() >= 0.6 * (layout.labels == k).sum()  # mostly one true object


def test_head_score_prefers_structured_over_diffuse_and_local(scenes):
    for sc in scenes[1:]:
        scores = score_self_attention_heads(sc.frames[0].self_attn, GRID)
        assert scores.shape == (len(SELF_HEAD_TYPES),)
        best = SELF_HEAD_TYPES[int(scores.argmax())]
        assert best in ("instance", "class", "mixed"), best


def test_accepts_numpy_and_hw_cross_maps(scenes):
    fr = scenes[1].frames[0]
    a = layout_from_attention(fr.self_attn.numpy(), fr.cross_attn.reshape(-1, *GRID).numpy(), GRID)
    b = layout_from_attention(fr.self_attn, fr.cross_attn, GRID)
    assert a.count == b.count and (a.labels == b.labels).all()
    assert a.focus.dtype == bool and a.proposals.shape == GRID


def test_one_cross_map_for_the_noun_reads_like_the_mean_over_heads(scenes):
    # a user who averaged the heads already (or picked one) passes one map: [HW], [H, W] or
    # [1, HW], whatever the self-attention's head count; it reads as the per-head maps do
    # with cross_head="mean"
    mean_cfg = NuminaConfig(cross_head="mean")
    for sc in scenes[1:]:
        fr = sc.frames[0]
        ref = layout_from_attention(fr.self_attn, fr.cross_attn, GRID, mean_cfg)
        one = fr.cross_attn.reshape(fr.cross_attn.shape[0], -1).mean(0)
        for form in (one, one.reshape(GRID), one[None], one.numpy()):
            got = layout_from_attention(fr.self_attn, form, GRID)
            assert got.count == ref.count == fr.count
            assert (got.labels == ref.labels).all()


def test_cross_maps_of_other_heads_or_a_batch_are_refused_with_what_to_pass(scenes):
    fr = scenes[1].frames[0]
    ca = fr.cross_attn.reshape(fr.cross_attn.shape[0], -1)
    with pytest.raises(ValueError, match=r"has 3 heads but cross_attn has 2: .*one map for the noun, \[HW\]"):
        layout_from_attention(fr.self_attn[:3], ca[:2], GRID)
    with pytest.raises(ValueError, match=r"got shape \(1, \d+, 640\): pass one batch row, cross_attn\[b\]"):
        layout_from_attention(fr.self_attn, ca[None], GRID)
    with pytest.raises(ValueError, match=r"\[HW\] or \[H, W\] \(one map\), with HW=640; got shape \(639,\)"):
        layout_from_attention(fr.self_attn, ca.mean(0)[:-1], GRID)


def test_select_cross_attention_modes():
    x = torch.zeros(3, 6)
    x[1, 2] = 5.0
    x[2] = 1.0
    m, h = select_cross_attention(x, "max")
    assert h == 1 and m[2] == 5.0
    m, h = select_cross_attention(x, "mean")
    assert h == -1 and torch.allclose(m, x.mean(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_is_a_clear_error(bad, scenes):
    fr = scenes[0].frames[0]
    sa = fr.self_attn.clone()
    sa[0, 3, 4] = bad
    with pytest.raises(ValueError, match="self_attn contains 1 NaN/inf"):
        layout_from_attention(sa, fr.cross_attn, GRID)
    ca = fr.cross_attn.clone()
    ca[0, 0] = bad
    with pytest.raises(ValueError, match="cross_attn contains"):
        layout_from_attention(fr.self_attn, ca, GRID)


def test_wrong_grid_is_a_clear_error(scenes):
    fr = scenes[0].frames[0]
    with pytest.raises(ValueError, match="grid"):
        layout_from_attention(fr.self_attn, fr.cross_attn, (10, 10))
    with pytest.raises(ValueError, match=r"one head's \[HW, HW\] map goes to layout_from_maps"):
        layout_from_attention(fr.self_attn[0], fr.cross_attn, GRID)
    with pytest.raises(ValueError, match=r"pass one batch row, self_attn\[b\]"):
        layout_from_attention(fr.self_attn[None], fr.cross_attn, GRID)


def test_a_transposed_grid_is_refused_naming_the_right_one(scenes):
    # (W, H) has as many patches as (H, W): the layout would be read on the wrong
    # neighbours and count wrong without a word; the rows' positional part tells
    fr = scenes[2].frames[0]
    H, W = GRID
    with pytest.raises(ValueError, match=rf"grid=\({W}, {H}\) looks transposed: .* Pass grid=\(H, W\) = \({H}, {W}\)"):
        layout_from_attention(fr.self_attn, fr.cross_attn, (W, H))
    from numina_hooks.numina.identify import layouts_from_attention
    with pytest.raises(ValueError, match=r"layouts_from_attention: grid=.* looks transposed"):
        layouts_from_attention(fr.self_attn, {"noun": fr.cross_attn}, (W, H))
    assert layout_from_attention(fr.self_attn, fr.cross_attn, GRID).count == fr.count


def test_a_map_without_a_positional_part_is_read_on_either_grid():
    # no evidence either way (random rows): the grid as given is taken, in both orientations
    g = torch.Generator().manual_seed(0)
    sa = torch.softmax(torch.randn(4, 96, 96, generator=g), dim=-1)
    ca = torch.rand(4, 96, generator=g)
    for grid in ((8, 12), (12, 8)):
        assert layout_from_attention(sa, ca, grid).labels.shape == grid


def test_a_map_over_several_frames_is_refused_with_how_to_take_one_frame(scenes):
    # the whole video's self-attention (two frames here) with one frame's grid: the error
    # says how many frames it holds and how to cut one frame's block
    fr = scenes[1].frames[0]
    h, n = fr.self_attn.shape[:2]
    video = torch.zeros(h, 2 * n, 2 * n)
    video[:, :n, :n] = 0.6 * fr.self_attn
    video[:, :n, n:] = 0.4 / n
    video[:, n:, :n] = 0.4 / n
    video[:, n:, n:] = 0.6 * fr.self_attn
    cross = fr.cross_attn.repeat(1, 2)
    with pytest.raises(ValueError, match=r"holds 2 frames of this grid: pass one frame's tokens"):
        layout_from_attention(video, cross, GRID)
    with pytest.raises(ValueError, match=r"holds 2 frames of this grid"):
        naive_cross_count(cross.mean(0), GRID)
    block = layout_from_attention(video[:, n:, n:], cross[:, n:], GRID)  # as the error says
    assert block.count == fr.count


@pytest.mark.parametrize("kind", ["uniform", "constant_cross", "zero_cross", "tiny"])
@pytest.mark.parametrize("preset", ["default", "paper"])
def test_constant_maps_are_refused_clearly(kind, preset):
    # a constant map holds no layout: refused with the tensor's name (both algorithms)
    grid = (1, 1) if kind == "tiny" else (6, 8)
    n = grid[0] * grid[1]
    sa = torch.full((3, n, n), 1.0 / n)
    if kind in ("constant_cross", "zero_cross"):
        sa = torch.softmax(torch.randn(3, n, n, generator=torch.Generator().manual_seed(0)), -1)
    ca = torch.rand(3, n)
    if kind == "constant_cross":
        ca = torch.full((3, n), 0.3)
    if kind == "zero_cross":
        ca = torch.zeros(3, n)
    name = "cross_attn" if kind in ("constant_cross", "zero_cross") else "self_attn"
    cfg = NuminaConfig() if preset == "default" else NuminaConfig.paper()
    with pytest.raises(ValueError, match=f"{name} is constant"):
        layout_from_attention(sa, ca, grid, cfg)


def test_naive_counter_merges_close_instances():
    sc = make_scene(6, (30, 52), noise=0.5, seed=3, close=1.0)
    assert naive_cross_count(sc.frames[0].cross_attn, (30, 52)) < sc.frames[0].count


def test_hdbscan_focus_counts_easy_scenes(scenes):
    # the optional extra numina-hooks[hdbscan] (part of the test extra): the non-default
    # focus clustering still gives the true count on well-separated objects
    pytest.importorskip("hdbscan", reason="pip install 'numina-hooks[hdbscan]'")
    cfg = NuminaConfig(cross_head="mean", focus_clustering="hdbscan")
    for sc in scenes:
        fr = sc.frames[0]
        layout = layout_from_attention(fr.self_attn, fr.cross_attn, GRID, cfg)
        assert layout.count == fr.count
        assert layout.focus.any()


def test_hdbscan_missing_is_a_clear_error_naming_the_extra(scenes, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "hdbscan", None)  # makes `import hdbscan` fail
    fr = scenes[1].frames[0]
    cfg = NuminaConfig(cross_head="mean", focus_clustering="hdbscan")
    with pytest.raises(ImportError, match=r"numina-hooks\[hdbscan\].*focus_clustering='dbscan'"):
        layout_from_attention(fr.self_attn, fr.cross_attn, GRID, cfg)
    # the default does not need it
    assert layout_from_attention(fr.self_attn, fr.cross_attn, GRID, NuminaConfig(cross_head="mean")).count == fr.count


def test_rows_that_keep_part_of_their_mass_give_the_frames_own_layout(scenes):
    # the frame's block of attention over several frames (or the video block of joint
    # attention) keeps a different share of each row on the frame's keys: the rows are
    # divided by their sums, so the layout is the one of the frame's own softmax
    from numina_hooks.numina.heads import attention_rows
    for sc in scenes[1:]:
        fr = sc.frames[0]
        g = torch.Generator().manual_seed(fr.count)
        share = torch.rand(fr.self_attn.shape[0], fr.self_attn.shape[1], 1, generator=g) * 0.3 + 0.02
        own = layout_from_attention(fr.self_attn, fr.cross_attn, GRID)
        block = layout_from_attention(fr.self_attn * share, fr.cross_attn, GRID)
        assert block.count == own.count == fr.count
        assert block.self_head == own.self_head
        np.testing.assert_array_equal(block.labels, own.labels)
        one = layout_from_maps(fr.self_attn[own.self_head] * share[own.self_head], fr.cross_attn.mean(0), GRID)
        np.testing.assert_array_equal(
            one.labels, layout_from_maps(fr.self_attn[own.self_head], fr.cross_attn.mean(0), GRID).labels)
    sa = scenes[0].frames[0].self_attn
    assert attention_rows(sa, "self_attn") is sa  # rows summing to 1: read as they are, no copy


def test_scores_instead_of_probabilities_are_refused_clearly(scenes):
    fr = scenes[1].frames[0]
    logits = torch.log(fr.self_attn.clamp_min(1e-12))
    with pytest.raises(ValueError, match="self_attn has negative entries .*torch.softmax"):
        layout_from_attention(logits, fr.cross_attn, GRID)
    with pytest.raises(ValueError, match="self_attn has negative entries"):
        layout_from_attention(logits, fr.cross_attn, GRID, NuminaConfig.paper())
    with pytest.raises(ValueError, match="self_map has negative entries"):
        layout_from_maps(logits[0], fr.cross_attn.mean(0), GRID)
    with pytest.raises(ValueError, match="cross_attn has negative entries"):
        layout_from_attention(fr.self_attn, fr.cross_attn - fr.cross_attn.mean(), GRID)
    empty = fr.self_attn.clone()
    empty[0, 5] = 0.0  # a row with no mass on the frame's keys
    # the paper preset reads the whole map and sums every row; the default samples the rows
    # (ROW_SUM_SAMPLE_ROWS evenly spaced ones, the first among them)
    with pytest.raises(ValueError, match="self_attn: 1 rows sum to 0 or less"):
        layout_from_attention(empty, fr.cross_attn, GRID, NuminaConfig.paper())
    empty[1, 0] = 0.0
    with pytest.raises(ValueError, match="self_attn: 1 rows sum to 0 or less"):
        layout_from_attention(empty, fr.cross_attn, GRID)


def test_maps_that_require_grad_are_read_like_any_other(scenes):
    # attention captured with autograd on (a training loop, a hook without no_grad)
    fr = scenes[2].frames[0]
    sa, ca = fr.self_attn.clone().requires_grad_(True), fr.cross_attn.clone().requires_grad_(True)
    for cfg in (NuminaConfig(), NuminaConfig.paper()):
        np.testing.assert_array_equal(layout_from_attention(sa, ca, GRID, cfg).labels,
                                      layout_from_attention(fr.self_attn, fr.cross_attn, GRID, cfg).labels)
    np.testing.assert_array_equal(layout_from_maps(sa[0], ca.mean(0), GRID).labels,
                                  layout_from_maps(fr.self_attn[0], fr.cross_attn.mean(0), GRID).labels)
