"""numina-hooks: count-accurate text-to-video as pluggy hooks for diffusers.

::

    import numina_hooks
    handle = numina_hooks.attach(pipe, my_plugin)
    out = handle(prompt="Three cats chasing two dogs")
    handle.detach()
"""

from .attach import Handle, attach
from .context import CallContext, ForwardCall, GenerationInfo, Geometry, StepState
from .hookspecs import hookimpl, hookspec
from .views import AttentionView, Site

__version__ = "0.1.0"

__all__ = [
    "AttentionView",
    "CallContext",
    "ForwardCall",
    "GenerationInfo",
    "Geometry",
    "Handle",
    "Site",
    "StepState",
    "attach",
    "hookimpl",
    "hookspec",
]
