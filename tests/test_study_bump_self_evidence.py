"""benchmarks/study_bump_self_evidence.py: the filters' counts and the summary's accuracies on
hand-built records, and one real frame measured end to end."""

import numpy as np

import study_bump_self_evidence as S


def _bump(kind, beats, z, measured=12):
    return {"kind": kind, "size": 12, "heads_measured": measured, "heads_beating_every_copy": beats,
            "mean_z": z if measured else None}


def _frame(bumps, truth, family="spread", from_cross=True):
    return {"family": family, "grid": [30, 52], "noise": 0.5, "truth": truth, "count": len(bumps),
            "from_cross": from_cross, "bumps": bumps}


def test_the_absolute_filter_keeps_bumps_shown_in_enough_heads_and_those_no_copy_fits():
    bumps = [_bump("noun", 6, 9.0), _bump("noun", 3, 2.0), _bump("background", 1, 0.5),
             _bump("noun", 0, 0.0, measured=0)]
    assert S._kept_absolute(bumps, 3) == 3
    assert S._kept_absolute(bumps, 7) == 1  # only the bump no copy fits


def test_the_relative_filter_stands_aside_when_no_bump_is_clearly_shown():
    bumps = [_bump("noun", 6, 10.0), _bump("background", 0, 1.0)]
    assert S._kept_relative(bumps, 0.2, 5.0) == 1
    weak = [_bump("noun", 2, 3.0), _bump("background", 0, 0.1)]
    assert S._kept_relative(weak, 0.2, 5.0) == 2


def test_the_summary_scores_frames_before_and_after_a_filter():
    fixed = _frame([_bump("noun", 6, 9.0), _bump("noun", 5, 8.0), _bump("background", 0, 0.2)], truth=2)
    broken = _frame([_bump("noun", 1, 1.0)], truth=1, family="multi")  # a real object dropped
    from_head = _frame([], truth=3, family="multi", from_cross=False) | {"count": 3}
    result = S.summarise({"clutter": [fixed, broken, from_head]})["clutter"]
    three = result["filters"]["beats every copy in >= 3 heads"]
    assert three["before"] == 2 / 3 and three["after"] == 2 / 3
    assert three["worst_cell"] == "multi 30x52 0.5" and np.isclose(three["worst_cell_change"], -0.5)
    sep = result["separation"]["spread"]
    assert sep["noun_bumps"] == 2 and sep["background_bumps"] == 1 and sep["auc_heads_beating"] == 1.0


def test_one_real_fallback_frame_is_measured_bump_by_bump():
    cfg = S.NuminaConfig()
    for n in range(3, 9):  # the first development scene the default reads from its map
        scene, _ = S.B._scene("multi", n, (15, 26), 1.0, 43000 + n, 1)
        rec = S.bump_records(scene.frames[0], scene, 0, (15, 26), cfg)
        if rec["from_cross"] and rec["bumps"]:
            break
    assert rec["from_cross"] and len(rec["bumps"]) == rec["count"]
    for b in rec["bumps"]:
        assert b["kind"] in ("noun", "other", "background")
        assert 0 <= b["heads_beating_every_copy"] <= b["heads_measured"] <= 12
