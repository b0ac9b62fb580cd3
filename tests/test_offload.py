"""Attached pipelines under diffusers' model CPU offload, and NUMINA never claiming guidance it did not apply.

``enable_model_cpu_offload`` installs accelerate hooks on each component and, at the end
of every pipeline call (``maybe_free_model_hooks``), removes and re-adds them; removing
puts back the forward accelerate saw when it was installed. diffusers 0.42 accepts
``device="cpu"`` here, so these tests run the real offload code path on CPU.
"""

from __future__ import annotations

import functools

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl
from numina_hooks.hooking import FORWARD_HOOK_NAME

from adapter_cases import CASES, Recorder

OFFLOAD_CASES = [c for c in CASES if c.id in ("wan", "wan22-a14b", "cogvideox")]
PROMPT = "three cats chasing two dogs"
MISMATCH = {"cats": 4, "dogs": 3}  # forces phase 2 on the random-weight pipelines


def _models(pipe, case):
    return [getattr(pipe, n) for n in case.models if getattr(pipe, n, None) is not None]


def _offload(pipe):
    pipe.enable_model_cpu_offload(device="cpu")


def _hooked_and_offloaded(case, order, *plugins, config=None):
    pipe = case.build()
    plain = case.run(pipe)
    if order == "offload-then-attach":
        _offload(pipe)
        handle = numina_hooks.attach(pipe, *plugins, config=config)
    else:
        handle = numina_hooks.attach(pipe, *plugins, config=config)
        _offload(pipe)
    return pipe, plain, handle


@pytest.mark.parametrize("order", ["offload-then-attach", "attach-then-offload"])
@pytest.mark.parametrize("case", OFFLOAD_CASES, ids=lambda c: c.id)
def test_observers_keep_step_branch_and_geometry_over_several_calls(case, order):
    rec = Recorder()
    pipe, plain, handle = _hooked_and_offloaded(case, order, rec)
    seen = []
    for _ in range(3):
        rec.calls.clear()
        out = case.run(pipe)
        assert torch.equal(out, plain)
        assert rec.calls, "no attention view: the hooks were dropped"
        unknown = [v for v in rec.calls if v[3] is None or v[4] is None or v[5] is None]
        assert not unknown, f"{len(unknown)} of {len(rec.calls)} views lost step, branch or geometry: {unknown[:2]}"
        seen.append(sorted(rec.calls, key=repr))
    assert seen[0] == seen[1] == seen[2]  # every call is seen the same way
    assert {v[0] for v in rec.calls} == set(case.transformers)
    assert handle.bypassed_calls == {}

    handle.detach()
    for model in _models(pipe, case):
        assert hasattr(model, "_hf_hook"), "detach removed accelerate's offload hook"
        registry = getattr(model, "_diffusers_hook", None)
        assert registry is None or FORWARD_HOOK_NAME not in registry.hooks
        assert not model._forward_pre_hooks and not model._forward_hooks
    rec.calls.clear()
    assert torch.equal(case.run(pipe), plain)
    assert torch.equal(case.run(pipe), plain)  # offload's own re-install still works after detach
    assert not rec.calls


def _numina_call(case, handle, seed=0):
    return handle(prompt=PROMPT, counts=MISMATCH, **case.kwargs(seed))


@pytest.mark.parametrize("order", ["offload-then-attach", "attach-then-offload"])
@pytest.mark.parametrize("case", OFFLOAD_CASES, ids=lambda c: c.id)
def test_numina_under_offload_matches_numina_without(case, order):
    ref_pipe = case.build()
    with numina_hooks.attach(ref_pipe) as ref:
        expected = _numina_call(case, ref)
    assert expected.numina.phase2_ran and expected.numina.guided_steps

    pipe, _, handle = _hooked_and_offloaded(case, order, config=numina_hooks.NuminaConfig())
    for _ in range(2):  # phase 1 ends with maybe_free_model_hooks: the second phase and call are the test
        out = _numina_call(case, handle)
        assert out.numina.phase2_ran
        assert out.numina.guided_steps == expected.numina.guided_steps
        assert out.numina.model_calls == expected.numina.model_calls
        assert torch.equal(out.frames, expected.frames)
    handle.detach()


# ----------------------------------------------------------------------------- never claim what did not happen


@pytest.fixture(scope="module")
def wan_case():
    return next(c for c in CASES if c.id == "wan")


class _PhaseAware:
    def __init__(self):
        self.phase = None

    @hookimpl
    def on_generation_start(self, generation):
        self.phase = generation.extras.get("numina_phase")


def test_phase_two_with_no_guided_call_raises_and_changes_nothing(wan_case):
    case = wan_case
    pipe = case.build()
    plain = case.run(pipe)

    class SkipPhase2(_PhaseAware):
        """A cache gone wrong: skips every transformer call of phase 2."""

        @hookimpl(wrapper=True)
        def on_forward(self, call):
            if self.phase == "phase2":
                call.skip_with(case.skip_output(call))
            return (yield)

    skipper = SkipPhase2()
    handle = numina_hooks.attach(pipe, skipper, config=numina_hooks.NuminaConfig())
    kwargs = case.kwargs(0)
    state = kwargs["generator"].get_state()
    with pytest.raises(RuntimeError, match=r"phase 2 applied no guidance: a cache skipped every transformer call"):
        handle(prompt=PROMPT, counts=MISMATCH, **kwargs)
    assert handle.plugins == [handle.strategy, skipper]  # NUMINA's phase plugins are gone
    assert torch.equal(kwargs["generator"].get_state(), state)  # the caller's noise is untouched
    handle.detach()
    assert torch.equal(case.run(pipe), plain)


def test_a_forward_replaced_after_attach_is_noticed_and_numina_refuses(wan_case):
    case = wan_case
    pipe = case.build()
    plain = case.run(pipe)
    model = pipe.transformer
    handle = numina_hooks.attach(pipe, config=numina_hooks.NuminaConfig())
    ours = model.forward

    class ReplaceInPhase2(_PhaseAware):
        @hookimpl
        def on_generation_start(self, generation):
            super().on_generation_start(generation)
            if self.phase == "phase2":  # a wrapper that calls the class forward, not the one it replaced
                model.forward = functools.partial(type(model).forward, model)

    handle.register(ReplaceInPhase2())
    with pytest.warns(RuntimeWarning, match="ran without numina-hooks' forward hook"):
        with pytest.raises(RuntimeError, match=r"applied no guidance: \d+ transformer call\(s\) ran without"):
            handle(prompt=PROMPT, counts=MISMATCH, **case.kwargs(0))
    assert handle.bypassed_calls["transformer"] > 0

    # the same replacement before phase 1: no layout is read, and none is claimed
    with pytest.raises(RuntimeError, match=r"NUMINA read no layout .* ran without numina-hooks' forward hook"):
        handle(prompt=PROMPT, counts=MISMATCH, **case.kwargs(0))
    model.forward = ours
    handle.detach()
    assert "forward" not in model.__dict__
    assert torch.equal(case.run(pipe), plain)


def test_a_bypassed_cogvideox_call_warns_instead_of_crashing_an_observer():
    case = next(c for c in CASES if c.id == "cogvideox")
    pipe = case.build()
    plain = case.run(pipe)
    rec = Recorder()
    handle = numina_hooks.attach(pipe, rec)
    model = pipe.transformer
    ours = model.forward
    model.forward = functools.partial(type(model).forward, model)
    with pytest.warns(RuntimeWarning, match="ran without numina-hooks' forward hook"):
        out = case.run(pipe)
    assert torch.equal(out, plain)
    assert rec.calls == []  # no view with a made-up token split
    assert handle.bypassed_calls == {"transformer": case.call["num_inference_steps"]}
    model.forward = ours
    handle.detach()


@pytest.mark.parametrize("case", OFFLOAD_CASES[:1], ids=lambda c: c.id)
def test_turning_offload_off_after_attach_keeps_every_call_hooked(case):
    rec = Recorder()
    pipe, plain, handle = _hooked_and_offloaded(case, "offload-then-attach", rec)
    case.run(pipe)
    pipe.remove_all_hooks()  # offload off: accelerate puts back the forward it had wrapped
    rec.calls.clear()
    assert torch.equal(case.run(pipe), plain)
    assert rec.calls and all(v[3] is not None and v[5] is not None for v in rec.calls)
    assert handle.bypassed_calls == {}
    handle.detach()
    assert "remove_all_hooks" not in vars(pipe)
    assert torch.equal(case.run(pipe), plain)
