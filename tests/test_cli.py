"""The ``numina`` command."""

from __future__ import annotations

import json

import pytest

from numina_hooks import cli, testing


def test_hooks_tour_prints_what_the_hooks_saw(capsys):
    assert cli.main(["tour", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "identical to the unhooked pipeline: True" in out
    assert "transformer/cond: 2, transformer/uncond: 2" in out
    assert "layer 1 cross q=(1, 2, 48, 12) k=(1, 2, 24, 12)" in out


def test_generate_from_a_local_folder(tmp_path, capsys):
    pipe = testing.tiny_wan_pipeline()
    folder = tmp_path / "tiny-wan"
    pipe.save_pretrained(folder)
    video = tmp_path / "out" / "video.gif"
    report = tmp_path / "report"
    code = cli.main([
        "generate", "--model", str(folder), "--prompt", "three cats chasing two dogs", "--counts", "cats=4,dogs=1",
        "--steps", "3", "--height", "64", "--width", "64", "--num-frames", "9", "--dtype", "fp32",
        "--device", "cpu", "--out", str(video), "--report", str(report),
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "asked: {'cats': 4, 'dogs': 1}" in out
    assert video.exists() and video.stat().st_size > 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts_asked"] == {"cats": 4, "dogs": 1}


def test_bad_counts_argument_is_explained():
    with pytest.raises(SystemExit, match="expected noun=int pairs"):
        cli._parse_counts_arg("cats:3")


def test_demo_runs_plain_vs_numina_on_the_toy_model(tmp_path, capsys):
    json_path = tmp_path / "figures.json"
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--prompts", "2", "--seeds", "0",
                     "--steps", "6", "--json", str(json_path)]) == 0
    figures = json.loads(json_path.read_text())
    assert figures["prompts"] == 2 and len(figures["rows"]) == 2
    for method in ("baseline", "numina"):
        assert 0.0 <= figures[method]["count_acc"] <= 1.0 and 0.0 <= figures[method]["tc"] <= 1.0
    for row in figures["rows"]:
        assert set(row["asked"]) <= set(row["plain_counts"][0])  # every asked category is counted
        assert len(row["plain_counts"]) == len(row["numina_counts"]) == 4  # latent frames of the toy world
    assert (tmp_path / "demo" / "plain_vs_numina.gif").stat().st_size > 0
    assert list((tmp_path / "demo" / "layouts").glob("prompt0_seed0/frame_*.png"))
    assert "CountAcc: plain" in capsys.readouterr().out
