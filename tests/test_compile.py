"""torch.compile with numina-hooks attached (tiny random Wan models, dynamo's eager backends).

What a user of ``pipe.transformer.compile()`` would notice: attached with no plugin acting,
the compiled transformer is the very graph it is unattached; with plugins, the graph breaks
only where our Python dispatch runs (functions marked ``torch.compiler.disable``) and their
number does not grow with the model's depth; plugins, ``on_forward`` wrappers that skip the
model, and NUMINA's two phases give the results they give uncompiled.
"""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch

import numina_hooks
from numina_hooks import EasyCache, hookimpl, testing
from numina_hooks.numina import generate as generate_mod
from numina_hooks.numina.config import NuminaConfig

torch._logging.set_logs(dynamo=logging.ERROR)  # the graph breaks are asserted, not logged

PROMPT = "three cats chasing two dogs in a park"
CALL = dict(testing.WAN_CALL, num_inference_steps=4, output_type="latent")


def _tiny_wan(layers: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, 16, 3, 8, 8, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)


def _explain(model):
    torch._dynamo.reset()
    with torch.no_grad():
        return torch._dynamo.explain(model)(**_inputs())


class Observer:
    def __init__(self):
        self.views = []

    @hookimpl
    def on_attention(self, view):
        self.views.append((view.layer, view.kind, view.step, view.branch, view.geometry))


class StepsOnly:
    """Implements neither on_attention nor on_forward: the handle stays idle in the forward."""

    @hookimpl
    def on_generation_start(self, generation):
        pass


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_attached_idle_compiles_to_the_plain_graph():
    model = _tiny_wan(layers=2)
    plain = _explain(model)
    assert (plain.graph_count, plain.graph_break_count) == (1, 0)
    for plugins in ((), (StepsOnly(),)):
        with numina_hooks.attach(model, *plugins):
            attached = _explain(model)
        assert (attached.graph_count, attached.graph_break_count) == (1, 0), [str(b.reason) for b in
                                                                                 attached.break_reasons]
        # the same graph: the same operations, node for node (inputs are named by their access path)
        assert _operations(attached.graphs[0]) == _operations(plain.graphs[0])


def test_registering_an_observer_again_reuses_the_compiled_code():
    # the processor wrappers and kernel taps come and go with the on_attention plugins; the
    # code compiled for each set of plugins is reused when the set comes back
    model = _tiny_wan(layers=2)
    compiled_graphs = []

    def backend(gm, example_inputs):
        compiled_graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=backend)
    new = []
    with numina_hooks.attach(model) as handle, torch.no_grad():
        for phase in ("idle", "observer", "idle", "observer", "idle"):
            before = len(compiled_graphs)
            observer = handle.register(Observer()) if phase == "observer" else None
            compiled(**_inputs())
            if observer is not None:
                assert len(observer.views) == 4  # 2 blocks x (self, cross)
                handle.unregister(observer)
            new.append(len(compiled_graphs) - before)
    assert new[0] == 1 and new[1] > 0  # idle: the plain graph; the observer's: broken graphs
    assert new[2] <= 1  # back to idle: at most one graph (dynamo's guards on the handle's state)
    assert new[3:] == [0, 0]  # from then on every set of plugins finds its code


def test_attached_idle_cogvideox_compiles_to_the_plain_graph():
    model = testing.tiny_cogvideox_pipeline().transformer
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 3, 4, 8, 8, generator=g), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g), return_dict=False)
    counts = []
    for attached in (False, True):
        torch._dynamo.reset()
        with torch.no_grad(), (numina_hooks.attach(model) if attached else contextlib.nullcontext()):
            explained = torch._dynamo.explain(model)(**inputs)
        counts.append((explained.graph_count, explained.graph_break_count))
    assert counts == [(1, 0), (1, 0)]


def _operations(graph_module) -> list:
    return [(n.op, str(n.target)) for n in graph_module.graph.nodes if n.op.startswith("call_")]


def _disabled_dispatch_only(explained) -> list[str]:
    """Break reasons that are not a call of one of numina-hooks' torch.compiler.disable'd functions."""
    bad = []
    for b in explained.break_reasons:
        reason = str(b.reason)
        ours = "torch.compiler.disable" in reason and any("numina_hooks" in f.filename for f in b.user_stack[-1:])
        if not ours:
            bad.append(reason.splitlines()[0])
    return bad


@pytest.mark.slow  # 3-10 s on one CPU thread (measured)
def test_with_an_observer_breaks_only_at_the_dispatch_boundary_and_not_per_layer():
    counts = {}
    for layers in (1, 3):
        model = _tiny_wan(layers)
        observer = Observer()
        with numina_hooks.attach(model, observer) as handle, handle.context(branch="cond", step=2, num_steps=4):
            explained = _explain(model)
        assert _disabled_dispatch_only(explained) == []
        counts[layers] = (explained.graph_count, explained.graph_break_count)
        # every attention call was viewed, with the context the handle was given
        geometry = numina_hooks.Geometry(frames=3, height=4, width=4, text_tokens=16)
        assert set(observer.views) == {(i, k, 2, "cond", geometry) for i in range(layers) for k in ("self", "cross")}
    # compiled code is reused across blocks: a deeper model has no more breaks (9 graphs, 8 breaks here)
    assert counts[3] == counts[1]
    assert counts[1][1] <= 8, counts


@pytest.mark.slow  # 3-10 s on one CPU thread (measured)
def test_compiled_observer_and_skipping_cache_give_the_uncompiled_results():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def run():
        observer, cache = Observer(), EasyCache(error_threshold=1.0, warmup=1)
        with numina_hooks.attach(pipe, observer, cache) as handle:
            out = handle(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **CALL).frames
        return out, observer.views, cache.stats.as_dict()

    eager = run()
    assert eager[2]["skipped_calls"] > 0  # the cache did skip model calls (an on_forward result, no model run)
    original = pipe.transformer
    pipe.transformer = torch.compile(original, backend="eager")
    try:
        compiled = run()
    finally:
        pipe.transformer = original
    assert torch.equal(compiled[0], eager[0])
    assert compiled[1] == eager[1] and compiled[2] == eager[2]
    assert "forward" not in original.__dict__ and not original._forward_pre_hooks  # detached exactly


@pytest.mark.slow  # 3-10 s on one CPU thread (measured)
@pytest.mark.parametrize("how", ["module.compile, eager", "torch.compile(module), aot_eager"])
def test_numina_on_a_compiled_transformer_guides_and_matches_uncompiled(how, monkeypatch):
    # force a mismatch, as the NUMINA tests do, so phase 2 runs with guidance
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: False)
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def run():
        handle = numina_hooks.attach(pipe, config=NuminaConfig())
        try:
            return handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3}, generator=torch.Generator().manual_seed(0),
                          **CALL)
        finally:
            handle.detach()

    uncompiled = run()
    original = pipe.transformer
    if how.startswith("module.compile"):
        original.compile(backend="eager")
    else:
        pipe.transformer = torch.compile(original, backend="aot_eager")
    compiled = run()
    report = compiled.numina
    assert report.phase2_ran and report.guided_steps == uncompiled.numina.guided_steps != []
    assert report.model_calls == uncompiled.numina.model_calls
    # measured: identical (max abs difference 0.0) with both backends on this CPU
    torch.testing.assert_close(compiled.frames, uncompiled.frames, rtol=0, atol=1e-5)


class HalfInput:
    """Runs the model on half the latents (new call.kwargs) and doubles its output."""

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        call.kwargs = dict(call.kwargs, hidden_states=call.kwargs["hidden_states"] * 0.5)
        out = yield
        return (out[0] * 2,)


class FailsAfter:
    @hookimpl(wrapper=True)
    def on_forward(self, call):
        yield
        raise ValueError("plugin failed after the model ran")


def test_on_forward_wrappers_under_compile_act_as_uncompiled():
    from torch._dynamo.utils import counters

    counters.clear()
    model = _tiny_wan(layers=1)
    inputs = _inputs()
    with torch.no_grad():
        plain = model(**inputs)[0]
        with numina_hooks.attach(model, HalfInput()):
            eager = model(**inputs)[0]
        assert not torch.allclose(eager, plain, atol=1e-3)  # the plugin does change the result
        compiled_model = torch.compile(model, backend="eager")
        failing = FailsAfter()
        with numina_hooks.attach(model, HalfInput()) as handle:
            assert torch.equal(compiled_model(**inputs)[0], eager)
            handle.register(failing)
            with pytest.raises(ValueError, match="after the model ran"):
                compiled_model(**inputs)
            handle.unregister(failing)
            assert torch.equal(compiled_model(**inputs)[0], eager)  # the failed call left nothing behind
        with numina_hooks.attach(model):
            assert torch.equal(compiled_model(**inputs)[0], plain)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did trace those calls
