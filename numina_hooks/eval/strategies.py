"""The strategies ``numina eval`` compares, each a function of one prompt and a seed list.

=====================  ==================================================================
``plain``              the pipeline alone, with the first seed
``seed-search``        the pipeline with every seed; keep the video the counter scores
                       best (CountAcc; ties go to the earlier seed), as in the paper
``numina``             NUMINA (two-phase generation) with the first seed
``numina+seed-search`` NUMINA with every seed; keep the best by the counter
``layout-seeds``       ours: NUMINA's phase 1 only, up to the reference step, for every
                       seed; finish the seed whose layout needs the fewest edits (ties go
                       to the earlier seed) with NUMINA (no phase 2 when none is needed)
=====================  ==================================================================

Any name may carry ``+enhance`` (``plain+enhance`` is the paper's "prompt enhancement"):
the video is generated from ``enhance(prompt)``, a caller-supplied ``Callable[[str], str]``
(no language model is bundled), while counts and CLIP are scored against the original
prompt and counts. With ``numina+enhance`` the counted nouns must survive the rewrite.

Seed search selects with the same counter that scores the result, as the paper does: it
is a best-of-N under the evaluation's own judge, so read it as an upper bound of what
picking among N costs and buys.

Videos are shared between strategies of one prompt (``plain`` with seed 1 *is*
``seed-search``'s seed-1 candidate): a :class:`PromptSession` caches every generation and
layout reading it makes, and each strategy reports the seconds its candidates cost as if
it had run alone (``cost_seconds``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .detectors import Counter
from ..metrics import count_acc, temporal_consistency

__all__ = [
    "BASE_STRATEGIES",
    "Candidate",
    "EvalModel",
    "Outcome",
    "PromptSession",
    "run_strategy",
    "score_counts",
    "split_strategy",
]

Enhance = Callable[[str], str]


def score_counts(counts: dict[str, list[int]], target: dict[str, int]) -> dict[str, Optional[float]]:
    """CountAcc and TC (``numina_hooks.metrics``) of per-noun frame counts.

    ``counts`` is a counter's ``{noun: [per-frame count]}``; TC is ``None`` for a
    one-frame video (it has no pair of frames to compare).
    """
    frames = len(next(iter(counts.values())))
    per_frame = [{noun: counts[noun][f] for noun in counts} for f in range(frames)]
    return {"count_acc": count_acc(per_frame, target),
            "tc": temporal_consistency(per_frame, target) if frames > 1 else None}


@dataclass
class EvalModel:
    """What the runner needs to generate: a NUMINA handle, the call arguments, and how to
    turn a pipeline output into uint8 frames [F, H, W, 3]."""

    handle: Any
    call: dict
    to_frames: Callable[[Any], np.ndarray]
    name: str = "model"
    device: str = "cpu"
    info: dict = field(default_factory=dict)  # recorded in the run's identity (e.g. the weights' hash)

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))


@dataclass
class Candidate:
    """One generated video of a prompt (or one layout reading, for ``layout-seeds``)."""

    seed: int
    kind: str  # "plain" | "numina" | "layout"
    seconds: float
    frames: Optional[np.ndarray] = None
    counts: Optional[dict] = None  # counter's {noun: [per frame]}
    scores: Optional[dict] = None  # count_acc, tc
    numina: Optional[dict] = None  # NuminaReport.summary() subset
    edits_needed: Optional[int] = None  # layout readings only

    def row(self) -> dict:
        """The JSON-friendly part (no frames)."""
        out = {"seed": self.seed, "kind": self.kind, "seconds": round(self.seconds, 3)}
        if self.counts is not None:
            out["counts"] = self.counts
            out.update(self.scores)
        if self.edits_needed is not None:
            out["edits_needed"] = self.edits_needed
        if self.numina is not None:
            out["numina"] = self.numina
        return out


def _numina_summary(report) -> dict:
    s = report.summary()
    keep = ("counts_asked", "counts_found", "counts_after", "phase2_ran", "reason", "edits", "timings",
            "model_calls", "reference_step", "reference_layer")
    return {k: s[k] for k in keep if k in s}


class PromptSession:
    """Generations for one prompt, cached by (kind, seed, generation prompt)."""

    def __init__(self, model: EvalModel, counter: Counter, prompt: str, counts: dict[str, int],
                 enhance: Optional[Enhance] = None):
        self.model = model
        self.counter = counter
        self.prompt = prompt
        self.counts = dict(counts)
        self.enhance = enhance
        self._cache: dict = {}
        self._enhanced: Optional[str] = None

    def generation_prompt(self, enhanced: bool) -> str:
        if not enhanced:
            return self.prompt
        if self.enhance is None:
            raise ValueError("a '+enhance' strategy needs an enhance callable (str -> str); pass enhance=... "
                             "or --enhance module:function")
        if self._enhanced is None:
            text = self.enhance(self.prompt)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"enhance({self.prompt!r}) returned {text!r}: expected a non-empty prompt string")
            self._enhanced = text
        return self._enhanced

    def _video(self, kind: str, seed: int, enhanced: bool) -> Candidate:
        text = self.generation_prompt(enhanced)
        key = (kind, int(seed), text)
        if key in self._cache:
            return self._cache[key]
        m = self.model
        t0 = time.perf_counter()
        with torch.no_grad():
            if kind == "plain":
                out = m.handle.run_pipeline(prompt=text, generator=m.generator(seed), **m.call)
                report = None
            else:
                out = m.handle(prompt=text, counts=self.counts, generator=m.generator(seed), **m.call)
                report = out.numina
        frames = m.to_frames(out)
        seconds = time.perf_counter() - t0
        counts = self.counter.count(frames, list(self.counts))
        cand = Candidate(seed=int(seed), kind=kind, seconds=seconds, frames=frames, counts=counts,
                         scores=score_counts(counts, self.counts),
                         numina=_numina_summary(report) if report is not None else None)
        self._cache[key] = cand
        return cand

    def plain(self, seed: int, enhanced: bool = False) -> Candidate:
        return self._video("plain", seed, enhanced)

    def numina(self, seed: int, enhanced: bool = False) -> Candidate:
        return self._video("numina", seed, enhanced)

    def layout(self, seed: int, enhanced: bool = False) -> Candidate:
        """Phase 1 to the reference step only: the layout's counts and edits needed."""
        from ..numina.generate import edits_needed

        text = self.generation_prompt(enhanced)
        key = ("layout", int(seed), text)
        if key in self._cache:
            return self._cache[key]
        m = self.model
        t0 = time.perf_counter()
        with torch.no_grad():
            report = m.handle.read_layout(prompt=text, counts=self.counts, generator=m.generator(seed), **m.call)
        cand = Candidate(seed=int(seed), kind="layout", seconds=time.perf_counter() - t0,
                         numina={"counts_found": report.counts_found}, edits_needed=int(edits_needed(report)))
        self._cache[key] = cand
        return cand


@dataclass
class Outcome:
    """What a strategy chose for one prompt."""

    video: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    generation_prompt: str = ""

    @property
    def cost_seconds(self) -> float:
        """Seconds of every generation / reading this strategy needed, as if run alone."""
        seen = {id(c): c.seconds for c in self.candidates}
        seen[id(self.video)] = self.video.seconds
        return float(sum(seen.values()))


def _best(cands: Sequence[Candidate]) -> Candidate:
    # max() keeps the first of equal scores: ties go to the earlier seed
    return max(cands, key=lambda c: c.scores["count_acc"])


def _plain(s: PromptSession, seeds, enhanced) -> Outcome:
    return Outcome(s.plain(seeds[0], enhanced))


def _seed_search(s: PromptSession, seeds, enhanced) -> Outcome:
    cands = [s.plain(seed, enhanced) for seed in seeds]
    return Outcome(_best(cands), cands)


def _numina(s: PromptSession, seeds, enhanced) -> Outcome:
    return Outcome(s.numina(seeds[0], enhanced))


def _numina_seed_search(s: PromptSession, seeds, enhanced) -> Outcome:
    cands = [s.numina(seed, enhanced) for seed in seeds]
    return Outcome(_best(cands), cands)


def _layout_seeds(s: PromptSession, seeds, enhanced) -> Outcome:
    readings = [s.layout(seed, enhanced) for seed in seeds]
    chosen = min(readings, key=lambda c: c.edits_needed)  # first of equals: the earlier seed
    return Outcome(s.numina(chosen.seed, enhanced), readings)


BASE_STRATEGIES: dict[str, Callable[[PromptSession, Sequence[int], bool], Outcome]] = {
    "plain": _plain,
    "seed-search": _seed_search,
    "numina": _numina,
    "numina+seed-search": _numina_seed_search,
    "layout-seeds": _layout_seeds,
}


def split_strategy(name: str) -> tuple[str, bool]:
    """``"numina+enhance"`` -> ``("numina", True)``; unknown names raise ``ValueError``."""
    base, enhanced = (name[: -len("+enhance")], True) if name.endswith("+enhance") else (name, False)
    if base not in BASE_STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: expected one of {list(BASE_STRATEGIES)}, "
                         "optionally with '+enhance' (e.g. plain+enhance, the paper's prompt enhancement)")
    return base, enhanced


def run_strategy(name: str, session: PromptSession, seeds: Sequence[int]) -> Outcome:
    """Run strategy ``name`` for one prompt with ``seeds`` (the first is the single-trial seed)."""
    if not seeds:
        raise ValueError("need at least one seed")
    base, enhanced = split_strategy(name)
    outcome = BASE_STRATEGIES[base](session, list(seeds), enhanced)
    outcome.generation_prompt = session.generation_prompt(enhanced)
    return outcome
