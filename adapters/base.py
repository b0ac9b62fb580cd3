"""The adapter contract and the registry of adapters.

An adapter knows one model family: which objects it accepts, where their
transformers and attention layers are, which attention function their
processors call (and in what tensor layout), how to read the token geometry
of a forward, and how the pipeline names the branch and the step.
Everything else (wrapping processors, tapping kernels, the forward hook,
undoing it all) is shared and lives in :mod:`numina_hooks.hooking`.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch

from numina_hooks.context import Branch, CallContext, Geometry
from numina_hooks.hooking import KernelTap, install_diffusers_forward_hook, install_processor_wrapper
from numina_hooks.views import AttentionView, Site


class Adapter:
    """Base class of the adapters; subclasses fill in the model-specific parts."""

    #: Short name, shown in errors and reports.
    name: str = "adapter"
    #: What this adapter accepts, for error messages.
    accepts: str = ""
    #: Layout of q/k/v at the tapped kernel: ``"BLHD"`` or ``"BHLD"``.
    layout: str = "BHLD"

    # -------------------------------------------------------------- discovery
    @classmethod
    def matches(cls, target: Any) -> bool:
        """True when ``target`` (pipeline or model) belongs to this family."""
        raise NotImplementedError

    def __init__(self, target: Any):
        self.target = target
        self.pipeline = None if isinstance(target, torch.nn.Module) else target

    def transformers(self) -> list[tuple[str, torch.nn.Module]]:
        """``(name, module)`` of each transformer to hook, in pipeline order."""
        raise NotImplementedError

    def sites(self, transformer_name: str, transformer: torch.nn.Module) -> list[tuple[Site, torch.nn.Module]]:
        """Each hooked attention module with its :class:`Site`."""
        raise NotImplementedError

    def kernel_taps(self) -> list[KernelTap]:
        """The attention functions the processors of this family call."""
        raise NotImplementedError

    # -------------------------------------------------------------- installing
    # Each ``install_*`` does its part and returns a callable that undoes it exactly.
    # The defaults are the diffusers mechanics; other frameworks override them.
    def install_site(self, handle, site: Site, attn: torch.nn.Module):
        """Mark calls of one attention module as ``site`` (default: wrap its processor)."""
        return install_processor_wrapper(handle, site, attn, self.expected_kernel(site, attn))

    def install_forward(self, handle, name: str, model: torch.nn.Module):
        """Run ``on_forward`` around the transformer (default: a diffusers ``ModelHook``)."""
        return install_diffusers_forward_hook(handle, name, model)

    def install_pipeline(self, handle):
        """Anything the pipeline itself needs (default: nothing); returns an undo or None."""
        return None

    def expected_kernel(self, site: Site, attn: torch.nn.Module) -> int:
        """Which kernel call of one processor call is the one to view (0 = first)."""
        return 0

    # -------------------------------------------------------------- per call
    def geometry(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Geometry:
        raise NotImplementedError

    def branch(self, cache_name: Optional[str], batch: int) -> Branch:
        """Branch of a forward, from the pipeline's ``cache_context`` name."""
        if cache_name in ("cond", "uncond"):
            return cache_name
        return None

    def step_from_timestep(self, timestep: Optional[float]) -> tuple[Optional[int], Optional[int]]:
        """``(step, num_steps)`` by finding ``timestep`` in the pipeline scheduler's timesteps."""
        if self.pipeline is None or timestep is None:
            return None, None
        timesteps = getattr(getattr(self.pipeline, "scheduler", None), "timesteps", None)
        if timesteps is None or len(timesteps) == 0:
            return None, None
        ts = torch.as_tensor(timesteps).detach().float().cpu()
        hits = torch.nonzero(torch.isclose(ts, torch.tensor(float(timestep)), rtol=0, atol=1e-3)).flatten()
        if hits.numel() == 0:
            return None, len(ts)
        return int(hits[0]), len(ts)

    def make_views(
        self, site: Site, context: CallContext, q, k, v, layout: str, scale: float
    ) -> Iterable[AttentionView]:
        raise NotImplementedError


_REGISTRY: list[type[Adapter]] = []


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator adding an adapter to the registry (later ones are tried first)."""
    _REGISTRY.insert(0, cls)
    return cls


def registered_adapters() -> list[type[Adapter]]:
    _load_builtin()
    return list(_REGISTRY)


def adapter_for(target: Any) -> Adapter:
    """The adapter that accepts ``target``; ``TypeError`` naming what is supported otherwise."""
    for cls in registered_adapters():
        if cls.matches(target):
            return cls(target)
    supported = "; ".join(f"{cls.name}: {cls.accepts}" for cls in registered_adapters())
    raise TypeError(
        f"numina_hooks.attach cannot hook a {type(target).__module__}.{type(target).__qualname__}. "
        f"Supported: {supported}. Pass the diffusers pipeline or its transformer."
    )


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import diffusers_cogvideox, diffusers_wan  # noqa: F401  (they register themselves)


def _class_named(obj: Any, names: Sequence[str]) -> bool:
    """True when ``obj``'s class or a base has one of ``names`` (no import needed)."""
    return any(c.__name__ in names for c in type(obj).__mro__)
