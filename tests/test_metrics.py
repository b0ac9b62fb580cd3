"""CountAcc and TC on hand-made count sequences with known answers."""

import pytest

from numina_hooks.metrics import count_acc, summarize, temporal_consistency, video_scores


def test_count_acc_averages_classes_then_frames():
    target = {"cat": 3, "dog": 2}
    frames = [
        {"cat": 3, "dog": 2},  # 1
        {"cat": 3, "dog": 1},  # 1/2
        {"cat": 2},            # 0 (dog missing counts 0)
        {"cat": 3, "dog": 2, "bird": 5},  # 1, extra classes ignored
    ]
    assert count_acc(frames, target) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_tc_counts_unchanged_pairs_per_class():
    target = {"cat": 3, "dog": 2}
    frames = [{"cat": 3, "dog": 2}, {"cat": 3, "dog": 1}, {"cat": 4, "dog": 1}]
    # pairs (0,1): cat same, dog changed; (1,2): cat changed, dog same -> 2 of 4
    assert temporal_consistency(frames, target) == pytest.approx(0.5)
    # TC rewards stable counts even when they are wrong
    assert temporal_consistency([{"cat": 1}] * 5, target) == 1.0
    assert count_acc([{"cat": 1}] * 5, target) == 0.0


def test_single_frame_and_empty_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_consistency([{"cat": 1}], {"cat": 1})
    with pytest.raises(ValueError, match="at least one frame"):
        count_acc([], {"cat": 1})
    with pytest.raises(ValueError, match="empty"):
        count_acc([{"cat": 1}], {})


def test_summarize_means_and_by_requested():
    videos = [
        ([{"a": 1}, {"a": 1}], {"a": 1}),                      # acc 1, tc 1
        ([{"a": 2, "b": 3}, {"a": 1, "b": 3}], {"a": 2, "b": 4}),  # acc 1/4, tc 1/2
    ]
    s = summarize(videos)
    assert s["videos"] == 2
    assert s["count_acc"] == pytest.approx((1 + 0.25) / 2)
    assert s["tc"] == pytest.approx((1 + 0.5) / 2)
    assert s["by_requested"] == {1: {"frames": 2, "acc": 1.0}, 2: {"frames": 2, "acc": 0.5},
                                 4: {"frames": 2, "acc": 0.0}}
    assert video_scores(*videos[1]) == {"count_acc": 0.25, "tc": 0.5}


# ---------------------------------------------------------------- paired bootstrap
from numina_hooks.eval.stats import paired_bootstrap  # noqa: E402


def test_paired_bootstrap_of_a_constant_shift_is_that_shift():
    a = [0.1, 0.5, 0.9, 0.3]
    mean, lo, hi = paired_bootstrap(a, [x + 0.25 for x in a], n_boot=500)
    assert mean == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_paired_bootstrap_pairs_items():
    """Large per-item spread that cancels within pairs: the paired interval stays narrow."""
    import numpy as np

    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 200)
    b = a + 0.05 + rng.normal(0, 0.01, 200)
    mean, lo, hi = paired_bootstrap(a, b)
    assert lo < mean < hi and 0.04 < lo and hi < 0.06


def test_paired_bootstrap_width_matches_the_normal_approximation():
    import numpy as np

    rng = np.random.default_rng(2)
    diff = rng.normal(0.1, 0.3, 400)
    mean, lo, hi = paired_bootstrap(np.zeros(400), diff, n_boot=4000, seed=3)
    expected = 2 * 1.96 * diff.std() / np.sqrt(400)
    assert mean == pytest.approx(diff.mean())
    assert hi - lo == pytest.approx(expected, rel=0.15)
    assert paired_bootstrap(np.zeros(400), diff, n_boot=4000, seed=3) == (mean, lo, hi)  # seeded


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="a has 2 scores but b has 3"):
        paired_bootstrap([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([0.0, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="n_boot=0"):
        paired_bootstrap([0], [1], n_boot=0)
