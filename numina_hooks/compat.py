"""What differs between the diffusers releases we support, in one place.

The pipeline's ``cache_context``: every stateful diffusers ``ModelHook`` gets the context of
the current denoising call through ``StateManager.set_context``.

* diffusers >= 0.41 passes a ``CacheContext`` (``name``, ``step_index``,
  ``num_inference_steps``, ``timestep``, ``sigma``), kept in ``StateManager._context``;
* diffusers 0.35 - 0.40 pass the name alone (``"cond"``, ``"uncond"``, ...), kept in
  ``StateManager._current_context``.

:func:`received_cache_context` reads either as an object with the 0.41 fields (those a
release does not pass are None, and the step is then read from the timestep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["NamedCacheContext", "clear_cache_context", "received_cache_context"]


@dataclass(frozen=True)
class NamedCacheContext:
    """A cache context of a release that passes only its name (diffusers < 0.41)."""

    name: str
    step_index: Optional[int] = None
    num_inference_steps: Optional[int] = None
    timestep: Any = None
    sigma: Optional[float] = None


def received_cache_context(state_manager) -> Optional[Any]:
    """The context the pipeline set on ``state_manager`` (a diffusers ``StateManager``), or None
    outside a ``cache_context`` block."""
    context = getattr(state_manager, "_context", None)  # diffusers >= 0.41: a CacheContext
    if context is not None:
        return context
    name = getattr(state_manager, "_current_context", None)  # diffusers 0.35 - 0.40: the name
    return NamedCacheContext(name) if isinstance(name, str) else None


def clear_cache_context(state_manager) -> None:
    """Forget the received context (what ``StateManager.set_context(None)`` does on every release)."""
    state_manager.set_context(None)
