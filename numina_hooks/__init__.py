"""numina-hooks: count-accurate text-to-video as pluggy hooks for diffusers.

::

    import numina_hooks
    handle = numina_hooks.attach(pipe, numina_hooks.Numina(), my_plugin)
    out = handle(prompt="Three cats chasing two dogs")   # out.numina: what NUMINA did
    handle.detach()                                      # or numina_hooks.detach(pipe)

The public names load on first use, so ``import numina_hooks`` (and ``numina --help``)
does not import torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# quiet by default: messages go through the "numina_hooks" logger (`numina --verbose` shows them)
logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> the module that defines it
_EXPORTS = {
    "AttentionView": ".views",
    "CallContext": ".context",
    "EasyCache": ".cache",
    "ForwardCall": ".context",
    "GenerationInfo": ".context",
    "Geometry": ".context",
    "Handle": ".handle",
    "Layout": ".numina.layout",
    "NuminaConfig": ".numina.config",
    "NuminaReport": ".numina.report",
    "Numina": ".numina.plugin",
    "LayoutSeeds": ".numina.plugin",
    "GenerationStrategy": ".driver",
    "PipelineDriver": ".driver",
    "detach": ".attach",
    "generate_with_numina": ".numina.plugin",
    "parse_counts_arg": ".numina.counts",
    "Site": ".views",
    "StepState": ".context",
    "attach": ".attach",
    "hookimpl": ".hookspecs",
    "hookspec": ".hookspecs",
    "layout_from_attention": ".numina.layout",
    "layouts_from_attention": ".numina.identify",
    "parse_counts": ".numina.counts",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .attach import attach, detach
    from .handle import Handle
    from .driver import GenerationStrategy, PipelineDriver
    from .numina.plugin import LayoutSeeds, Numina, generate_with_numina
    from .cache import EasyCache
    from .context import CallContext, ForwardCall, GenerationInfo, Geometry, StepState
    from .hookspecs import hookimpl, hookspec
    from .numina.config import NuminaConfig
    from .numina.counts import parse_counts, parse_counts_arg
    from .numina.identify import layouts_from_attention
    from .numina.layout import Layout, layout_from_attention
    from .numina.report import NuminaReport
    from .views import AttentionView, Site


def _load(name: str):
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = _load(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``numina_hooks.attach`` is both a submodule and the function; the package attribute
    is the function (importing the submodule would otherwise replace it), or whatever a
    caller sets it to (``monkeypatch.setattr(numina_hooks, "attach", ...)`` works)."""

    @property
    def attach(self):
        override = self.__dict__.get("_attach_override")
        return override if override is not None else _load("attach")

    @attach.setter
    def attach(self, value) -> None:
        if not isinstance(value, types.ModuleType):  # the import system records the submodule: ignored
            self.__dict__["_attach_override"] = value

    @attach.deleter
    def attach(self) -> None:
        self.__dict__.pop("_attach_override", None)


sys.modules[__name__].__class__ = _Package
