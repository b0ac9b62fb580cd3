"""``numina`` checks its arguments before anything loads: one line naming the option,
the value and what is expected, exit 2; a traceback only with ``--debug``."""

from __future__ import annotations

import json
import sys

import pytest

from numina_hooks import cli

from cli_helpers import cli_error as _error  # tests/ (the tests' folder is on sys.path)


GEN = ["generate", "--model", "toy", "--prompt", "three red discs and two blue squares", "--no-progress"]


@pytest.mark.parametrize("counts, expected", [
    ("discs=0", "--counts discs=0: expected a count >= 1"),
    ("discs=-1", "--counts discs=-1: expected a count >= 1"),
    ("discs=x", "'x' is not a whole number"),
    ("discs:3", "expected noun=count pairs"),
    ("cats=2", "'cats' is not a word of the prompt"),
    ("disc=2", "'disc' is not a word of the prompt"),
    ("discs=2,discs=3", "'discs' is given twice"),
])
def test_bad_counts_are_refused_before_loading(capsys, no_loading, tmp_path, counts, expected):
    assert expected in _error(capsys, GEN + ["--counts", counts, "--out", str(tmp_path / "v.gif")])


def test_counts_beyond_the_latent_grid_name_the_allowed_range(capsys, tmp_path):
    err = _error(capsys, GEN + ["--counts", "discs=500", "--out", str(tmp_path / "v.gif")])
    assert "--counts discs=500" in err and "allowed range is 1..144" in err  # 12 x 12 patches a toy frame
    assert not (tmp_path / "v.gif").exists()


def test_steps_that_cannot_reach_the_reference_step_are_refused(capsys, no_loading, tmp_path):
    out = ["--out", str(tmp_path / "v.gif")]
    assert "reference step" in _error(capsys, GEN + ["--steps", "0"] + out)
    err = _error(capsys, GEN + ["--steps", "10", "--config", '{"reference_step": 12}'] + out)
    assert "--steps 10" in err and "reference_step=12" in err


@pytest.mark.parametrize("config, expected", [
    ("{bad", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"taus": 0.2}', "unknown field 'taus'; valid fields: reference_step, reference_layer"),
    ('{"focus_overlap": 7}', "NuminaConfig.focus_overlap=7 is invalid"),
])
def test_bad_config_names_the_field(capsys, no_loading, tmp_path, config, expected):
    assert expected in _error(capsys, GEN + ["--config", config, "--out", str(tmp_path / "v.gif")])
    assert expected in _error(capsys, ["eval", "--model", "toy", "--config", config, "--out", str(tmp_path / "e")])


def test_config_keeps_reading_renamed_fields_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'tau' is deprecated, use 'focus_overlap'"):
        assert cli.parse_config_arg('{"tau": 0.3}').focus_overlap == 0.3
    with pytest.warns(DeprecationWarning), pytest.raises(cli.CliError, match="tau=7 is invalid"):
        cli.parse_config_arg('{"tau": 7}')


def test_config_from_a_json_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cross_head": "max"}))
    assert cli.parse_config_arg(str(path)).cross_head == "max"


@pytest.mark.parametrize("seeds", ["3..1", "a", "1,1", ""])
def test_bad_seeds_are_refused_everywhere(capsys, no_loading, tmp_path, seeds):
    assert "--seed" in _error(capsys, GEN + ["--seed", seeds, "--out", str(tmp_path / "v.gif")])
    assert "--seed" in _error(capsys, ["demo", "--seeds", seeds, "--out", str(tmp_path / "d")])
    assert "--seed" in _error(capsys, ["eval", "--model", "toy", "--seeds", seeds, "--out", str(tmp_path / "e")])


def test_seed_forms():
    assert cli.parse_seed_list("0") == [0]
    assert cli.parse_seed_list("0,3") == [0, 3]
    assert cli.parse_seed_list("1..3") == [1, 2, 3]


def test_bad_out_is_refused_before_loading(capsys, no_loading, tmp_path):
    assert "cannot write '.avi' videos" in _error(capsys, GEN + ["--out", str(tmp_path / "v.avi")])
    (tmp_path / "afolder.gif").mkdir()
    assert "is a folder" in _error(capsys, GEN + ["--out", str(tmp_path / "afolder.gif")])


def test_mp4_without_its_writer_fails_before_loading(capsys, no_loading, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if imageio-ffmpeg were not installed
    err = _error(capsys, GEN + ["--out", str(tmp_path / "v.mp4")])
    assert "imageio-ffmpeg" in err and "numina-hooks[media]" in err
    err = _error(capsys, ["eval", "--model", "toy", "--save-videos", "mp4", "--out", str(tmp_path / "e")])
    assert "imageio-ffmpeg" in err


def test_missing_model_folder_is_one_line(capsys, no_loading, tmp_path):
    err = _error(capsys, ["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "two cats"])
    assert "no such folder" in err
    (tmp_path / "empty").mkdir()
    assert "no model_index.json" in _error(capsys, ["generate", "--model", str(tmp_path / "empty"),
                                                    "--prompt", "two cats"])
    assert "no such folder" in _error(capsys, ["eval", "--model", "./nowhere/model", "--prompts", __file__,
                                                "--counts", __file__, "--out", str(tmp_path / "e")])


def test_debug_shows_the_traceback(no_loading, tmp_path):
    with pytest.raises(cli.CliError, match="expected a count >= 1"):
        cli.main(GEN + ["--counts", "discs=0", "--debug", "--out", str(tmp_path / "v.gif")])


def test_threads_are_checked(capsys, no_loading, tmp_path):
    for argv in (GEN + ["--out", str(tmp_path / "v.gif")], ["demo", "--out", str(tmp_path / "d")],
                 ["tour"], ["eval", "--model", "toy", "--out", str(tmp_path / "e")]):
        assert "--threads 0" in _error(capsys, argv + ["--threads", "0"])


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_eval_limit_must_be_positive(capsys, no_loading, tmp_path, limit):
    assert f"--limit {limit}" in _error(capsys, ["eval", "--model", "toy", "--limit", limit,
                                                 "--out", str(tmp_path / "e")])


def test_default_dtype_is_bf16_on_cuda_and_float32_on_cpu():
    assert cli.resolve_dtype("auto", "cuda") == "bf16" and cli.resolve_dtype("auto", "cuda:1") == "bf16"
    assert cli.resolve_dtype("auto", "cpu") == "fp32"
    assert cli.resolve_dtype("fp16", "cpu") == "fp16"


def test_a_missing_optional_dependency_is_named_at_start(capsys, no_loading, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    err = _error(capsys, ["eval", "--model", "toy", "--out", str(tmp_path / "e")])
    assert "needs matplotlib" in err and "numina-hooks[media]" in err


def test_attach_names_every_supported_runner():
    import torch

    import numina_hooks

    with pytest.raises(TypeError) as info:
        numina_hooks.attach(torch.nn.Linear(2, 2))
    supported = str(info.value).split("Supported: ", 1)[1]
    entries = [e.split(":", 1) for e in supported.split("; ")]
    names = [name.strip() for name, _ in entries]
    assert {"diffusers-wan", "diffusers-cogvideox", "official-wan", "diffsynth-wan"} <= set(names)
    assert "adapter" not in names and all(text.strip() for _, text in entries)  # no empty entry


def test_layout_from_attention_refuses_mismatched_heads_and_bad_grids():
    import torch

    from numina_hooks import layout_from_attention

    sa = torch.softmax(torch.randn(2, 16, 16), dim=-1)
    with pytest.raises(ValueError, match="self_attn has 2 heads but cross_attn has 3"):
        layout_from_attention(sa, torch.rand(3, 16), (4, 4))
    with pytest.raises(ValueError, match=r"grid=\(-4, -4\): expected \(H, W\), two ints >= 1"):
        layout_from_attention(sa, torch.rand(2, 16), (-4, -4))
    with pytest.raises(ValueError, match=r"grid=\(2, 4\) has 8 patches but the map has 16 tokens"):
        layout_from_attention(sa, torch.rand(2, 16), (2, 4))
    assert layout_from_attention(sa, torch.rand(2, 16), (4, 4)).labels.shape == (4, 4)


def test_demo_checks_its_arguments_before_loading(capsys, no_loading, tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in _error(capsys, ["demo", "--out", str(tmp_path / "file" / "demo")])
    assert "--prompts 0" in _error(capsys, ["demo", "--prompts", "0", "--out", str(tmp_path / "d")])
    assert "reference step" in _error(capsys, ["demo", "--steps", "0", "--out", str(tmp_path / "d")])
    assert "unknown field" in _error(capsys, ["demo", "--config", '{"x": 1}', "--out", str(tmp_path / "d")])


def test_the_package_attach_is_the_function_and_can_be_patched(monkeypatch):
    import importlib

    import numina_hooks

    module = importlib.import_module("numina_hooks.attach")  # importing the submodule keeps the function
    assert numina_hooks.attach is module.attach and callable(numina_hooks.attach)
    monkeypatch.setattr(numina_hooks, "attach", "patched")
    assert numina_hooks.attach == "patched"
    monkeypatch.undo()
    assert numina_hooks.attach is module.attach


def test_toy_frame_size_is_fixed(capsys, no_loading, tmp_path):
    from numina_hooks.toy.model import TOY_CALL

    wrong = TOY_CALL["height"] + 8
    err = _error(capsys, GEN + ["--height", str(wrong), "--out", str(tmp_path / "v.gif")])
    assert f"--height {wrong}: the toy model only makes {TOY_CALL['height']} (leave it unset)" in err
    err = _error(capsys, GEN + ["--num-frames", "3", "--out", str(tmp_path / "v.gif")])
    assert f"--num-frames 3: the toy model only makes {TOY_CALL['num_frames']}" in err
    err = _error(capsys, ["eval", "--model", "toy", "--width", "64", "--out", str(tmp_path / "e")])
    assert f"--width 64: the toy model only makes {TOY_CALL['width']}" in err
