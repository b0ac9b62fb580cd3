"""Bad arguments to the public API and the ``numina`` command: each gets
an error that names the value, what was expected and what to do, before anything runs or
loads; an error between NUMINA's phases leaves the caller's generator as it was; ``on_step``
sees the number of steps the pipeline runs."""

from __future__ import annotations

import pytest
import torch

import numina_hooks
from numina_hooks import EasyCache, LayoutSeeds, Numina, hookimpl, testing
from numina_hooks import cli

from cli_helpers import cli_error as _error  # tests/ (the tests' folder is on sys.path)
from numina_hooks.numina import generate as generate_mod

PROMPT = "three cats chasing two dogs"
CALL = dict(testing.WAN_CALL, output_type="latent")  # 4 steps, a 4x4 latent grid a frame


@pytest.fixture(scope="module")
def pipe():
    p = testing.tiny_wan_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _untouched(generator: torch.Generator, seed: int = 0) -> bool:
    return torch.equal(generator.get_state(), _gen(seed).get_state())


# ------------------------------------------------------------------ the Python API
@pytest.mark.parametrize("steps", [0, -1, 2.5, "4"])
def test_a_bad_num_inference_steps_is_named(pipe, steps):
    # 0 used to fall back to the default 50 (a phase-1 error about step 20 and "no transformer call")
    with numina_hooks.attach(pipe) as handle:
        with pytest.raises(ValueError, match=rf"num_inference_steps={steps!r}: expected an int >= 1"):
            handle(prompt=PROMPT, generator=_gen(), **{**CALL, "num_inference_steps": steps})


@pytest.mark.parametrize("generator", [5, -1, "seed", [_gen(), 3]])
def test_a_generator_that_is_not_a_torch_generator_is_named(pipe, generator):
    # used to be AttributeError: 'int' object has no attribute 'get_state'
    with numina_hooks.attach(pipe) as handle:
        with pytest.raises(TypeError, match=r"generator=.*: expected a torch\.Generator"):
            handle(prompt=PROMPT, generator=generator, **CALL)


def test_counts_beyond_the_layout_grid_are_named_and_the_generator_is_rewound(pipe):
    generator = _gen()
    with numina_hooks.attach(pipe) as handle:
        with pytest.raises(ValueError, match=r"counts\['cats'\]=1000: .* 4x4 = 16 patches.*ask for fewer"):
            handle(prompt="a thousand cats", generator=generator, **CALL)
    assert _untouched(generator)  # phase 1 drew from it: rewound, as for any other error


def test_an_error_between_the_phases_leaves_the_generator_as_it_was(pipe, monkeypatch):
    with numina_hooks.attach(pipe) as handle:
        expected = handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3}, generator=_gen(), **CALL).frames

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(generate_mod, "refine_layouts", interrupted)
            generator = _gen()
            with pytest.raises(KeyboardInterrupt):
                handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3}, generator=generator, **CALL)
        assert _untouched(generator)
        assert handle.plugins == [handle.strategy]
        again = handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3}, generator=generator, **CALL).frames
    assert torch.equal(again, expected)


def test_on_step_sees_the_steps_the_pipeline_runs_when_the_call_leaves_them_out(pipe):
    class Steps:
        def __init__(self):
            self.seen = []

        @hookimpl
        def on_step(self, state):
            self.seen.append((state.step, state.num_steps))

    steps = Steps()
    call = {k: v for k, v in CALL.items() if k != "num_inference_steps"}  # the pipeline's default: 50
    with numina_hooks.attach(pipe, steps) as handle:
        handle(prompt=PROMPT, generator=_gen(), **call)
    assert steps.seen == [(i, 50) for i in range(50)]  # num_steps was None


@pytest.mark.parametrize("cls", [EasyCache, Numina, LayoutSeeds, testing.ViewRecorder])
def test_a_plugin_class_instead_of_an_instance_is_refused(pipe, cls):
    # EasyCache / ViewRecorder used to attach, then fail in the call: "missing 1 required positional argument"
    with pytest.raises(TypeError, match=rf"{cls.__name__} is a class, not a plugin: pass an instance, "
                                        rf"{cls.__name__}\(\)"):
        numina_hooks.attach(pipe, cls)
    assert numina_hooks.detach(pipe) is False  # nothing left attached
    with numina_hooks.attach(pipe, EasyCache()) as handle:
        with pytest.raises(TypeError, match="is a class"):
            handle.register(cls)
        assert len(handle.plugins) == 1


def test_a_class_whose_hooks_are_static_methods_still_registers(pipe):
    class Static:
        calls = 0

        @staticmethod
        @hookimpl
        def on_step(state):
            Static.calls += 1

    with numina_hooks.attach(pipe, Static) as handle:
        handle(prompt=PROMPT, generator=_gen(), **{**CALL, "num_inference_steps": 2})
    assert Static.calls == 2


@pytest.mark.parametrize("seeds", [5, "012", [1.5], [None], [True, 2]])
def test_layout_seeds_that_are_not_ints_are_named(seeds):
    # 5 used to fail with "'int' object is not iterable", [1.5] was silently seed 1
    with pytest.raises(TypeError, match=r"seeds=.*: expected a sequence of int seeds"):
        LayoutSeeds(seeds=seeds)


def test_parse_counts_arg_rejects_what_is_not_text():
    with pytest.raises(TypeError, match="parse_counts_arg expects a str"):
        numina_hooks.parse_counts_arg(5)  # type: ignore[arg-type]


def test_a_million_is_a_number_not_the_counted_noun():
    assert numina_hooks.parse_counts("a million stars over two tents") == {"stars": 1_000_000, "tents": 2}


# ------------------------------------------------------------------ the numina command


GEN = ["generate", "--model", "toy", "--prompt", "three red discs", "--no-progress"]


def test_an_unknown_device_is_refused_before_loading(capsys, no_loading, tmp_path):
    # used to load the model, then exit 1: "failed: RuntimeError: Expected one of cpu, cuda, ..."
    err = _error(capsys, GEN + ["--device", "bogus", "--out", str(tmp_path / "v.gif")])
    assert "--device bogus: not a torch device" in err
    err = _error(capsys, ["eval", "--model", "toy", "--device", "bogus", "--out", str(tmp_path / "e")])
    assert "--device bogus: not a torch device" in err


@pytest.mark.parametrize("seeds", ["99999999999999999999999", "0..99999999999999999999999"])
def test_a_seed_torch_cannot_take_is_refused_before_loading(capsys, no_loading, tmp_path, seeds):
    # used to exit with "Overflow when unpacking long long" (the range: after expanding it whole)
    err = _error(capsys, GEN + ["--seeds", seeds, "--out", str(tmp_path / "v.gif")])
    assert f"--seeds {seeds!r}: expected seeds from" in err
    assert "--seed '99999999999999999999999'" in _error(capsys, ["tour", "--seed", "99999999999999999999999"])


def test_eval_checks_the_videos_folder_before_loading_the_detector(capsys, no_loading, tmp_path):
    # used to load GroundingDINO first (a download), then exit 1
    out = ["--out", str(tmp_path / "e")]
    err = _error(capsys, ["eval", "--videos", str(tmp_path / "missing")] + out)
    assert "--videos" in err and "no such folder" in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["eval", "--videos", str(tmp_path / "empty")] + out)
    assert "--videos" in err and "no videos in" in err


@pytest.mark.parametrize("scale", ["nan", "inf"])
def test_a_guidance_scale_that_is_not_finite_is_refused_before_loading(capsys, no_loading, tmp_path, scale):
    # used to run and write a NaN video with exit status 0
    with pytest.raises(SystemExit) as exit_:
        cli.main(GEN + ["--guidance-scale", scale, "--out", str(tmp_path / "v.gif")])
    assert exit_.value.code == 2
    assert f"argument --guidance-scale: {scale!r}: expected a finite number" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux's /proc (a folder no file can be made in)")
def test_a_json_path_that_cannot_be_written_is_refused_before_the_demo_runs(capsys, no_loading):
    # used to run the whole demo (about 30 s), then fail writing without naming --json
    err = _error(capsys, ["demo", "--json", "/proc/numina-demo.json"])
    assert "--json /proc/numina-demo.json: cannot write it" in err


def test_a_writable_json_path_is_left_as_it_was_by_the_check(tmp_path):
    from numina_hooks.cli import _check_writable_file

    new = tmp_path / "sub" / "new.json"
    _check_writable_file(str(new), "--json")
    assert new.parent.is_dir() and not new.exists()  # the folder made, no empty file left
    old = tmp_path / "old.json"
    old.write_text('{"a": 1}')
    _check_writable_file(str(old), "--json")
    assert old.read_text() == '{"a": 1}'
