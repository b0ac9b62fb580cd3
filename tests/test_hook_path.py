"""The per-call hook path: its shortcuts give what the plain path gives.

The dispatch of ``on_attention`` without pluggy's per-call bookkeeping, the view and call
context built without their keyword constructors, the view's lazily worked out slices and
scale, the processor wrapper's signature, and the scheduler timesteps copied once per
schedule rather than at every forward.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl, testing
from numina_hooks.context import CallContext, Geometry
from numina_hooks.hooking import HookedProcessor
from numina_hooks.views import EVERY_TOKEN, AttentionView, Site


@pytest.fixture(scope="module")
def wan():
    pipe = testing.tiny_wan_pipeline(num_layers=1)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _view(layout="BLHD", scale=None, kind="self"):
    q = torch.randn(2, 10, 3, 8) if layout == "BLHD" else torch.randn(2, 3, 10, 8)
    k = torch.randn(2, 7, 3, 8) if layout == "BLHD" else torch.randn(2, 3, 7, 8)
    ctx = CallContext("transformer", 1, 4, 900.0, 0.9, "cond", Geometry(1, 2, 5, 7))
    site = Site(0, kind, "blocks.0.attn1", "transformer")
    return AttentionView._of(site, kind, ctx, q, k, k, layout, scale, EVERY_TOKEN, None, EVERY_TOKEN)


class Recorder:
    """An ``on_attention`` implementation that logs its name and returns ``result``."""

    def __init__(self, log, name, result=None):
        self.log, self.name, self.result = log, name, result

    @hookimpl
    def on_attention(self, view):
        self.log.append(self.name)
        return self.result


class First(Recorder):
    @hookimpl(tryfirst=True)
    def on_attention(self, view):
        return Recorder.on_attention(self, view)


class Last(Recorder):
    @hookimpl(trylast=True)
    def on_attention(self, view):
        return Recorder.on_attention(self, view)


class NoArgument:
    def __init__(self, log):
        self.log = log

    @hookimpl
    def on_attention(self):
        self.log.append("no-argument")


class Wrapper:
    def __init__(self, log):
        self.log = log

    @hookimpl(wrapper=True)
    def on_attention(self, view):
        self.log.append("wrapper")
        return (yield)


def _both(hub, view, log):
    """(result, call order) of the direct dispatch and of pluggy's call."""
    log.clear()
    direct = hub._dispatch_attention(view)
    direct_order = list(log)
    log.clear()
    through_pluggy = hub._pm.hook.on_attention(view=view)
    return (direct, direct_order), (through_pluggy, list(log))


def test_direct_dispatch_calls_what_pluggy_calls_in_its_order(wan):
    log = []
    marker = torch.zeros(1)
    view = _view()
    with numina_hooks.attach(wan) as handle:
        hub = handle._hub
        plugins = [Recorder(log, "a"), First(log, "first"), Last(log, "last", marker), Recorder(log, "b"),
                   NoArgument(log)]
        for p in plugins:
            handle.register(p)
        assert hub._attention_plan is not None
        (direct, order), (expected, expected_order) = _both(hub, view, log)
        assert order == expected_order and len(order) == 5
        assert direct is expected is marker
        # a plain implementation's result stops the rest, as pluggy's firstresult does
        handle.register(Recorder(log, "c", "stop"))
        (direct, order), (expected, expected_order) = _both(hub, view, log)
        assert direct == expected == "stop" and order == expected_order
        # unregistering is seen at once
        for p in list(handle.plugins):
            if isinstance(p, Recorder) and p.result is not None:
                handle.unregister(p)
        (direct, order), (expected, expected_order) = _both(hub, view, log)
        assert direct is expected is None and order == expected_order and order[0] == "first"
        assert "last" not in order and len(order) == 4
        # a wrapper: pluggy runs the call
        handle.register(Wrapper(log))
        assert hub._attention_plan is None
        (direct, order), (expected, expected_order) = _both(hub, view, log)
        assert order == expected_order and order[0] == "wrapper"


def test_an_exception_in_a_plugin_propagates_unchanged(wan):
    class Boom(Exception):
        pass

    class Raises:
        @hookimpl
        def on_attention(self, view):
            raise Boom("from the plugin")

    with numina_hooks.attach(wan, Raises()) as handle:
        with pytest.raises(Boom, match="from the plugin"):
            handle._hub._dispatch_attention(_view())


@pytest.mark.parametrize("layout", ["BLHD", "BHLD"])
def test_every_token_and_the_default_scale_are_read_from_the_tensors(layout):
    view = _view(layout)
    assert view.video_queries == slice(0, 10)
    assert view.video_keys == slice(0, 7)
    assert view.text_keys is None
    assert view.scale == pytest.approx(1 / 8**0.5)
    assert _view(layout, scale=0.25).scale == 0.25
    cross = AttentionView(site=view.site, kind="cross", context=view.context, q=view._q, k=view._k, v=view._v,
                          layout=layout, scale=None, video_queries=EVERY_TOKEN, text_keys=EVERY_TOKEN, video_keys=None)
    assert (cross.video_queries, cross.text_keys, cross.video_keys) == (slice(0, 10), slice(0, 7), None)


def test_the_fast_view_constructor_sets_what_init_sets():
    fast = _view(scale=0.5)
    slow = AttentionView(site=fast.site, kind=fast.kind, context=fast.context, q=fast._q, k=fast._k, v=fast._v,
                         layout="BLHD", scale=0.5, video_queries=EVERY_TOKEN, text_keys=None, video_keys=EVERY_TOKEN)
    for cls in type(fast).__mro__:
        for name in getattr(cls, "__slots__", ()):
            assert getattr(fast, name) is getattr(slow, name), name


def test_the_fast_context_constructor_fills_every_field():
    geo = Geometry(2, 3, 4, 5)
    values = dict(transformer="transformer_2", step=3, num_steps=8, timestep=500.0, sigma=0.5, branch=("uncond", "cond"),
                  geometry=geo)
    fast = CallContext._of(*values.values())
    assert [f.name for f in dataclasses.fields(CallContext)] == list(values)
    assert fast == CallContext(**values) and hash(fast) == hash(CallContext(**values))
    assert dataclasses.asdict(fast) == dataclasses.asdict(CallContext(**values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.step = 4


def test_the_processor_wrapper_has_the_processor_signature(wan):
    attn = wan.transformer.blocks[0].attn1
    inner = attn.processor
    with numina_hooks.attach(wan) as handle:
        assert attn.processor is inner  # no plugin wants attention: nothing wrapped
        handle.register(Recorder([], "observer"))
        wrapper = attn.processor
        assert isinstance(wrapper, HookedProcessor)
        assert inspect.signature(wrapper.__call__) == inspect.signature(inner.__call__)
        assert type(wrapper).__call__.__qualname__ == f"Hooked{type(inner).__name__}.__call__"


def test_scheduler_timesteps_are_copied_once_per_schedule(wan):
    with numina_hooks.attach(wan) as handle:
        adapter = handle._hub._adapter
        wan.scheduler.set_timesteps(4)
        timesteps = wan.scheduler.timesteps
        expected = [(i, 4) for i in range(4)]
        assert [adapter.step_from_timestep(float(t)) for t in timesteps] == expected
        kept = adapter._timesteps_memo[2]
        assert [adapter.step_from_timestep(float(t)) for t in timesteps] == expected
        assert adapter._timesteps_memo[2] is kept  # not copied again
        assert adapter.step_from_timestep(float(timesteps[2]), raw=torch.tensor([float(timesteps[2])]).bfloat16())[1] == 4
        # a new schedule is read again
        wan.scheduler.set_timesteps(6)
        assert adapter.step_from_timestep(float(wan.scheduler.timesteps[5])) == (5, 6)
        # and so is one changed in place
        first = float(wan.scheduler.timesteps[0])
        wan.scheduler.timesteps[0] = 123.0
        assert adapter.step_from_timestep(123.0) == (0, 6)
        assert adapter.step_from_timestep(first) == (None, 6)
