"""benchmarks/ablate_identify.py: the default against the default with one rule switched off,
on the same frames; the summary's change is what the per-scene hits say."""

import json

import numpy as np
import pytest

import ablate_identify as A
from numina_hooks.numina.config import NuminaConfig

ARGS = ["--sets", "6000", "--families", "project", "--grids", "15x26", "--noise", "0.5",
        "--scenes", "1", "--frames", "1"]


def test_every_rule_is_a_valid_change_away_from_the_default():
    default = NuminaConfig()
    for rule, (change, what) in A.RULES.items():
        cfg = NuminaConfig(**change)  # refused by NuminaConfig's checks if it were invalid
        assert any(getattr(cfg, k) != getattr(default, k) for k in change), rule
        assert what


def test_a_run_reports_each_rule_from_the_same_frames(tmp_path, monkeypatch):
    resume = tmp_path / "cells.json"
    assert A.main([*ARGS, "--rules", "link_ratio", "exclusive", "--out", str(tmp_path),
                   "--name", "check", "--resume", str(resume)]) == 0
    result = json.loads((tmp_path / "check.json").read_text())
    (cell,) = result["cells"]
    hits = A.decoded(cell["hits"])
    assert set(hits) == {"default", "link_ratio", "exclusive"}
    assert all(len(scenes) == 8 and all(len(s) == 1 for s in scenes) for scenes in hits.values())
    rows = {r["rule"]: r for r in result["summary"]}
    want = np.mean(sum(hits["link_ratio"], [])) - np.mean(sum(hits["default"], []))
    assert rows["link_ratio"]["all"][0] == pytest.approx(want)
    assert rows["link_ratio"]["blind"] is None  # no blind family in this run
    low, high = rows["link_ratio"]["all"][1:]
    assert low <= want <= high
    assert "| link_ratio |" in (tmp_path / "check.md").read_text()
    # a second run with the same cells done reads them back instead of running them again
    def not_again(*args, **kwargs):
        raise AssertionError("a cell in --resume was run again")

    monkeypatch.setattr(A, "run_cell", not_again)
    assert A.main([*ARGS, "--rules", "link_ratio", "exclusive", "--out", str(tmp_path),
                   "--name", "again", "--resume", str(resume)]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["cells"] == result["cells"]


def test_an_unknown_rule_is_refused_with_its_name(capsys):
    with pytest.raises(SystemExit):
        A.main([*ARGS, "--rules", "no_such_rule"])
    assert "no_such_rule" in capsys.readouterr().err


def test_named_settings_are_compared_with_the_default_on_the_same_frames(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"link_ratio_0.7": {"link_ratio": 0.7}}))
    assert A.main([*ARGS, "--settings", str(settings), "--out", str(tmp_path), "--name", "vary",
                   "--title", "A closer link"]) == 0
    result = json.loads((tmp_path / "vary.json").read_text())
    assert result["kind"] == "settings" and result["rules"] == {"link_ratio_0.7": {"link_ratio": 0.7}}
    (cell,) = result["cells"]
    hits = A.decoded(cell["hits"])
    assert set(hits) == {"default", "link_ratio_0.7"}
    (row,) = result["summary"]
    want = np.mean(sum(hits["link_ratio_0.7"], [])) - np.mean(sum(hits["default"], []))
    assert row["all"][0] == pytest.approx(want)
    md = (tmp_path / "vary.md").read_text()
    assert "| link_ratio_0.7 | `link_ratio` 0.7 |" in md
    assert md.startswith("# A closer link\n") and "switched off" not in md


@pytest.mark.parametrize("text, named", [
    ('{"wide": {"link_ratio": -1}}', "link_ratio"),
    ('{"nothing": {}}', "nothing"),
    ('{"default": {"link_ratio": 0.7}}', "default"),
    ('{"typo": {"link_ration": 0.7}}', "link_ration"),
    ("[1, 2]", "list"),
    ("{not json", "not JSON"),
])
def test_bad_settings_are_refused_naming_what_is_wrong(text, named, capsys):
    with pytest.raises(SystemExit):
        A.main([*ARGS, "--settings", text])
    assert named in capsys.readouterr().err


def test_heads_other_than_twelve_reach_the_scenes_and_the_table(tmp_path, monkeypatch):
    seen = []
    real = A.B._scene

    def spy(*args, **kwargs):
        scene, types = real(*args, **kwargs)
        seen.append(len(scene.frames[0].self_attn))
        return scene, types

    monkeypatch.setattr(A.B, "_scene", spy)
    assert A.main([*ARGS, "--rules", "link_ratio", "--heads", "14", "--out", str(tmp_path),
                   "--name", "h"]) == 0
    assert seen and set(seen) == {14}
    assert json.loads((tmp_path / "h.json").read_text())["heads"] == 14
    assert "14 self-attention heads a scene" in (tmp_path / "h.md").read_text()


def test_fewer_heads_than_a_family_has_are_refused(capsys):
    with pytest.raises(SystemExit):
        A.main([*ARGS, "--rules", "link_ratio", "--heads", "5"])
    err = capsys.readouterr().err
    assert "--heads 5" in err and "at least 12" in err


def test_a_resume_file_of_another_head_count_is_refused(tmp_path, capsys):
    resume = tmp_path / "cells.json"
    resume.write_text(json.dumps([{"set": 6000, "family": "project", "grid": [15, 26], "noise": 0.5,
                                   "heads": 40, "hits": {"default": "1", "link_ratio": "1"}}]))
    with pytest.raises(SystemExit):
        A.main([*ARGS, "--rules", "link_ratio", "--resume", str(resume), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "40 heads" in err and "--heads 12" in err


def test_clutter_reaches_the_noun_maps_and_the_table(tmp_path, monkeypatch, capsys):
    added = []
    real = A.add_clutter

    def spy(frames, grid, seed, **kwargs):
        before = frames[0].cross_attn.clone()
        placed = real(frames, grid, seed, **kwargs)
        added.append(bool((frames[0].cross_attn != before).any()))
        return placed

    monkeypatch.setattr(A, "add_clutter", spy)
    resume = tmp_path / "cells.json"
    assert A.main([*ARGS, "--rules", "link_ratio", "--clutter", "--out", str(tmp_path), "--name", "c",
                   "--resume", str(resume)]) == 0
    assert len(added) == 8 and all(added)  # one scene per count, each noun map changed
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["clutter"] == json.loads(json.dumps(A.DEFAULT_CLUTTER)) and result["cells"][0]["clutter"] is True
    assert "clutter added to every noun map (3-5 bumps a scene" in (tmp_path / "c.md").read_text()
    # the same cells are not mixed with a run without clutter
    with pytest.raises(SystemExit):
        A.main([*ARGS, "--rules", "link_ratio", "--resume", str(resume), "--out", str(tmp_path)])
    assert "with --clutter" in capsys.readouterr().err
