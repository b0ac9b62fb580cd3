"""attach(): bad input, plugins, bare models, other people's processors and hooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl, testing

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wan():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **kw):
    kwargs = dict(testing.WAN_CALL, output_type="latent")
    kwargs.update(kw)
    return pipe(prompt="three cats", generator=torch.Generator().manual_seed(0), **kwargs).frames


class Observer:
    def __init__(self):
        self.views = []

    @hookimpl
    def on_attention(self, view):
        self.views.append(view)


def test_unsupported_object_names_what_is_supported():
    with pytest.raises(TypeError, match=r"cannot hook a builtins\.object.*Supported: .*WanPipeline.*CogVideoXPipeline"):
        numina_hooks.attach(object())
    with pytest.raises(TypeError, match="Supported"):
        numina_hooks.attach(torch.nn.Linear(2, 2))


def test_attaching_twice_is_refused_until_detached(wan):
    handle = numina_hooks.attach(wan)
    with pytest.raises(RuntimeError, match="already attached"):
        numina_hooks.attach(wan)
    with pytest.raises(RuntimeError, match="already attached"):
        numina_hooks.attach(wan.transformer)  # the same model through another door
    handle.detach()
    numina_hooks.attach(wan).detach()


def test_registering_a_non_plugin_is_a_clear_error(wan):
    with numina_hooks.attach(wan) as handle:
        with pytest.raises(TypeError, match="not a numina-hooks plugin.*@numina_hooks.hookimpl"):
            handle.register(object())

        class Misspelled:
            @hookimpl
            def on_atention(self, view):
                pass

        with pytest.raises(TypeError, match=r"unknown hook\(s\) \['on_atention'\]"):
            handle.register(Misspelled())
        obs = handle.register(Observer())
        with pytest.raises(ValueError, match="already registered"):
            handle.register(obs)
        handle.unregister(obs)
        with pytest.raises(ValueError, match="not registered"):
            handle.unregister(obs)
    with pytest.raises(RuntimeError, match="detached"):
        handle.register(Observer())


def test_a_failed_attach_leaves_nothing_behind(wan):
    before = {id(m): m.processor for m in wan.transformer.modules() if hasattr(m, "processor")}
    with pytest.raises(TypeError):
        numina_hooks.attach(wan, object())
    after = {id(m): m.processor for m in wan.transformer.modules() if hasattr(m, "processor")}
    assert before == after
    numina_hooks.attach(wan).detach()  # not left "already attached"


def test_bare_transformer_with_named_context(wan):
    model = wan.transformer
    obs = Observer()
    hidden = torch.randn(1, 16, 3, 8, 8)
    text = torch.randn(1, 24, 32)
    t = torch.tensor([500.0])
    plain = model(hidden_states=hidden, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    with numina_hooks.attach(model, obs) as handle:
        with handle.context(branch="cond", step=7, num_steps=10):
            out = model(hidden_states=hidden, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        with pytest.raises(TypeError, match="bare WanTransformer3DModel"):
            handle(prompt="x")
    assert torch.equal(out, plain)
    assert {(v.step, v.branch, v.timestep) for v in obs.views} == {(7, "cond", 500.0)}
    assert obs.views[0].geometry == numina_hooks.Geometry(frames=3, height=4, width=4, text_tokens=24)


def test_wraps_a_user_processor_and_restores_it(wan):
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class CountingProcessor(WanAttnProcessor):
        calls = 0

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            CountingProcessor.calls += 1
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    original = wan.transformer.blocks[0].attn1.processor
    mine = CountingProcessor()
    wan.transformer.blocks[0].attn1.set_processor(mine)
    try:
        plain = run(wan)
        calls_plain = CountingProcessor.calls
        obs = Observer()
        with numina_hooks.attach(wan, obs):
            out = run(wan)
        assert CountingProcessor.calls == 2 * calls_plain  # our wrapper delegated to it
        assert wan.transformer.blocks[0].attn1.processor is mine
        assert torch.equal(out, plain)
        assert any(v.layer == 0 and v.kind == "self" for v in obs.views)
    finally:
        wan.transformer.blocks[0].attn1.set_processor(original)


def test_processor_without_a_tappable_kernel_warns(wan):
    class OwnKernel:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            return hidden_states * 0  # computes attention its own way (here: none)

    original = wan.transformer.blocks[1].attn1.processor
    wan.transformer.blocks[1].attn1.set_processor(OwnKernel())
    try:
        with numina_hooks.attach(wan, Observer()):
            with pytest.warns(RuntimeWarning, match="does not call an attention function numina-hooks can tap"):
                run(wan)
    finally:
        wan.transformer.blocks[1].attn1.set_processor(original)


def test_survives_an_accelerate_hook_added_after_attach(wan):
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    class Scale(ModelHook):
        def post_forward(self, module, output):
            return (output[0] * 2,)

    plain = run(wan)
    obs = Observer()
    handle = numina_hooks.attach(wan, obs)
    add_hook_to_module(wan.transformer, Scale())
    doubled_hooked = run(wan)
    assert obs.views, "attention hooks were lost under the accelerate hook"
    handle.detach()
    doubled = run(wan)
    remove_hook_from_module(wan.transformer)
    assert torch.equal(doubled, doubled_hooked)
    assert not torch.equal(doubled, plain)  # accelerate's hook is still there after our detach
    assert torch.equal(run(wan), plain)


def test_kernel_taps_are_removed_with_the_last_handle():
    from diffusers.models import attention_processor
    from diffusers.models.transformers import transformer_wan

    original_dispatch = transformer_wan.dispatch_attention_fn
    original_f = attention_processor.F
    a, b = testing.tiny_wan_pipeline(), testing.tiny_wan_pipeline(seed=1)
    ha, hb = numina_hooks.attach(a, _LayerReader()), numina_hooks.attach(b, _LayerReader())
    assert transformer_wan.dispatch_attention_fn is not original_dispatch
    ha.detach()
    assert transformer_wan.dispatch_attention_fn is not original_dispatch  # b still needs it
    hb.detach()
    assert transformer_wan.dispatch_attention_fn is original_dispatch
    c = testing.tiny_cogvideox_pipeline()
    with numina_hooks.attach(c, _LayerReader()):
        assert attention_processor.F is not original_f
    assert attention_processor.F is original_f


class _LayerReader:
    """An on_attention plugin that reads the layer and changes nothing."""

    def __init__(self):
        self.layers = []

    @numina_hooks.hookimpl
    def on_attention(self, view):
        self.layers.append(view.layer)


class _StepCounter:
    def __init__(self):
        self.steps = 0

    @numina_hooks.hookimpl
    def on_step(self, state):
        self.steps += 1


def test_attention_hooks_are_installed_only_while_a_plugin_wants_attention():
    # attached with no on_attention plugin (EasyCache alone, or nothing), an attention call
    # runs the model's own processor and kernel: nothing of numina-hooks per call
    from diffusers.models.transformers import transformer_wan

    original_dispatch = transformer_wan.dispatch_attention_fn
    pipe = testing.tiny_wan_pipeline()
    attn = pipe.transformer.blocks[0].attn1
    processor = attn.processor
    with numina_hooks.attach(pipe, _StepCounter()) as handle:
        assert attn.processor is processor and transformer_wan.dispatch_attention_fn is original_dispatch
        reader = handle.register(_LayerReader())
        assert attn.processor is not processor and transformer_wan.dispatch_attention_fn is not original_dispatch
        pipe(prompt="a cat", generator=torch.Generator().manual_seed(0),
             **dict(testing.WAN_CALL, num_inference_steps=1, output_type="latent"))
        assert 0 in reader.layers
        handle.unregister(reader)
        assert attn.processor is processor and transformer_wan.dispatch_attention_fn is original_dispatch
        handle.register(reader)
        assert attn.processor is not processor
    assert attn.processor is processor and transformer_wan.dispatch_attention_fn is original_dispatch


def test_top_level_adapters_import_fails_clearly():
    proc = subprocess.run(
        [sys.executable, "-c", "import adapters"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "import it as `numina_hooks.adapters`" in proc.stderr


def test_adapters_ship_as_numina_hooks_adapters():
    from numina_hooks import adapters

    assert adapters.__name__ == "numina_hooks.adapters"
    names = {cls.name for cls in adapters.registered_adapters()}
    assert {"diffusers-wan", "diffusers-cogvideox"} <= names


def _diffusers_version() -> tuple:
    import diffusers

    return tuple(int(part) for part in diffusers.__version__.split(".")[:2])


@pytest.mark.skipif(_diffusers_version() < (0, 41) and not torch.cuda.is_available(),
                    reason="diffusers before 0.41: group offloading itself fails without a CUDA device")
def test_coexists_with_diffusers_group_offload():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    plain = run(pipe)
    cpu = torch.device("cpu")
    pipe.transformer.enable_group_offload(
        onload_device=cpu, offload_device=cpu, offload_type="block_level", num_blocks_per_group=1
    )
    obs = Observer()
    with numina_hooks.attach(pipe, obs):
        hooked = run(pipe)
    assert obs.views and torch.equal(hooked, plain)
    assert torch.equal(run(pipe), plain)  # the offload hooks are still in place and exact
    offload_hooks = [name for m in pipe.transformer.modules() if hasattr(m, "_diffusers_hook")
                     for name in m._diffusers_hook.hooks]
    assert any("offload" in name for name in offload_hooks), offload_hooks


def test_a_compiled_transformer_is_attached_through_its_orig_mod():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    call = dict(testing.WAN_CALL, num_inference_steps=1, output_type="latent")

    def run_it():
        return pipe(prompt="three cats", generator=torch.Generator().manual_seed(0), **call).frames

    plain = run_it()
    original = pipe.transformer
    # the compiled wrapper's call path, run without tracing: dynamo tracing takes 5-40 s on a shared 2-core CPU
    # (traced by hand with backend="eager": same output, views with step and branch, NUMINA guided)
    pipe.transformer = torch.compile(original, backend="eager")

    class Contexts:
        def __init__(self):
            self.seen = []

        @hookimpl(wrapper=True)
        def on_forward(self, call):
            self.seen.append(call.context)
            return (yield)

    contexts = Contexts()
    with numina_hooks.attach(pipe, contexts) as handle, torch.compiler.set_stance("force_eager"):
        with pytest.raises(RuntimeError, match="already attached"):
            numina_hooks.attach(original)  # the same model, uncompiled
        out = run_it()
        assert handle.bypassed_calls == {}
    assert torch.equal(out, plain)
    assert {(c.step, c.branch) for c in contexts.seen} == {(0, "cond"), (0, "uncond")}
    assert all(c.geometry == numina_hooks.Geometry(frames=3, height=4, width=4, text_tokens=24) for c in contexts.seen)
    assert pipe.transformer._orig_mod is original and "forward" not in original.__dict__
    registry = getattr(original, "_diffusers_hook", None)
    assert registry is None or not registry.hooks
    assert not original._forward_pre_hooks and not original._forward_hooks


def test_a_compiled_cogvideox_transformer_or_bare_model_is_accepted():
    pipe = testing.tiny_cogvideox_pipeline()
    original = pipe.transformer
    processors = {id(m): m.processor for m in original.modules() if hasattr(m, "processor")}
    pipe.transformer = torch.compile(original, backend="eager")
    with numina_hooks.attach(pipe, Observer()):
        assert all(type(m.processor).__name__.startswith("Hooked") for m in original.modules()
                   if hasattr(m, "processor"))
    assert {id(m): m.processor for m in original.modules() if hasattr(m, "processor")} == processors
    with numina_hooks.attach(torch.compile(original, backend="eager"), Observer()) as handle:
        assert handle.adapter.transformers() == [("transformer", original)]


def test_a_site_the_adapter_refuses_leaves_the_plugin_unregistered_and_nothing_installed(monkeypatch):
    pipe = testing.tiny_wan_pipeline()
    attn = pipe.transformer.blocks[1].attn1
    own = attn.processor
    processors = [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]
    with numina_hooks.attach(pipe, _StepCounter()) as handle:
        adapter = handle._hub._adapter
        real = adapter.install_site

        def refuse(hub, site, module):
            if module is attn:
                raise RuntimeError("this processor cannot be hooked")
            return real(hub, site, module)

        monkeypatch.setattr(adapter, "install_site", refuse)
        reader = _LayerReader()
        with pytest.raises(RuntimeError, match="cannot be hooked"):
            handle.register(reader)
        assert reader not in handle.plugins
        assert [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")] == processors
        monkeypatch.setattr(adapter, "install_site", real)
        handle.register(reader)  # works once the adapter does
        assert attn.processor is not own
    assert [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")] == processors
