"""``numina eval`` exit codes, its plot and its saved (scaled-up) videos on the toy model."""

from __future__ import annotations

import json
import math

import numpy as np

from numina_hooks import cli
from numina_hooks.eval import run
from numina_hooks.eval.detectors import ToyCounter
from numina_hooks.media import read_video
from numina_hooks.eval.report import accuracy_figure

ARGS = ["eval", "--model", "toy", "--limit", "2", "--steps", "2", "--seeds", "1", "--strategies", "plain"]


def _fail_items(monkeypatch, failing):
    real = run.generate_one

    def generate(session, it, name, seeds, clip):
        if it.index in failing:
            raise RuntimeError(f"simulated failure of item {it.index}")
        return real(session, it, name, seeds, clip)

    monkeypatch.setattr(run, "generate_one", generate)


def test_some_items_failed_exits_1_and_says_how_many(tmp_path, capsys, monkeypatch):
    _fail_items(monkeypatch, {1})
    assert cli.main(ARGS + ["--out", str(tmp_path / "e")]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 result(s) failed" in out


def test_nothing_scored_exits_1(tmp_path, capsys, monkeypatch):
    _fail_items(monkeypatch, {0, 1})
    assert cli.main(ARGS + ["--out", str(tmp_path / "e")]) == 1
    assert "nothing was scored (2 result(s) failed" in capsys.readouterr().out


def test_all_scored_exits_0_and_saved_gifs_are_scaled_up(tmp_path, capsys):
    out = tmp_path / "e"
    assert cli.main(ARGS + ["--out", str(out)]) == 0
    for i in (0, 1):
        result = json.loads((out / "results" / "plain" / f"{i:04d}.json").read_text())
        frames = read_video(out / result["video"])
        assert frames.shape == (4, 192, 192, 3)  # 24 x 24 toy frames scaled 8x


def test_a_scaled_up_gif_decodes_to_blocks_of_the_native_gif(tmp_path):
    from numina_hooks.toy.world import make_clip
    from numina_hooks.media import write_video

    clip = make_clip(0, split="any")
    noisy = np.clip(clip.frames.astype(int) + np.random.default_rng(0).integers(-30, 30, clip.frames.shape), 0, 255)
    native = read_video(write_video(noisy.astype(np.uint8), tmp_path / "native.gif", min_side=1))
    big = read_video(write_video(noisy.astype(np.uint8), tmp_path / "big.gif"))
    assert big.shape == (4, 192, 192, 3)
    assert (big == native.repeat(8, axis=1).repeat(8, axis=2)).all()  # same palette, each pixel an 8x8 block
    nouns = list(clip.counts)
    assert ToyCounter().count(big, nouns) == ToyCounter().count(native, nouns)


def test_toy_counter_counts_scaled_up_frames_like_the_originals():
    from numina_hooks.toy.world import make_clip

    for seed in range(3):
        clip = make_clip(seed, split="any")
        nouns = list(clip.counts)  # category names are toy nouns
        small = ToyCounter().count(clip.frames, nouns)
        assert small == {n: [clip.counts[n]] * len(clip.frames) for n in nouns}  # the exact counter is exact
        big = clip.frames.repeat(8, axis=1).repeat(8, axis=2)
        assert ToyCounter().count(big, nouns) == small


def test_plot_has_integer_ticks_and_a_gap_at_a_missing_count():
    summary = {"common_items": 3, "strategies": {
        "plain": {"by_requested": {"1": {"frames": 4, "acc": 1.0}, "3": {"frames": 4, "acc": 0.5}}},
    }}
    fig = accuracy_figure(summary)
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    xs, ys = list(line.get_xdata()), list(line.get_ydata())
    assert xs == [1, 2, 3] and ys[0] == 100 and math.isnan(ys[1]) and ys[2] == 50  # no line across 2
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)

