"""The table of adapter cases the contract suite runs over.

A case names its framework's way of calling a pipeline (``kwargs_for``, ``run``,
``skip_output``); the defaults are diffusers'. A case whose ``requires`` module is
not importable is reported skipped (DiffSynth runs in ``.venv-diffsynth``:
``bash scripts/test-diffsynth.sh``).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from numina_hooks import testing


def _diffusers_kwargs(case, seed):
    return dict(case.call, output_type="latent", generator=torch.Generator().manual_seed(seed))


def _diffusers_run(case, pipe, kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt="three cats chasing two dogs", **kwargs).frames


def _diffusers_skip_output(call):
    return (torch.zeros_like(call.hidden_states),)


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
