"""The diffusers shim: the pipeline's cache context reads the same on every supported release."""

import pytest

from numina_hooks.compat import NamedCacheContext, clear_cache_context, received_cache_context


class _NameOnlyStateManager:
    """What diffusers 0.35 - 0.40 keep: ``set_context(name)`` stores the name alone."""

    def __init__(self):
        self._current_context = None

    def set_context(self, name):
        self._current_context = name


def test_a_release_that_passes_the_name_alone_gives_the_name_and_no_step():
    manager = _NameOnlyStateManager()
    assert received_cache_context(manager) is None  # outside a cache_context block
    manager.set_context("uncond")
    ctx = received_cache_context(manager)
    assert ctx == NamedCacheContext("uncond") and ctx.step_index is None and ctx.sigma is None
    clear_cache_context(manager)
    assert received_cache_context(manager) is None


def test_the_installed_diffusers_context_is_read_with_its_step():
    hooks = pytest.importorskip("diffusers.hooks.hooks")
    manager = hooks.StateManager(dict)
    assert received_cache_context(manager) is None
    if hasattr(hooks, "CacheContext"):  # diffusers >= 0.41 passes where the loop is
        manager.set_context(hooks.CacheContext("cond", step_index=3, num_inference_steps=8, sigma=0.5))
        ctx = received_cache_context(manager)
        assert (ctx.name, ctx.step_index, ctx.num_inference_steps, ctx.sigma) == ("cond", 3, 8, 0.5)
    else:
        manager.set_context("cond")
        assert received_cache_context(manager) == NamedCacheContext("cond")
    clear_cache_context(manager)
    assert received_cache_context(manager) is None
