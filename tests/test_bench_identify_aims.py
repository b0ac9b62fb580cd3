"""The identify benchmark's main run fails (exit 1) when an aim of issues 11 and 16 is missed:
the reader's time, an accuracy cell, the layout's time."""

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
