"""The identify study's measures on hand-made layouts, and one real pair end to end."""

import numpy as np
import pytest

import toy_identify_study as st  # benchmarks/ (on sys.path via conftest.py)


def test_patch_labels_take_the_majority_object_of_each_patch():
    pixels = np.zeros((4, 4), dtype=np.int32)
    pixels[0:2, 0:2] = 1  # patch (0, 0) fully object 1
    pixels[2, 2] = 2  # patch (1, 1) has one pixel of 2: below min_pixels
    pixels[0, 2:4] = 3  # patch (0, 1) has two pixels of 3
    out = st.patch_labels(pixels, min_pixels=2)
    assert out.tolist() == [[1, 3], [0, 0]]
    assert st.patch_labels(pixels).tolist() == [[1, 3], [0, 2]]  # default: any pixel


def test_compare_frame_counts_and_overlaps():
    truth = np.zeros((6, 6), dtype=np.int32)
    truth[0:2, 0:2] = 1
    truth[4:6, 4:6] = 2
    layout = np.zeros_like(truth)
    layout[0:2, 0:2] = 1  # exact on object 1
    layout[4:6, 5:6] = 2  # half of object 2
    row = st.compare_frame(layout, truth)
    assert row["true_count"] == 2 and row["layout_count"] == 2 and row["count_right"]
    assert row["instance_iou"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["foreground_iou"] == pytest.approx(6 / 8)
    merged = np.where(truth > 0, 1, 0)  # one instance covering both objects: count wrong
    row = st.compare_frame(merged, truth)
    assert not row["count_right"] and row["instance_iou"] == pytest.approx(0.5)
    assert st.compare_frame(np.zeros_like(truth), truth)["instance_iou"] == 0.0
    # an instance lying on another category's object is named as such
    others = np.zeros(truth.shape, dtype=bool)
    others[2:4, 2:4] = True
    stray = layout.copy()
    stray[2:4, 2:4] = 3
    assert st.compare_frame(stray, truth, others)["on_other"] == 1
    assert st.compare_frame(layout, truth, others)["on_other"] == 0


def test_summary_groups_by_true_count():
    rows = [dict(true_count=1, layout_count=1, count_right=True, instance_iou=0.5, foreground_iou=0.5),
            dict(true_count=2, layout_count=1, count_right=False, instance_iou=0.2, foreground_iou=0.4),
            dict(true_count=2, layout_count=2, count_right=True, instance_iou=0.4, foreground_iou=0.6)]
    res = st.summarize(rows, pairs=2)
    assert res["overall"]["count_right"] == pytest.approx(2 / 3)
    assert res["by_true_count"]["2"]["frames"] == 2 and res["by_true_count"]["2"]["mean_abs_count_error"] == 0.5
    assert "| 2 | 2 | 50% |" in st.markdown(res)


def test_one_real_pair_end_to_end():
    from numina_hooks.toy.model import load_toy_pipeline

    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    res = st.study(pipe, n=1, seed=0, progress=False)
    assert res["pairs"] == 1 and res["rows"]
    frames = {r["frame"] for r in res["rows"]}
    assert frames == set(range(len(frames)))  # every latent frame of every noun compared
    for r in res["rows"]:
        assert r["layout_count"] >= 0 and r["true_count"] >= 0
        assert r["foreground_iou"] is None or 0.0 <= r["foreground_iou"] <= 1.0
    assert {r["seed"] for r in res["rows"]} == {0}


def test_noise_base_reads_the_pairs_of_the_end_to_end_benchmark():
    # eval_toy_end_to_end.py --seed 3 draws prompt i with noise seed 3000 + i; the study reads
    # the same pairs with noise_base=3000 (its own default noise is seed + i)
    from numina_hooks.toy.model import load_toy_pipeline
    from numina_hooks.toy.world import held_out_prompts

    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    res = st.study(pipe, n=1, seed=3, progress=False, noise_base=3000)
    assert {r["seed"] for r in res["rows"]} == {3000}
    assert {r["prompt"] for r in res["rows"]} == {held_out_prompts(1, seed=3)[0].text}
