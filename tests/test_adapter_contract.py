"""One contract suite, run over every adapter case (see adapter_cases.py)."""

from __future__ import annotations

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl

from adapter_cases import CASES, ForwardLog, MapChecker, Recorder, Replacer

STEPS = 4


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def case_and_pipe(request):
    case = request.param
    if case.missing():
        pytest.skip(case.missing())
    pipe = case.build()
    plain = case.run(pipe)
    return case, pipe, plain


def _module_state(pipe, case):
    """Everything of ours could leave behind: processors, forwards, torch hooks, instance attributes."""
    state = {}
    for name in case.models:
        model = getattr(pipe, name, None)
        if model is None:
            continue
        for mname, module in model.named_modules():
            proc = getattr(module, "processor", None)
            state[(name, mname)] = (id(proc) if proc is not None else None, sorted(vars(module).keys()),
                                    module.__dict__.get("forward"), len(module._forward_pre_hooks),
                                    len(module._forward_hooks))
    state["pipeline"] = {k: id(v) for k, v in vars(pipe).items() if callable(v) and not isinstance(v, torch.nn.Module)}
    return state


def test_passthrough_is_bit_identical(case_and_pipe):
    case, pipe, plain = case_and_pipe
    rec = Recorder()
    with case.attach(pipe, rec):
        out = case.run(pipe)
    assert rec.calls, "the observer saw no attention call"
    assert torch.equal(out, plain)


def test_no_plugin_is_bit_identical(case_and_pipe):
    case, pipe, plain = case_and_pipe
    with case.attach(pipe):
        out = case.run(pipe)
    assert torch.equal(out, plain)


def test_detach_restores_exactly(case_and_pipe):
    case, pipe, plain = case_and_pipe
    before = _module_state(pipe, case)
    model = getattr(pipe, case.models[0])
    originals = {id(m): m.processor for m in model.modules() if hasattr(m, "processor")}
    handle = case.attach(pipe, Recorder())
    assert _module_state(pipe, case) != before  # attached: processors wrapped or hooks registered
    handle.detach()
    assert _module_state(pipe, case) == before
    for m in model.modules():
        if hasattr(m, "processor"):
            assert m.processor is originals[id(m)]
    assert torch.equal(case.run(pipe), plain)
    handle.detach()  # idempotent


def test_every_call_reports_layer_kind_step_branch(case_and_pipe):
    case, pipe, _ = case_and_pipe
    rec = Recorder()
    with case.attach(pipe, rec):
        case.run(pipe)
    seen = rec.calls
    steps = {c[3] for c in seen}
    assert steps == set(range(STEPS))
    assert {c[0] for c in seen} == set(case.transformers)
    # each (step, branch) runs every layer and kind exactly once, on one transformer
    for step in range(STEPS):
        for branch in case.branches:
            rows = [c for c in seen if c[3] == step and c[4] == branch]
            assert len({c[0] for c in rows}) == 1
            assert sorted((c[1], c[2]) for c in rows) == sorted(
                (layer, kind) for layer in range(case.layers) for kind in case.kinds
            )
    assert {c[4] for c in seen} == set(case.branches)


def test_two_transformers_split_by_timestep():
    case = next(c for c in CASES if c.id == "wan22-a14b")
    pipe = case.build()
    rec = Recorder()
    with case.attach(pipe, rec):
        case.run(pipe)
    by_step = {}
    for tname, _, _, step, _, _ in rec.calls:
        by_step.setdefault(step, set()).add(tname)
    names = [by_step[s].pop() for s in range(STEPS)]
    assert names[0] == "transformer" and names[-1] == "transformer_2"
    assert names == sorted(names)  # high-noise expert first, then the low-noise one


def test_maps_equal_explicit_softmax(case_and_pipe):
    case, pipe, _ = case_and_pipe
    checker = MapChecker()
    with case.attach(pipe, checker):
        case.run(pipe)
    assert {kind for kind, _ in checker.checked} == {"self", "cross"}


def test_returned_output_replaces_the_kernel_output(case_and_pipe):
    case, pipe, plain = case_and_pipe
    exact = Replacer("exact")
    with case.attach(pipe, exact):
        same = case.run(pipe)
    zeros = Replacer("zeros")
    with case.attach(pipe, zeros):
        changed = case.run(pipe)
    assert exact.replaced > 0 and zeros.replaced == exact.replaced
    torch.testing.assert_close(same, plain, atol=1e-4, rtol=1e-4)  # layout round trip is right
    assert (changed - plain).abs().max() > 1e-3  # and the replacement is really used


def test_wrong_replacement_shape_is_a_clear_error(case_and_pipe):
    case, pipe, plain = case_and_pipe

    class Bad:
        @hookimpl
        def on_attention(self, view):
            return torch.zeros(3)

    with case.attach(pipe, Bad()):
        with pytest.raises(ValueError, match=r"expected \(.*\) = \[batch, heads, query_tokens, head_dim\]"):
            case.run(pipe)
    assert torch.equal(case.run(pipe), plain)


def test_exception_inside_a_call_leaves_pipeline_working(case_and_pipe):
    case, pipe, plain = case_and_pipe

    class Boom:
        @hookimpl
        def on_attention(self, view):
            if view.step == 2:
                raise RuntimeError("boom")

    boom = Boom()
    handle = case.attach(pipe, boom)
    with pytest.raises(RuntimeError, match="boom"):
        case.run(pipe)
    handle.unregister(boom)
    assert torch.equal(case.run(pipe), plain)  # still attached, still exact
    handle.detach()
    assert torch.equal(case.run(pipe), plain)


def test_forward_hook_can_skip_the_model(case_and_pipe):
    case, pipe, plain = case_and_pipe

    class SkipStep2:
        def __init__(self):
            self.ran = []

        @hookimpl(wrapper=True)
        def on_forward(self, call):
            if call.context.step == 2:
                call.skip_with(case.skip_output(call))
            out = yield
            self.ran.append((call.context.step, call.skipped))
            return out

    plugin = SkipStep2()
    rec = Recorder()
    with case.attach(pipe, plugin, rec):
        out = case.run(pipe)
    assert {s for s, skipped in plugin.ran if skipped} == {2}
    assert 2 not in {c[3] for c in rec.calls}  # the skipped model ran no attention
    assert not torch.equal(out, plain)


def test_step_hooks_and_stop_request(case_and_pipe):
    case, pipe, _ = case_and_pipe

    class Steps:
        def __init__(self):
            self.events = []

        @hookimpl
        def on_generation_start(self, generation):
            self.events.append("start")

        @hookimpl
        def on_step(self, state):
            self.events.append((state.phase, state.step))
            if state.step == 1:
                state.request_stop("enough")

        @hookimpl
        def on_generation_end(self, generation, error):
            self.events.append(("end", error))

    steps, rec = Steps(), Recorder()
    with case.attach(pipe, steps, rec) as handle:
        handle(prompt="three cats", **case.kwargs(0))
    assert steps.events == ["start", ("end", 0), ("end", 1), ("end", None)]
    assert {c[3] for c in rec.calls} == {0, 1}  # the stop skipped steps 2 and 3


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("wan")], ids=lambda c: c.id)
def test_set_attention_backend_reaches_the_wrapped_processor(case):
    pipe = case.build()
    plain = case.run(pipe)
    with case.attach(pipe, Recorder()):
        pipe.transformer.set_attention_backend("native")
        inner = pipe.transformer.blocks[0].attn1.processor.inner
        assert str(inner._attention_backend) in ("native", "AttentionBackendName.NATIVE")
        out = case.run(pipe)
    pipe.transformer.reset_attention_backend()
    assert torch.equal(out, plain)


def test_easycache_is_exact_at_zero_and_skips_model_calls_above_it(case_and_pipe):
    """EasyCache runs on every adapter: bit-identical at threshold 0; at a huge threshold
    it skips forwards after the warm-up (never the last step), the result stays finite,
    and detach leaves the pipeline exact. Eight steps, so that each expert of a two-expert
    model computes at least two steps before it may skip one."""
    case, pipe, _ = case_and_pipe
    steps = {case.steps_argument: 8}
    plain = case.run(pipe, **steps)
    exact, log = numina_hooks.EasyCache(error_threshold=0.0, warmup=0), ForwardLog()
    with case.attach(pipe, exact, log):
        out = case.run(pipe, **steps)
    assert torch.equal(out, plain) and exact.stats.skipped_calls == 0
    assert not log.skipped()
    eager, log = numina_hooks.EasyCache(error_threshold=100.0, warmup=1), ForwardLog()
    with case.attach(pipe, eager, log):
        out = case.run(pipe, **steps)
    skipped_steps = {step for _, step in log.skipped()}
    assert skipped_steps and min(skipped_steps) >= 1 and 7 not in skipped_steps
    assert eager.stats.skipped_calls == len(log.skipped())
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    assert torch.equal(case.run(pipe, **steps), plain)
