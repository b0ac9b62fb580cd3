"""LayoutGuidance's edits: what the plan asks for, at the view's token offsets, per step."""

from types import SimpleNamespace

import pytest
import torch

from numina_hooks.attention import pre_softmax_scores
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.guidance import CopyGroup, GuidancePlan, LayoutGuidance, NounPlan


def _view(step, q0=0, c0=0, batch_rows=(0,)):
    torch.manual_seed(step)
    q = torch.randn(2, 3, q0 + 32, 8)
    k = torch.randn(2, 3, c0 + 10, 8)
    return SimpleNamespace(
        step=step, q=q, k=k, scale=None, video_queries=slice(q0, q0 + 32), text_keys=slice(c0, c0 + 10),
        rows_of=lambda branch: list(batch_rows) if branch == "cond" else [],
    )


def _plan():
    copies = [CopyGroup(rows=torch.tensor([20, 21]), reference_rows=torch.tensor([1, 2, 3])),
              CopyGroup(rows=torch.tensor([25]), reference_rows=torch.tensor([5, 6]))]
    return GuidancePlan(nouns={"cats": NounPlan(columns=torch.tensor([2, 3]), suppress_rows=torch.tensor([10, 11]),
                                                boost_rows=torch.tensor([12]), copies=copies)}, frame_tokens=16)


@pytest.mark.parametrize("mode", ["absolute", "mass"])
def test_edits_follow_the_plan_the_offsets_and_the_schedule(mode):
    cfg = NuminaConfig(boost_mode=mode)
    boost_mode, boost_value = {"absolute": ("boost", cfg.boost_bias), "mass": ("share", cfg.boost_mass)}[mode]
    guidance = LayoutGuidance(_plan(), cfg, num_steps=10)
    for step, q0, c0 in [(0, 0, 0), (1, 5, 3), (0, 0, 0), (2, 5, 3)]:
        view = _view(step, q0, c0, batch_rows=(1,))
        edits = guidance.edits_for(view)
        delta = cfg.delta(step, 10)
        by_mode = {}
        for e in edits:
            by_mode.setdefault(e.mode, []).append(e)
        assert all(e.batch == 1 for e in edits)
        assert by_mode["suppress"][0].rows.tolist() == [10 + q0, 11 + q0]
        assert by_mode["suppress"][0].columns.tolist() == [2 + c0, 3 + c0]
        # the boost of circle additions: a bias boost_bias * delta, or a target share boost_mass * delta
        assert by_mode[boost_mode][0].rows.tolist() == [12 + q0]
        assert by_mode[boost_mode][0].value == boost_value * delta
        sets = by_mode["set"]
        assert [e.rows.tolist() for e in sets] == [[20 + q0, 21 + q0], [25 + q0]]
        for e, ref in zip(sets, ([1, 2, 3], [5, 6])):
            # the target: the reference instance's mean pre-softmax score per head, times delta
            expected = pre_softmax_scores(view.q, view.k, torch.tensor(ref) + q0, torch.tensor([2, 3]) + c0, 1)
            torch.testing.assert_close(e.value, expected.mean(dim=(1, 2)) * delta)


def test_no_edits_once_guidance_is_off_or_on_uncond_rows():
    cfg = NuminaConfig()
    guidance = LayoutGuidance(_plan(), cfg, num_steps=10)
    late = next(s for s in range(10) if not cfg.guidance_active(s, 10))
    assert guidance.edits_for(_view(late)) == []
    assert guidance.edits_for(_view(0, batch_rows=())) == []


def test_with_value_keeps_the_indices_and_checks_the_value():
    from numina_hooks.attention import ColumnEdit

    edit = ColumnEdit(0, [3, 1], [2], "boost", 0.5)
    again = edit.with_value(2.0)
    assert again.value == 2.0 and edit.value == 0.5 and again.rows is edit.rows
    with pytest.raises(ValueError, match="finite"):
        edit.with_value(float("nan"))
    with pytest.raises(TypeError, match="number or a tensor"):
        edit.with_value("big")


def test_plan_suppresses_outside_the_layout_only_when_asked():
    import numpy as np

    from numina_hooks.numina.guidance import plan_from_refinement
    from numina_hooks.numina.refine import Edit, RefinedFrame

    grid = (4, 4)
    before = np.zeros(grid, np.int32)
    before[0, 0] = before[3, 3] = 1  # a kept instance and one phase 2 removes
    after = np.zeros(grid, np.int32)
    after[0, 0] = 1
    added = np.zeros(grid, bool)
    added[2, 1] = True
    after[2, 1] = 2
    removed = np.zeros(grid, bool)
    removed[3, 3] = True
    rf = RefinedFrame(labels_before=before, labels_after=after, removed=[removed],
                      added=[Edit("add_circle", added, None, (2.0, 1.0))])
    paper = plan_from_refinement({"cats": [rf, rf]}, {"cats": [4]}, grid).nouns["cats"]
    assert paper.suppress_rows.tolist() == [15, 31]  # the removed patch, in each frame
    assert paper.boost_rows.tolist() == [9, 25]
    outside = plan_from_refinement({"cats": [rf, rf]}, {"cats": [4]}, grid, suppress_outside=True).nouns["cats"]
    rows = set(outside.suppress_rows.tolist())
    assert len(rows) == 2 * (16 - 2)  # every patch but the kept and the added instance
    assert {0, 9, 16, 25}.isdisjoint(rows) and {15, 31} <= rows
    assert outside.boost_rows.tolist() == paper.boost_rows.tolist()
    # "edited": only the frame whose layout refinement changed is suppressed outside it
    kept = RefinedFrame(labels_before=after, labels_after=after)  # already the asked count
    edited = plan_from_refinement({"cats": [rf, kept]}, {"cats": [4]}, grid, suppress_outside="edited").nouns["cats"]
    assert set(edited.suppress_rows.tolist()) == {r for r in rows if r < 16}
    assert edited.boost_rows.tolist() == [9]


def test_config_checks_the_new_guidance_fields():
    with pytest.raises(ValueError, match="guide_tokens"):
        NuminaConfig(guide_tokens="words")
    with pytest.raises(ValueError, match="suppress_outside"):
        NuminaConfig(suppress_outside="yes")
    with pytest.raises(ValueError, match="exclusive_regions"):
        NuminaConfig(exclusive_regions=1)
    paper = NuminaConfig.paper()
    assert (paper.guide_tokens, paper.suppress_outside, paper.exclusive_regions) == ("noun", False, False)


def test_copied_additions_copy_their_reference_or_are_boosted_when_asked():
    import numpy as np

    from numina_hooks.numina.guidance import plan_from_refinement
    from numina_hooks.numina.refine import Edit, RefinedFrame

    grid = (4, 4)
    after = np.zeros(grid, np.int32)
    after[0, 0] = 1
    copy = np.zeros(grid, bool)
    copy[2, 2] = True
    after[2, 2] = 2
    rf = RefinedFrame(labels_before=(after == 1).astype(np.int32), labels_after=after,
                      added=[Edit("add_copy", copy, after == 1, (2.0, 2.0))])
    copied = plan_from_refinement({"cats": [rf]}, {"cats": [4]}, grid).nouns["cats"]
    assert copied.boost_rows.numel() == 0
    assert [(c.rows.tolist(), c.reference_rows.tolist()) for c in copied.copies] == [([10], [0])]
    boosted = plan_from_refinement({"cats": [rf]}, {"cats": [4]}, grid, boost_copies=True).nouns["cats"]
    assert boosted.boost_rows.tolist() == [10] and not boosted.copies
