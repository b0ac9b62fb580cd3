"""The table of adapter cases the contract suite runs over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from numina_hooks import testing


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], object]
    call: dict
    kinds: tuple  # kinds reported per layer and call
    branches: tuple  # branch values seen each step
    transformers: tuple  # transformer names that run
    layers: int

    def run(self, pipe, seed: int = 0, **overrides):
        kwargs = dict(self.call)
        kwargs.update(output_type="latent")
        kwargs.update(overrides)
        pipe.set_progress_bar_config(disable=True)
        return pipe(prompt="three cats chasing two dogs", generator=torch.Generator().manual_seed(seed), **kwargs).frames


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
