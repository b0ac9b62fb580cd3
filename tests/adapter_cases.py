"""The table of adapter cases the contract suite runs over.

A case names its framework's way of calling a pipeline (``kwargs_for``, ``run``,
``skip_output``); the defaults are diffusers'. A case whose ``requires`` module is
not importable is reported skipped (DiffSynth runs in ``.venv-diffsynth``:
``bash scripts/test-diffsynth.sh``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

import numina_hooks
from numina_hooks import hookimpl, testing
from numina_hooks.testing import ViewRecorder as Recorder  # noqa: F401  (the suite's observer)


def _diffusers_kwargs(case, seed):
    return dict(case.call, output_type="latent", generator=torch.Generator().manual_seed(seed))


def _diffusers_run(case, pipe, kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt="three cats chasing two dogs", **kwargs).frames


def _diffusers_skip_output(call):
    return (torch.zeros_like(call.hidden_states),)


# ----------------------------------------------------------------------------- the suite's plugins


class MapChecker:
    """At one layer and step, compare the view's maps with an explicit softmax."""

    def __init__(self, layer=1, step=1):
        self.layer, self.step = layer, step
        self.checked = set()

    @hookimpl
    def on_attention(self, view):
        if view.layer != self.layer or view.step != self.step:
            return None
        q, k = view.q.double(), view.k.double()
        geo = view.geometry
        hw = geo.frame_tokens
        if view.kind == "self":
            for frame in range(geo.frames):
                got = view.self_attention_map(frame)
                qs = q[:, :, view.video_queries.start + frame * hw:][:, :, :hw]
                ks = k[:, :, view.video_keys.start + frame * hw:][:, :, :hw]
                want = torch.softmax(qs @ ks.transpose(-1, -2) * view.scale, dim=-1)
                assert got.shape == (q.shape[0], q.shape[1], hw, hw)
                torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        else:
            cols = [1, 3]
            got = view.cross_attention_map(cols)
            probs = torch.softmax(q @ k.transpose(-1, -2) * view.scale, dim=-1)  # over every key
            block = probs[:, :, view.video_queries, view.text_keys]
            want = block[..., cols].mean(-1).reshape(q.shape[0], q.shape[1], geo.frames, geo.height, geo.width)
            torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
            assert math.isclose(view.scale, 1 / math.sqrt(q.shape[-1]))
        self.checked.add((view.kind, view.branch if isinstance(view.branch, str) else "batched"))
        return None


class Replacer:
    """Replace one layer's attention output with what the plugin computes itself."""

    def __init__(self, mode):
        self.mode = mode
        self.replaced = 0

    @hookimpl
    def on_attention(self, view):
        if view.layer != 0 or view.kind != "self":
            return None
        self.replaced += 1
        if self.mode == "zeros":
            return torch.zeros(view.q.shape[:3] + (view.v.shape[-1],), dtype=view.q.dtype)
        probs = torch.softmax(view.q.float() @ view.k.float().transpose(-1, -2) * view.scale, dim=-1)
        return (probs @ view.v.float()).to(view.q.dtype)


class ForwardLog:
    """Logs (transformer, step, branch, skipped) of every transformer forward."""

    def __init__(self):
        self.log = []

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        out = yield
        ctx = call.context
        self.log.append((ctx.transformer, ctx.step, ctx.branch, call.skipped))
        return out

    def skipped(self, branch=None):
        return [(t, s) for t, s, b, k in self.log if k and (branch is None or b == branch)]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], object]
    call: dict
    kinds: tuple  # kinds reported per layer and call
    branches: tuple  # branch values seen each step
    transformers: tuple  # transformer names that run
    layers: int
    models: tuple = ("transformer", "transformer_2")  # pipeline attributes holding transformers
    requires: str = ""  # a module that must be importable, else the case is skipped
    kwargs_for: Callable = _diffusers_kwargs  # (case, seed) -> call kwargs giving repeatable noise
    runner: Callable = _diffusers_run  # (case, pipe, kwargs) -> output tensor
    skip_output: Callable = _diffusers_skip_output  # (ForwardCall) -> what the forward returns
    attach_options: tuple = ()  # (name, value) pairs passed to numina_hooks.attach (a description)
    steps_argument: str = "num_inference_steps"  # the call argument that sets the number of steps

    def attach(self, pipe, *plugins):
        """``numina_hooks.attach(pipe, *plugins)`` with this case's options."""
        import numina_hooks

        return numina_hooks.attach(pipe, *plugins, **dict(self.attach_options))

    def kwargs(self, seed: int = 0, **overrides) -> dict:
        return {**self.kwargs_for(self, seed), **overrides}

    def run(self, pipe, seed: int = 0, **overrides):
        return self.runner(self, pipe, self.kwargs(seed, **overrides))

    def missing(self) -> Optional[str]:
        """Why this case cannot run here, or None."""
        if not self.requires:
            return None
        try:
            found = importlib.util.find_spec(self.requires) is not None
        except ImportError:
            found = False
        return None if found else f"{self.requires} is not importable here"


CASES = [
    Case("wan", lambda: testing.tiny_wan_pipeline(), testing.WAN_CALL, ("self", "cross"), ("cond", "uncond"),
         ("transformer",), 2),
    Case("wan22-a14b", lambda: testing.tiny_wan_pipeline(two_transformers=True), testing.WAN_CALL,
         ("self", "cross"), ("cond", "uncond"), ("transformer", "transformer_2"), 2),
    Case("wan22-ti2v", lambda: testing.tiny_wan_pipeline(expand_timesteps=True), testing.WAN_CALL,
         ("self", "cross"), ("cond", "uncond"), ("transformer",), 2),
    Case("cogvideox", lambda: testing.tiny_cogvideox_pipeline(), testing.COGVIDEOX_CALL, ("self", "cross"),
         (("uncond", "cond"),), ("transformer",), 2),
    Case("cogvideox-rope", lambda: testing.tiny_cogvideox_pipeline(rope=True), testing.COGVIDEOX_CALL,
         ("self", "cross"), (("uncond", "cond"),), ("transformer",), 2),
]


# ----------------------------------------------------------------------------- DiffSynth-Studio


def _diffsynth():
    """tests/diffsynth/tiny_diffsynth.py, imported only when a DiffSynth case runs."""
    folder = str(Path(__file__).parent / "diffsynth")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import tiny_diffsynth

    return tiny_diffsynth


def _diffsynth_kwargs(case, seed):
    return dict(_diffsynth().CALL, seed=seed, **case.call)


def _diffsynth_run(case, pipe, kwargs):
    return pipe(prompt="three cats chasing two dogs", **kwargs)


def _diffsynth_skip_output(call):
    # model_fn returns the noise prediction [B, C, F, H, W]; with cfg_merge one row per branch
    rows = len(call.context.branch) if isinstance(call.context.branch, tuple) else 1
    latents = call.hidden_states
    return torch.zeros((rows,) + tuple(latents.shape[1:]), dtype=latents.dtype)


def _diffsynth_case(id, build, call, branches, transformers):
    return Case(id, build, call, ("self", "cross"), branches, transformers, 2, models=("dit", "dit2"),
                requires="diffsynth.pipelines.wan_video", kwargs_for=_diffsynth_kwargs, runner=_diffsynth_run,
                skip_output=_diffsynth_skip_output)


CASES += [
    _diffsynth_case("diffsynth-wan", lambda: _diffsynth().tiny_pipeline(), {}, ("cond", "uncond"), ("dit",)),
    _diffsynth_case("diffsynth-wan22-a14b", lambda: _diffsynth().tiny_pipeline(two_dits=True), {},
                    ("cond", "uncond"), ("dit", "dit2")),
    _diffsynth_case("diffsynth-cfg-merge", lambda: _diffsynth().tiny_pipeline(), {"cfg_merge": True},
                    (("cond", "uncond"),), ("dit",)),
]


# ----------------------------------------------------------------------------- official Wan (stand-in)


def _official():
    """tests/official_wan_standin.py and the description that points at it."""
    import dataclasses

    import official_wan_standin as standin

    from numina_hooks.adapters.descriptions import OFFICIAL_WAN

    description = dataclasses.replace(
        OFFICIAL_WAN,
        model_classes=("official_wan_standin.WanModel",),
        pipeline_classes=("official_wan_standin.WanT2V",),
        attention=dataclasses.replace(OFFICIAL_WAN.attention, module="official_wan_standin"),
    )
    return standin, description


OFFICIAL_CALL = dict(size=(64, 64), frame_num=9, sampling_steps=4, guide_scale=3.0)


def _official_kwargs(case, seed):
    standin, _ = _official()
    return dict(OFFICIAL_CALL, seed=seed, make_scheduler=standin.euler_scheduler)


class Driven:
    """No-op plugin: attaching with it gives the driver without NUMINA."""

    @hookimpl
    def on_generation_start(self, generation):
        return None


def _official_run(case, t2v, kwargs):
    """WanT2V has no call that names branch and step: run its loop through the handle
    attached to it (found from the model's marker), or through a temporary one."""
    handle = numina_hooks.hub.handle_of(t2v.model)
    if handle is not None:
        return handle.run_pipeline(prompt="three cats chasing two dogs", **kwargs)
    with case.attach(t2v, Driven()) as temporary:
        return temporary.run_pipeline(prompt="three cats chasing two dogs", **kwargs)


def _official_skip_output(call):
    return [torch.zeros_like(x) for x in call.hidden_states]  # WanModel returns a list of [C, F, H, W]


def _official_case():
    standin, description = _official()
    return Case("official-wan-standin", lambda: standin.WanT2V(testing.tiny_tokenizer()), {}, ("self", "cross"),
                ("cond", "uncond"), ("model",), 2, models=("model", "low_noise_model", "high_noise_model"),
                kwargs_for=_official_kwargs, runner=_official_run, skip_output=_official_skip_output,
                attach_options=(("description", description),), steps_argument="sampling_steps")


CASES.append(_official_case())
