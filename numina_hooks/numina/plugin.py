"""NUMINA as a plugin: ``attach(pipe, Numina(config))``.

``Numina`` is a :class:`~numina_hooks.driver.GenerationStrategy`: registered on a handle,
it makes ``handle(prompt=...)`` run the two phases (:func:`.generate.run_numina`) and
``handle.read_layout(...)`` phase 1 alone. It composes with hook plugins such as
``EasyCache``: ``attach(pipe, Numina(), EasyCache())``.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Optional

from ..driver import GenerationStrategy
from .config import NuminaConfig


def _with_prompt(args: tuple, kwargs: dict) -> dict:
    """The call's keyword arguments with the prompt in them: ``handle("...")`` and
    ``handle(prompt="...")`` alike; the prompt given twice, or none, is a TypeError."""
    if args:
        if "prompt" in kwargs or len(args) > 1:
            raise TypeError("pass the prompt once, as prompt=... (other pipeline arguments by keyword)")
        kwargs = {**kwargs, "prompt": args[0]}
    if "prompt" not in kwargs or kwargs["prompt"] is None:
        if kwargs.get("prompt_embeds") is not None:
            raise TypeError("NUMINA needs prompt=... even with prompt_embeds: it parses the counts from "
                            "the text and finds the counted nouns' token columns in it. Pass the prompt "
                            "as prompt=... and let the pipeline encode it (prompt_embeds alone cannot be read)")
        raise TypeError("NUMINA needs prompt=...: the text whose counts it enforces")
    return kwargs


class Numina(GenerationStrategy):
    """The NUMINA method with one :class:`NuminaConfig` (default: ``NuminaConfig()``;
    ``NuminaConfig.paper()`` for the paper's algorithm)."""

    def __init__(self, config: Optional[NuminaConfig] = None):
        self.config = NuminaConfig.given(config, type(self).__name__)

    def generate(self, handle, *args: Any, **kwargs: Any):
        """NUMINA's two phases through ``handle``; ``prompt=`` is required, ``counts=``
        overrides the counts parsed from it. Returns the pipeline output with ``.numina``."""
        from .generate import run_numina

        return run_numina(handle, self.config, **_with_prompt(args, kwargs))

    def read_layout(self, handle, **kwargs: Any):
        """Phase 1 only: the report with the layout read at the reference step (no video)."""
        from .generate import read_layout

        return read_layout(handle, self.config, **kwargs)

    def __repr__(self) -> str:
        return f"Numina({'paper preset' if self.config == NuminaConfig.paper() else 'NuminaConfig(...)'})"


class LayoutSeeds(Numina):
    """NUMINA with a choice of seed: phase 1 alone (up to the reference step) for each of
    ``seeds``; the seed whose layout needs the fewest edits (ties: the earlier seed) is
    then generated with NUMINA, which skips phase 2 when no edit is needed.

    ``handle(prompt=..., counts=...)`` takes no ``generator``/``seed``/``latents``: the
    strategy sets the noise. ``out.numina`` is the chosen seed's report; its
    ``seed_search`` field lists ``(seed, edits_needed)`` of every seed tried."""

    def __init__(self, config: Optional[NuminaConfig] = None, seeds=(0, 1, 2)):
        super().__init__(config)
        given = seeds
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
            raise TypeError(f"seeds={given!r}: expected a sequence of int seeds, e.g. seeds=(0, 1, 2)")
        seeds = list(seeds)
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seeds):
            raise TypeError(f"seeds={given!r}: expected a sequence of int seeds, e.g. seeds=(0, 1, 2)")
        seeds = [int(s) for s in seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds={seeds!r}: expected distinct integer seeds, at least one")
        self.seeds = seeds

    def generate(self, handle, *args: Any, **kwargs: Any):
        from .generate import edits_needed, read_layout, run_numina

        kwargs = _with_prompt(args, kwargs)
        given = [k for k in ("generator", "seed", "latents") if kwargs.get(k) is not None]
        if given:
            raise TypeError(f"LayoutSeeds chooses the noise among seeds={self.seeds}; do not pass {given}")
        driver = handle.driver
        tried = []
        for seed in self.seeds:
            reports = read_layout(handle, self.config, **driver.with_seed(kwargs, seed))
            reports = reports if isinstance(reports, list) else [reports]
            tried.append((seed, sum(edits_needed(r) for r in reports)))
        best = min(tried, key=lambda pair: pair[1])[0]  # min keeps the first of equals
        out = run_numina(handle, self.config, **driver.with_seed(kwargs, best))
        reports = out.numina if isinstance(out.numina, list) else [out.numina]
        for r in reports:
            r.seed, r.seed_search = best, list(tried)
        return out

    def __repr__(self) -> str:
        return f"LayoutSeeds(seeds={self.seeds})"


def generate_with_numina(target: Any, prompt: str, *, counts: Optional[dict] = None,
                         config: Optional[NuminaConfig] = None, **kwargs: Any):
    """One NUMINA generation on any supported pipeline: attach, generate, detach.

    For scripts that cannot keep a handle (a patched ``generate.py`` of the official Wan
    repository): ``generate_with_numina(wan_t2v, prompt, size=..., seed=...)``. The
    pipeline is exactly as before when it returns or raises."""
    import numina_hooks

    handle = numina_hooks.attach(target, Numina(config))
    try:
        return handle(prompt=prompt, counts=counts, **kwargs)
    finally:
        handle.detach()
