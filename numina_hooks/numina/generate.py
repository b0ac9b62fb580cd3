"""The two-phase NUMINA generation (identify, decide, refine, guide).

``run_numina(handle, config, prompt=..., counts=None, **pipeline_kwargs)`` is
what ``handle(prompt=...)`` runs when the :class:`~numina_hooks.numina.plugin.Numina`
plugin is registered on a handle. It uses only the handle's public API: ``handle.driver``
(:class:`~numina_hooks.driver.PipelineDriver`), ``handle.depth``, ``handle.register``,
``handle.run_pipeline``:

1. counts from ``counts=`` or :func:`parse_counts`; token columns from the
   pipeline's own tokenizer;
2. phase 1 samples from the caller's noise (``generator`` state is saved,
   ``latents`` reused) and reads the layout at (t*, l*) of the cond branch;
3. if every noun has its count in every frame, phase 1 simply runs on and is
   the result (bit-identical to the plain pipeline, no second pass); otherwise
   it stops right after the cond forward of t*;
4. the layouts are refined and phase 2 regenerates from the same noise with
   layout-guided cross-attention.

A call that makes several videos (a list of prompts, ``num_videos_per_prompt``, or
multi-row ``latents``) reads one layout per video (:mod:`.batch`); phase 1 stops early
when any video's layout mismatches, and phase 2 regenerates the batch guiding only
those videos. ``out.numina`` is then a list of reports, one per video.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..hookspecs import hookimpl
from .config import NuminaConfig
from .counts import count_over_grid, parse_counts
from .guidance import LayoutGuidance, plan_from_refinement
from .batch import BatchGuidance, BatchLayoutReader, batch_rows, prompt_of_item
from .identify import LayoutReader
from .refine import refine_layouts
from .report import NuminaReport
from .tokens import noun_token_columns, phrase_token_columns


class _Phase1Done(Exception):
    """Raised inside phase 1 once the layout is read and needs correcting."""


class CallCounter:
    """Counts the transformer forwards that ran, and remembers the calls a cache skipped.

    A plugin: register it on a handle, read ``calls`` (and ``skip_summary()``) afterwards.
    """

    def __init__(self):
        self.calls = 0
        self.skipped: set = set()  # (transformer, step, branch) of calls a cache skipped

    def record(self, call) -> None:
        if call.skipped:
            self.skipped.add((call.context.transformer, call.context.step, call.context.branch))
        else:
            self.calls += 1

    def skip_summary(self) -> dict:
        """Calls and denoising steps a cache skipped (a step counts once, whatever its branches)."""
        return {"skipped_calls": len(self.skipped), "skipped_steps": len({(t, s) for t, s, _ in self.skipped})}

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        out = yield
        self.record(call)
        return out


class _Phase1Control(CallCounter):
    """Counts model calls; stops phase 1 after the cond forward of t* on a mismatch."""

    def __init__(self, reader: BatchLayoutReader, counts: list, step: int, stop_always: bool = False):
        super().__init__()
        self.reader = reader
        self.counts = counts
        self.step = step
        self.stop_always = stop_always

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        ctx = call.context
        out = yield
        self.record(call)
        has_cond = ctx.branch == "cond" or (isinstance(ctx.branch, tuple) and "cond" in ctx.branch)
        if ctx.step == self.step and has_cond:
            if not self.reader.done:
                raise RuntimeError(
                    f"NUMINA read no layout at reference step {self.step}, layer {self.reader.layer}: the "
                    "transformer did not run its attention there (a cache skipped the step?). "
                    "Let that step compute fully, or choose another NuminaConfig.reference_step."
                )
            if self.stop_always or not self.reader.matches(self.counts):
                raise _Phase1Done()
        return out


def _validate_counts(counts: Any) -> dict[str, int]:
    if not isinstance(counts, dict) or not counts:
        raise ValueError(f"counts={counts!r}: expected a non-empty dict noun -> int >= 1, e.g. {{'cats': 3}}")
    out = {}
    for noun, n in counts.items():
        if not isinstance(noun, str) or not noun.strip():
            raise ValueError(f"counts has key {noun!r}: expected a noun as written in the prompt")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"counts[{noun!r}]={n!r}: expected an int >= 1 (how many {noun} to show)")
        out[noun] = int(n)
    return out


def _check_counts_fit(counts: dict[str, int], grid) -> None:
    """Each asked count must fit the layout: at most one instance per patch of a frame."""
    over = count_over_grid(counts, grid)
    if over is not None:
        noun, n, patches = over
        raise ValueError(
            f"counts[{noun!r}]={n}: a frame's layout at the reference step has {grid[0]}x{grid[1]} = {patches} "
            f"patches, so at most {patches} {noun} fit in a frame; ask for fewer or generate larger frames"
        )


def _attach_report(out, report: NuminaReport):
    if isinstance(out, tuple):
        out = _OutputTuple(out)
    out.numina = report
    return out


class _OutputTuple(tuple):
    """The pipeline's ``return_dict=False`` tuple, with ``.numina``."""

    numina: NuminaReport


def read_layout(handle, config: NuminaConfig, *, prompt, counts=None, **kwargs):
    """Phase 1 only: run to the reference step, read the layout, stop.

    Returns the report (``counts_found``, ``layouts_before``, ``edits_needed``);
    no video. The caller's generator is restored to its state before the call, so
    a following ``handle(...)`` with it samples the same noise. Used by the
    ``layout-seeds`` strategy (read several seeds, finish the best one). A batch call
    returns one report per video.
    """
    return run_numina(handle, config, prompt=prompt, counts=counts, _phase1_only=True, **kwargs)


def edits_needed(report: NuminaReport) -> int:
    """Instances to add or remove, summed over nouns and frames, for the layout to match."""
    total = 0
    for noun, asked in report.counts_asked.items():
        total += sum(abs(int(c) - asked) for c in report.counts_found.get(noun, []))
    return total


def run_numina(
    handle, config: NuminaConfig, *, prompt, counts=None, _phase1_only: bool = False, **kwargs
):
    """The two-phase generation; ``out.numina`` is the report, or a list of reports (one per
    video, in output order) when ``prompt`` is a list or the call makes several videos."""
    prompts = _validate_prompts(prompt)
    nvp = kwargs.get("num_videos_per_prompt")
    if nvp is not None and (isinstance(nvp, bool) or not isinstance(nvp, int) or nvp < 1):
        raise ValueError(f"num_videos_per_prompt={nvp!r}: expected an int >= 1")
    t_start = time.perf_counter()
    asked = [
        _validate_counts(c) if c is not None else parse_counts(p)
        for p, c in zip(prompts, _counts_per_prompt(counts, prompts))
    ]
    as_list = not isinstance(prompt, str)

    def finish(out, reports):
        for r in reports:
            r.timings["total"] = time.perf_counter() - t_start
        many = as_list or len(reports) > 1
        return reports if out is None and many else reports[0] if out is None else _attach_report(
            out, reports if many else reports[0]
        )

    if not any(asked):
        reason = "nothing to count: the prompt names no countable object and no counts= was given"
        if _phase1_only:
            return finish(None, [NuminaReport(prompt=p, counts_asked={}, reason=reason) for p in prompts])
        out = handle.run_pipeline(prompt=prompt, **kwargs)
        items = batch_rows(out) or len(prompts)
        reports = [NuminaReport(prompt=prompts[prompt_of_item(i, items, len(prompts))], counts_asked={}, reason=reason)
                   for i in range(items)]
        return finish(out, reports)

    driver = handle.driver

    def token_columns(find) -> list:
        """Per prompt: noun -> text columns by ``find`` (None where nothing is counted)."""
        length = driver.text_length(kwargs)
        return [find(driver.tokenizer(), driver.prompt_for_tokenizer(p), a, max_length=length) if a else None
                for p, a in zip(prompts, asked)]

    finders = {"noun": noun_token_columns, "phrase": phrase_token_columns}
    by_kind = {kind: token_columns(finders[kind]) for kind in {config.read_tokens, config.guide_tokens}}
    columns = by_kind[config.read_tokens]  # what phase 1 reads
    guide_columns = by_kind[config.guide_tokens]
    num_steps = driver.num_steps(kwargs)
    step, layer = config.resolve_step(num_steps), config.resolve_layer(handle.depth)
    layers = config.resolve_layers(handle.depth)
    kwargs, rewind_noise, seed = driver.fix_noise(kwargs)

    # ---- phase 1
    reader = BatchLayoutReader(columns, step, layers if len(layers) > 1 else layer, config)
    control = _Phase1Control(reader, asked, step, stop_always=_phase1_only)
    handle.register(reader)
    handle.register(control)
    t0 = time.perf_counter()
    out = None
    bypassed = _bypassed(handle)
    try:
        out = handle.run_pipeline(
            prompt=prompt, generation_extras={"numina_phase": "phase1", "must_compute_steps": {step}}, **kwargs
        )
    except _Phase1Done:
        driver.after_abort()
    except BaseException:
        rewind_noise()
        raise
    finally:
        handle.unregister(reader)
        handle.unregister(control)
    if not reader.done:
        # the pipeline ran to its end without the reference reading: never report a layout it did not see
        rewind_noise()
        raise RuntimeError(
            f"NUMINA read no layout at reference step {step}, layer {layer}: "
            + _why_unseen(handle, bypassed, control, "the layout reader saw no attention call of the cond branch there")
            + ". No result is returned, since it would be the plain video reported as NUMINA's."
        )
    reports = []
    for p, item_reader in reader.items:
        report = NuminaReport(prompt=prompts[p], counts_asked=dict(asked[p]), token_columns=columns[p] or {})
        report.reference_step, report.reference_layer, report.num_steps, report.seed = step, layer, num_steps, seed
        report.reading_layers = list(layers)
        report.timings["phase1"] = time.perf_counter() - t0
        report.timings["identify"] = reader.seconds
        report.model_calls["phase1"] = control.calls
        if control.skipped or _caching(handle, "phase1"):
            report.cache["phase1"] = control.skip_summary()
        if item_reader is None:
            report.reason = "nothing to count: the prompt names no countable object and no counts= was given"
        else:
            _fill_reading(report, item_reader)
        reports.append(report)
    if _phase1_only:
        rewind_noise()
        for r in reports:
            r.reason = r.reason or "phase 1 only: layout read at the reference step"
        return finish(None, reports)
    matched = "every noun had its count in every frame of the layout"
    if out is not None:
        for r in reports:
            if not r.reason:
                r.reason = f"{matched}: phase 1 ran on and is the result"
                r.layouts_after = {n: lay.copy() for n, lay in r.layouts_before.items()}
        return finish(out, reports)

    # ---- refine, per item whose layout differs from its counts
    t0 = time.perf_counter()
    guidances, plans = {}, {}
    try:  # an error here leaves the caller's generator as it was before the call, as in the phases
        for item, ((p, item_reader), report) in enumerate(zip(reader.items, reports)):
            if item_reader is None:
                continue
            if item_reader.matches(asked[p]):
                report.reason = f"{matched}: regenerated unguided with the batch in phase 2, from the same noise"
                report.layouts_after = {n: lay.copy() for n, lay in report.layouts_before.items()}
                continue
            _check_counts_fit(asked[p], item_reader.grid)
            refined = {noun: refine_layouts(list(report.layouts_before[noun]), asked[p][noun], config,
                                            report.cross_maps.get(noun)) for noun in asked[p]}
            report.layouts_after = {n: np.stack([rf.labels_after for rf in frames]) for n, frames in refined.items()}
            report.edits = {
                n: {
                    "removed": sum(len(rf.removed) for rf in frames),
                    "added_circle": sum(1 for rf in frames for e in rf.added if e.kind == "add_circle"),
                    "added_copy": sum(1 for rf in frames for e in rf.added if e.kind == "add_copy"),
                    "borrowed": sum(1 for rf in frames if rf.borrowed_from is not None),
                }
                for n, frames in refined.items()
            }
            plans[item] = plan_from_refinement(refined, guide_columns[p], item_reader.grid,
                                               suppress_outside=config.suppress_outside,
                                               boost_copies=config.target_mode == "boost")
            guidances[item] = LayoutGuidance(plans[item], config, num_steps)
    except BaseException:
        rewind_noise()
        raise
    refine_seconds = time.perf_counter() - t0

    # ---- phase 2, from the same noise
    rewind_noise()
    guidance = BatchGuidance(guidances, config)
    counter = CallCounter()
    handle.register(guidance)
    handle.register(counter)
    t0 = time.perf_counter()
    bypassed = _bypassed(handle)
    try:
        out = handle.run_pipeline(prompt=prompt, generation_extras={"numina_phase": "phase2"}, **kwargs)
    except BaseException:
        rewind_noise()
        raise
    finally:
        handle.unregister(guidance)
        handle.unregister(counter)
    unguided = [item for item, g in guidances.items() if not g.guided_steps and not plans[item].empty]
    if unguided:
        rewind_noise()
        which = "" if len(reports) == 1 else f" (videos {unguided} of the batch)"
        raise RuntimeError(
            f"NUMINA phase 2 applied no guidance{which}: "
            f"{_why_unseen(handle, bypassed, counter, _no_guided_call(config, num_steps))}. "
            "No result is returned, since it would be the unguided video reported as a guided one."
        )
    for item, report in enumerate(reports):
        report.timings["phase2"] = time.perf_counter() - t0
        report.model_calls["phase2"] = counter.calls
        if counter.skipped or _caching(handle, "phase2"):
            report.cache["phase2"] = counter.skip_summary()
        if item not in guidances:
            continue
        report.timings["refine"] = refine_seconds
        report.phase2_ran = True
        report.guided_steps = sorted(guidances[item].guided_steps)
        if plans[item].empty:
            report.reason = (
                "the layout's counts differ from the asked counts, but refinement found no region to add or "
                "remove: phase 2 regenerated without guidance"
            )
        else:
            report.reason = "the layout's counts differ from the asked counts: refined and regenerated with guidance"
    return finish(out, reports)


def _validate_prompts(prompt) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise ValueError(f"prompt={prompt!r}: expected a string or a non-empty list of strings")


def _counts_per_prompt(counts, prompts: list[str]) -> list:
    """``counts=`` as one entry (dict or None) per prompt: a dict applies to every prompt."""
    if counts is None or isinstance(counts, dict):
        return [counts] * len(prompts)
    if isinstance(counts, (list, tuple)) and len(counts) == len(prompts):
        return list(counts)
    raise ValueError(
        f"counts={counts!r}: expected a dict noun -> int (for every prompt) or a list of {len(prompts)} such dicts "
        "(None for a prompt whose counts are parsed from its text), one per prompt"
    )


def _bypassed(handle) -> int:
    """Transformer calls that so far ran without the handle's forward hook."""
    return sum(getattr(handle, "bypassed_calls", {}).values())


def _why_unseen(handle, bypassed_before: int, counter: CallCounter, otherwise: str) -> str:
    """Why a phase saw none of the attention calls it needed (for the error message)."""
    missed = _bypassed(handle) - bypassed_before
    if missed:
        return (
            f"{missed} transformer call(s) ran without numina-hooks' forward hook (the transformer's forward was "
            "replaced after attach by a function that does not call the one it replaced); detach, make that change, "
            "and attach again"
        )
    if counter.calls == 0 and counter.skipped:
        return f"a cache skipped every transformer call ({len(counter.skipped)}); let the needed steps compute"
    if counter.calls == 0:
        return "the pipeline made no transformer call through the attached model"
    return otherwise


def _no_guided_call(config: NuminaConfig, num_steps: int) -> str:
    active = [s for s in range(num_steps) if config.guidance_active(s, num_steps)]
    if not active:
        return f"guidance is active at no step of {num_steps} with this NuminaConfig"
    return (
        f"no cross-attention call of the cond branch reached the guidance at its steps {active[0]}..{active[-1]} "
        "(a cache skipped them, or the attention processors compute attention in a way numina-hooks cannot tap)"
    )


def _caching(handle, phase: str) -> bool:
    """Whether a cache plugin (EasyCache) works in ``phase``: the report's ``cache`` then
    lists that phase, zeros included."""
    from ..cache import EasyCache

    return any(isinstance(p, EasyCache) and phase in p.phases for p in handle.plugins)


def _fill_reading(report: NuminaReport, reader: LayoutReader) -> None:
    report.reference_transformer = reader.transformer
    report.counts_found = reader.counts_found()
    for noun, r in reader.nouns.items():
        report.self_heads[noun] = list(r.self_heads)
        report.self_layers[noun] = list(r.self_layers)
        report.from_cross[noun] = list(r.from_cross)
        if r.pca_rgb:
            report.pca_images[noun] = np.stack(r.pca_rgb)
        report.cross_heads[noun] = list(r.cross_heads)
        report.layouts_before[noun] = np.stack(r.labels).astype(np.int32)
        report.cross_maps[noun] = np.stack(r.cross_maps)
