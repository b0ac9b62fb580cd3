"""The identify benchmark's main run fails (exit 1) when an aim of issues 11 and 16 is missed:
the reader's time, an accuracy cell, the layout's time."""

import pytest

import bench_identify


def _result(reader_s=0.04, same=True, acc=0.9, layout_s=0.02):
    cell = {"family": "project", "grid": [30, 52], "noise": 0.5, "default": (acc, acc, acc),
            "naive": (0.4, 0.3, 0.5)}
    return {"reader": {"30x52": {"qk": {"total": reader_s}, "same_layouts": same}},
            "cells": [cell, dict(cell, noise=1.0)],
            "timing": {"project 30x52 default": {"median_s": layout_s, "p90_s": layout_s},
                       "project 30x52 paper": {"median_s": 1.0, "p90_s": 1.0}}}


def test_a_run_meeting_every_aim_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_identify, "markdown", lambda result: "table")
    assert bench_identify.main_aims(_result()) == []
    assert bench_identify._write_results(tmp_path, _result()) == 0


def test_each_missed_aim_is_named_and_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_identify, "markdown", lambda result: "table")
    assert "reader at 30x52 0.060" in bench_identify.main_aims(_result(reader_s=0.06))[0]
    assert "same layouts as the map path: False" in bench_identify.main_aims(_result(same=False))[0]
    missed = bench_identify.main_aims(_result(acc=0.3))
    assert any("noise 0.5: 0.30 < 0.85" in m for m in missed)
    assert any("below the naive counter" in m for m in missed)
    assert bench_identify.main_aims(_result(layout_s=0.031)) == [
        "layout project 30x52 default: 0.0310 s per frame and noun (aim 0.03)"]
    result = _result(layout_s=0.05)
    assert bench_identify._write_results(tmp_path, result) == 1
    assert result["missed"] == ["layout project 30x52 default: 0.0500 s per frame and noun (aim 0.03)"]


def test_the_table_states_the_aims_and_what_was_missed():
    import json
    from pathlib import Path

    stored = json.loads((Path(bench_identify.__file__).parent / "results" / "identify.json").read_text())
    text = bench_identify.markdown(stored)
    assert "Aims (issues 11 and 16)" in text
    missed = bench_identify.main_aims(stored)
    assert (("missed: " + "; ".join(missed)) if missed else "met.") in text


def test_layout_cost_refuses_fields_that_are_not_a_config(monkeypatch):
    import argparse

    import pytest

    for bad in ('{"no_such_field": 1}', "focus_contrast=0", '{"focus_contrast": -1}'):
        args = argparse.Namespace(layout_cost=bad, grids=["6x8"], families=["project"], max_count=1,
                                  frames=1)
        with pytest.raises(SystemExit, match="--layout-cost .*expected a JSON object of NuminaConfig"):
            bench_identify.run_layout_cost(args)


def test_layout_cost_times_both_configs_on_the_same_frames(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(bench_identify, "HERE", tmp_path)
    monkeypatch.setattr(bench_identify, "COST_SCENES", 1)
    args = argparse.Namespace(layout_cost='{"focus_contrast": null}', grids=["8x12"], families=["shared"],
                              max_count=2, frames=1)
    assert bench_identify.run_layout_cost(args) == 0
    text = (tmp_path / "results" / "identify_layout_cost.md").read_text()
    assert "`focus_contrast=None`" in text and "| shared | 8x12 | 2 |" in text


def test_row_sums_cost_times_the_whole_map_pass_beside_the_default(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setattr(bench_identify, "HERE", tmp_path)
    monkeypatch.setattr(bench_identify, "COST_SCENES", 1)
    passes = []
    real = bench_identify.attention_rows
    monkeypatch.setattr(bench_identify, "attention_rows", lambda *a, **k: passes.append(1) or real(*a, **k))
    args = argparse.Namespace(layout_cost=None, row_sums_cost=True, grids=["8x12"], families=["shared"],
                              max_count=2, frames=1)
    assert bench_identify.run_layout_cost(args) == 0
    text = (tmp_path / "results" / "identify_row_sums_cost.md").read_text()
    assert "every row of the map summed first" in text and "| shared | 8x12 | 2 |" in text
    assert len(passes) == 3  # the changed arm only: the first call and the 2 frames


def test_merge_families_replaces_only_the_families_run(tmp_path):
    """``--merge-families``: the families run now take the place of theirs; the other
    families' cells, their layout times and the reader stay from their run, the merged run is
    recorded and the table says which cells come from it."""
    import argparse
    import json
    import shutil
    from pathlib import Path

    import pytest

    stored_path = Path(bench_identify.__file__).parent / "results" / "identify.json"
    shutil.copy(stored_path, tmp_path / "identify.json")
    stored = json.loads(stored_path.read_text())
    args = argparse.Namespace(families=["rope"], grids=["8x12"], noise=[0.5], seeds=stored["seeds"],
                              frames=stored["frames_per_scene"], max_count=1,
                              merge_families="a test run")
    bench_identify.run_merge_families(args, tmp_path)
    merged = json.loads((tmp_path / "identify.json").read_text())
    kept = [c for c in merged["cells"] if c["family"] != "rope"]
    assert kept == json.loads(json.dumps([c for c in stored["cells"] if c["family"] != "rope"]))
    rope = [c for c in merged["cells"] if c["family"] == "rope"]
    assert [(c["grid"], c["noise"]) for c in rope] == [([8, 12], 0.5)]
    assert merged["reader"] == stored["reader"]
    assert set(merged["timing"]) == {k for k in stored["timing"] if not k.startswith("rope ")} | {
        "rope 8x12 default", "rope 8x12 paper"}
    assert merged["family_runs"]["rope"]["note"] == "a test run"
    assert "The rope family's cells and layout times: a later run" in (tmp_path / "identify.md").read_text()
    with pytest.raises(SystemExit, match="seeds"):
        bench_identify.run_merge_families(argparse.Namespace(**{**vars(args), "seeds": 1}), tmp_path)


def test_merge_families_with_more_heads_replaces_only_the_families_run(tmp_path, monkeypatch):
    """``--heads 40 --merge-families``: the family run now takes the place of its cells in the
    40-head file; the other families' cells stay, and the table names the later run."""
    import argparse
    import json
    import shutil
    from pathlib import Path

    import pytest

    stored_path = Path(bench_identify.__file__).parent / "results" / "identify_heads40.json"
    shutil.copy(stored_path, tmp_path / "identify_heads40.json")
    stored = json.loads(stored_path.read_text())
    args = argparse.Namespace(families=["rope"], grids=["30x52", "15x26"], noise=[0.5], heads=40,
                              seeds=stored["seeds"], frames=stored["frames_per_scene"], max_count=1,
                              merge_families="a test run")
    other_grid = argparse.Namespace(**{**vars(args), "grids": ["8x12"]})
    with pytest.raises(SystemExit, match="does not exist"):  # a grid whose run has no file yet
        bench_identify.run_merge_heads(other_grid, tmp_path)
    # the main grids' file, its cells made small (8x12) to keep the test short
    original = bench_identify.run_cell
    calls = []

    def small_cell(family, grid, noise, *rest, **kwargs):
        calls.append((family, grid, noise, rest[4] if len(rest) > 4 else kwargs.get("heads")))
        return original(family, (8, 12), noise, *rest, **kwargs)

    monkeypatch.setattr(bench_identify, "run_cell", small_cell)
    bench_identify.run_merge_heads(args, tmp_path)
    assert calls and all(c[0] == "rope" and c[3] == 40 for c in calls)
    merged = json.loads((tmp_path / "identify_heads40.json").read_text())
    kept = [c for c in merged["cells"] if c["family"] != "rope"]
    assert kept == [c for c in stored["cells"] if c["family"] != "rope"]
    assert [(c["grid"], c["noise"]) for c in merged["cells"] if c["family"] == "rope"] == [
        ([30, 52], 0.5), ([15, 26], 0.5)]
    assert merged["family_runs"]["rope"]["note"] == "a test run"
    assert "The rope family's cells: a later run" in (tmp_path / "identify_heads40.md").read_text()


def test_two_merges_side_by_side_keep_each_others_cells(tmp_path, monkeypatch):
    """Two ``--merge-families`` processes run side by side (one half of the families each):
    the one that finishes last keeps the cells the other wrote while it ran."""
    import argparse
    import json
    import shutil
    from pathlib import Path

    shutil.copy(Path(bench_identify.__file__).parent / "results" / "identify.json", tmp_path / "identify.json")
    stored = json.loads((tmp_path / "identify.json").read_text())

    def cells_of(family):
        return [{**c, "default": [0.123, 0.1, 0.2]} for c in stored["cells"] if c["family"] == family]

    def other_half_finishes_meanwhile(args):
        done = json.loads((tmp_path / "identify.json").read_text())
        done["cells"] = [c for c in done["cells"] if c["family"] != "shared"] + cells_of("shared")
        (tmp_path / "identify.json").write_text(json.dumps(done))
        return cells_of("rope"), {}

    monkeypatch.setattr(bench_identify, "accuracy_cells", other_half_finishes_meanwhile)
    args = argparse.Namespace(families=["rope"], seeds=stored["seeds"], frames=stored["frames_per_scene"],
                              merge_families="a test run")
    bench_identify.run_merge_families(args, tmp_path)
    merged = json.loads((tmp_path / "identify.json").read_text())
    for family in ("rope", "shared"):
        assert [c["default"][0] for c in merged["cells"] if c["family"] == family] == [0.123] * len(cells_of(family))


def test_an_absent_run_leaves_out_the_families_that_always_show_objects():
    from synthetic_heldout_scenes import make_heldout_scene
    from synthetic_video_scenes import make_video_scene

    # the video, held-out and joint families refuse a scene without objects, so ``--absent`` would
    # stop on them
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make_video_scene(0, (12, 16), n_frames=2, seed=0)
    with pytest.raises(ValueError, match="n=0: expected an integer >= 1"):
        make_heldout_scene(0, (12, 16), n_frames=2, seed=0)
    from synthetic_joint_scenes import make_joint_scene

    with pytest.raises(ValueError, match="n must be"):
        make_joint_scene(0, (12, 16), n_frames=2, seed=0)
    families = ["project", "video", "heldout", "early", "joint"]
    assert bench_identify.absent_families(families) == ["project", "early"]
    every = bench_identify.FAMILY_HEAD_TYPES
    assert set(every) - set(bench_identify.absent_families(every)) == {"video", "heldout", "joint"}

