"""The ``numina`` command end to end: tour, generate (a saved tiny Wan folder and the toy
model, GIF and MP4), demo. Argument checks are in test_cli_checks.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from numina_hooks import cli, testing
from numina_hooks.media import read_video


def test_hooks_tour_prints_what_the_hooks_saw(capsys):
    assert cli.main(["tour", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "identical to the unhooked pipeline: True" in out
    assert "transformer/cond: 2, transformer/uncond: 2" in out
    assert "layer 1 cross q=(1, 2, 48, 12) k=(1, 2, 24, 12)" in out


def test_generate_from_a_local_folder_writes_a_playable_mp4(tmp_path, capsys):
    pipe = testing.tiny_wan_pipeline()
    folder = tmp_path / "tiny-wan"
    pipe.save_pretrained(folder)
    video = tmp_path / "out" / "video.mp4"
    report = tmp_path / "report"
    code = cli.main([
        "generate", "--model", str(folder), "--prompt", "three cats chasing two dogs", "--counts", "cats=4,dogs=1",
        "--steps", "3", "--height", "64", "--width", "64", "--num-frames", "9", "--dtype", "fp32",
        "--device", "cpu", "--out", str(video), "--report", str(report),
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "asked: {'cats': 4, 'dogs': 1}" in out
    frames = read_video(video)  # decoded back with ffmpeg: 9 frames, scaled up 3x from 64 px
    assert frames.shape == (9, 192, 192, 3)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["counts_asked"] == {"cats": 4, "dogs": 1}


def test_generate_with_the_toy_model_and_two_seeds(tmp_path, capsys):
    out = tmp_path / "toy.gif"
    assert cli.main(["generate", "--model", "toy", "--prompt", "three red discs", "--seed", "0..1",
                     "--steps", "3", "--out", str(out), "--no-progress", "--verbose"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "numina: loading the toy model on cpu" in captured.err  # --verbose: the logger speaks
    for seed in (0, 1):
        gif = tmp_path / f"toy_seed{seed}.gif"
        assert f"video (seed {seed}): {gif}" in text
        with Image.open(gif) as im:  # 24 x 24 toy frames, scaled up so a person can see them
            assert im.size == (192, 192) and im.n_frames == 4
    assert text.count("phase 2 ran:") == 2


def test_quiet_by_default(tmp_path, capsys):
    assert cli.main(["generate", "--model", "toy", "--prompt", "three red discs", "--steps", "1",
                     "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_demo_prints_the_difference_with_its_interval_and_writes_a_labelled_gif(tmp_path, capsys):
    json_path = tmp_path / "figures.json"
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--prompts", "2", "--seeds", "0",
                     "--steps", "4", "--json", str(json_path), "--no-progress"]) == 0
    figures = json.loads(json_path.read_text())
    assert figures["prompts"] == 2 and len(figures["rows"]) == 2
    for method in ("baseline", "numina"):
        assert 0.0 <= figures[method]["count_acc"] <= 1.0 and 0.0 <= figures[method]["tc"] <= 1.0
    for row in figures["rows"]:
        assert set(row["asked"]) <= set(row["plain_counts"][0])  # every asked category is counted
        assert len(row["plain_counts"]) == len(row["numina_counts"]) == 4  # latent frames of the toy world
    diff = figures["count_acc_difference"]
    per_pair = [r["numina"]["count_acc"] - r["baseline"]["count_acc"] for r in figures["rows"]]
    assert diff["n"] == 2 and np.isclose(diff["mean"], np.mean(per_pair))
    assert min(per_pair) - 1e-9 <= diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1] <= max(per_pair) + 1e-9
    text = capsys.readouterr().out
    assert "95% paired bootstrap interval" in text and "n = 2 prompt-seed pairs" in text
    assert "CountAcc: plain" in text
    with Image.open(tmp_path / "demo" / "plain_vs_numina.gif") as im:
        assert im.n_frames == 4
        assert im.size[0] >= 2 * 24 * 6 and im.size[1] >= 2 * 24 * 6  # two pairs, scaled up
        first = np.asarray(im.convert("RGB"))
    # the labels are drawn: dark text pixels on the white band above the first video
    assert (first[:40] < 100).all(axis=-1).sum() > 50
    assert list((tmp_path / "demo" / "layouts").glob("prompt0_seed0/frame_*.png"))


def test_help_and_version_do_not_import_torch():
    code = ("import sys, numina_hooks.cli as c\n"
            "p = c.build_parser()\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = subprocess.run([sys.executable, "-m", "numina_hooks.cli", "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip().startswith("numina-hooks ")


def test_every_option_has_help_and_commands_share_the_vocabulary():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        options = {s for a in sub._actions for s in a.option_strings}
        assert {"--threads", "--debug"} <= options, name
        if name != "tour":
            assert {"--model", "--seed", "--seeds", "--config"} <= options, name
    for name in ("demo", "generate", "eval"):
        args = parser.parse_args([name, "--model", "toy", "--prompt", "two red discs", "--seed", "1..3"]
                                 if name == "generate" else [name, "--model", "toy", "--seeds", "0,3"])
        assert cli.parse_seed_list(args.seeds) in ([1, 2, 3], [0, 3])
