"""numina-hooks: count-accurate text-to-video as pluggy hooks for diffusers.

::

    import numina_hooks
    handle = numina_hooks.attach(pipe, my_plugin)
    out = handle(prompt="Three cats chasing two dogs")
    handle.detach()
"""

from .attach import Handle, attach
from .cache import EasyCache
from .context import CallContext, ForwardCall, GenerationInfo, Geometry, StepState
from .hookspecs import hookimpl, hookspec
from .numina.config import NuminaConfig
from .numina.counts import parse_counts
from .numina.layout import Layout, layout_from_attention
from .numina.report import NuminaReport
from .views import AttentionView, Site

__version__ = "0.1.0"

__all__ = [
    "AttentionView",
    "CallContext",
    "EasyCache",
    "ForwardCall",
    "GenerationInfo",
    "Geometry",
    "Handle",
    "Layout",
    "NuminaConfig",
    "NuminaReport",
    "Site",
    "StepState",
    "attach",
    "hookimpl",
    "hookspec",
    "layout_from_attention",
    "parse_counts",
]
