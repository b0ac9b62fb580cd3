"""The public API: NUMINA as an explicit plugin, one strategy per handle, detach(target),
and what happens to a handle that is dropped without detach."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch

import numina_hooks
from numina_hooks import EasyCache, Numina, NuminaConfig, hookimpl, testing

PROMPT = "three cats chasing two dogs"
CALL = dict(testing.WAN_CALL, num_inference_steps=5, output_type="latent")
MISMATCH = {"cats": 4, "dogs": 3}


@pytest.fixture(scope="module")
def pipe():
    p = testing.tiny_wan_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def plain(pipe):
    return pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **CALL).frames


class Calls:
    """Counts transformer forwards."""

    def __init__(self):
        self.n = 0

    @hookimpl(wrapper=True)
    def on_forward(self, call):
        out = yield
        self.n += 1
        return out


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_numina_composes_with_easycache_and_runs_both(pipe):
    cache = EasyCache(warmup=1)
    with numina_hooks.attach(pipe, Numina(), cache) as handle:
        assert handle.strategy is handle.plugins[0] and isinstance(handle.strategy, Numina)
        out = handle(prompt=PROMPT, counts=MISMATCH, generator=_gen(), **CALL)
    report = out.numina
    assert report.phase2_ran and report.guided_steps
    assert report.cache, "EasyCache registered next to Numina must act inside NUMINA's phases"


def test_a_plugin_alone_runs_the_plain_pipeline(pipe, plain):
    calls = Calls()
    with numina_hooks.attach(pipe, calls) as handle:
        assert handle.strategy is None and handle.config is None
        out = handle(prompt=PROMPT, generator=_gen(), **CALL)
    assert not hasattr(out, "numina")
    assert torch.equal(out.frames, plain)
    assert calls.n == 2 * CALL["num_inference_steps"]  # one plain pass: cond + uncond per step


def test_bare_attach_of_a_pipeline_is_numina_with_defaults(pipe):
    with numina_hooks.attach(pipe) as handle:
        assert isinstance(handle.strategy, Numina) and handle.config == NuminaConfig()
    with numina_hooks.attach(pipe, config=NuminaConfig.paper()) as handle:
        assert handle.config == NuminaConfig.paper()


def test_bare_attach_of_a_model_has_no_strategy(pipe):
    with numina_hooks.attach(pipe.transformer) as handle:
        assert handle.strategy is None and handle.driver is None
        with pytest.raises(TypeError, match="bare WanTransformer3DModel"):
            handle(prompt=PROMPT)
    with pytest.raises(TypeError, match="needs the pipeline"):
        numina_hooks.attach(pipe.transformer, Numina())


def test_one_strategy_per_handle_and_clear_errors(pipe):
    with numina_hooks.attach(pipe, Numina()) as handle:
        with pytest.raises(ValueError, match="already runs"):
            handle.register(Numina())
        handle.unregister(handle.strategy)
        assert handle.strategy is None
        with pytest.raises(TypeError, match=r"read_layout needs .*numina_hooks.Numina"):
            handle.read_layout(prompt=PROMPT)
    with pytest.raises(TypeError, match="either config=... or a Numina"):
        numina_hooks.attach(pipe, Numina(), config=NuminaConfig())
    with pytest.raises(TypeError, match="expected a numina_hooks.NuminaConfig"):
        Numina({"tau": 0.3})
    with pytest.raises(TypeError, match="not a numina-hooks plugin"):
        numina_hooks.attach(pipe, object())
    assert not numina_hooks.detach(pipe)  # the failed attach left nothing attached


def test_numina_plugin_gives_the_same_video_as_the_config_shorthand(pipe):
    with numina_hooks.attach(pipe, config=NuminaConfig()) as handle:
        a = handle(prompt=PROMPT, counts=MISMATCH, generator=_gen(), **CALL)
    with numina_hooks.attach(pipe, Numina(NuminaConfig())) as handle:
        b = handle(prompt=PROMPT, counts=MISMATCH, generator=_gen(), **CALL)
    assert torch.equal(a.frames, b.frames)


def test_detach_target_finds_the_handle_from_the_model(pipe, plain):
    handle = numina_hooks.attach(pipe, Calls())
    assert pipe.transformer.__dict__[numina_hooks.hub.MARKER]() is handle
    assert numina_hooks.detach(pipe) is True
    assert not handle.attached
    assert numina_hooks.hub.MARKER not in pipe.transformer.__dict__
    assert numina_hooks.detach(pipe) is False  # nothing attached any more
    assert torch.equal(pipe(prompt=PROMPT, generator=_gen(), **CALL).frames, plain)
    # the transformer alone works too, and a re-attach is allowed after it
    kept = numina_hooks.attach(pipe.transformer, Calls())
    assert numina_hooks.detach(pipe.transformer) is True and not kept.attached
    with pytest.raises(TypeError, match="cannot hook"):
        numina_hooks.detach(torch.nn.Linear(2, 2))


def test_a_forgotten_handle_is_collected_and_its_hooks_removed(pipe, plain):
    calls = Calls()
    processors = [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]
    handle = numina_hooks.attach(pipe, calls)
    ref = weakref.ref(handle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del handle
        gc.collect()
    assert ref() is None, "a dropped handle must not be kept alive by its own hooks"
    assert any(issubclass(w.category, ResourceWarning) and "garbage-collected" in str(w.message) for w in caught)
    assert [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")] == processors
    out = pipe(prompt=PROMPT, generator=_gen(), **CALL).frames
    assert calls.n == 0 and torch.equal(out, plain)
    with numina_hooks.attach(pipe, calls):  # and the pipeline can be attached again
        pass


def test_an_attached_model_is_not_pinned_by_the_registry():
    model = testing.tiny_wan_pipeline().transformer
    handle = numina_hooks.attach(model, Calls())
    model_ref = weakref.ref(model)
    del model, handle
    gc.collect()
    assert model_ref() is None


def test_layout_seeds_is_a_strategy_that_finishes_the_seed_with_fewest_edits(pipe):
    with numina_hooks.attach(pipe, numina_hooks.LayoutSeeds(seeds=(3, 1, 2))) as handle:
        out = handle(prompt=PROMPT, counts=MISMATCH, **CALL)
        with pytest.raises(TypeError, match="do not pass"):
            handle(prompt=PROMPT, generator=_gen(), **CALL)
    report = out.numina
    tried = dict(report.seed_search)
    assert list(tried) == [3, 1, 2]
    assert report.seed == min(report.seed_search, key=lambda pair: pair[1])[0]
    # the chosen seed's video is what NUMINA gives from that seed's noise
    with numina_hooks.attach(pipe, Numina()) as handle:
        again = handle(prompt=PROMPT, counts=MISMATCH, generator=_gen(report.seed), **CALL)
    assert torch.equal(out.frames, again.frames)
    assert again.numina.counts_found == report.counts_found
    with pytest.raises(ValueError, match="distinct integer seeds"):
        numina_hooks.LayoutSeeds(seeds=(1, 1))
