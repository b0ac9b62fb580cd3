"""``numina_hooks.attach`` / ``numina_hooks.detach``: the functions users call.

Layers, from the bottom: the core (:mod:`.hookspecs`, :mod:`.context`, :mod:`.views`,
:mod:`.hooking`, :mod:`.hub`, :mod:`.driver`, :mod:`.handle`) knows nothing of NUMINA;
the adapters (``numina_hooks.adapters``) map each model family onto the core; NUMINA
(:mod:`numina_hooks.numina`) is a plugin, :class:`~numina_hooks.numina.plugin.Numina`.
This module composes them: it picks the adapter and, for the one-line use
``attach(pipe)``, names ``Numina()`` as the default plugin.
"""

from __future__ import annotations

from typing import Any

from .handle import Handle
from .hub import handle_of

__all__ = ["Handle", "attach", "detach"]


def attach(target: Any, *plugins: Any, config=None, description=None) -> Handle:
    """Hook a pipeline or transformer; returns a :class:`Handle`.

    ::

        handle = numina_hooks.attach(pipe, numina_hooks.Numina(config), EasyCache())  # NUMINA + cache
        out = handle(prompt="Three cats chasing two dogs")      # out.numina: the report
        handle = numina_hooks.attach(pipe, MyPlugin())           # plugins only: handle(...) is plain
        numina = numina_hooks.attach(pipe)                       # = attach(pipe, Numina()): the one-line use
        handle.detach()          # or numina_hooks.detach(pipe): pipe is exactly as before

    ``handle(...)`` runs NUMINA only when a ``Numina`` plugin is registered. A *pipeline*
    attached with no plugin at all gets ``Numina()`` with the default configuration (the
    one-line use); ``config=`` is short for adding ``Numina(config)``. A bare transformer
    gets no default plugin. NUMINA acts only in calls made through the handle; plain
    ``pipe(...)`` calls see the hook plugins alone.

    ``description`` (a :class:`~numina_hooks.adapters.descriptions.ModelDescription`)
    hooks a model family described by hand (a fork that renamed its modules).

    :raises TypeError: ``target`` is not supported (the message lists what is), a plugin
        has no ``@hookimpl`` method, or NUMINA is asked for a bare transformer.
    :raises RuntimeError: a transformer of ``target`` is already attached.
    """
    from numina_hooks.adapters import adapter_for, adapter_for_description

    adapter = adapter_for(target) if description is None else adapter_for_description(description, target)
    if config is not None or (not plugins and adapter.driver() is not None):
        from .numina.plugin import Numina  # the API layer names the default plugin; the core never does

        if config is not None and any(isinstance(p, Numina) for p in plugins):
            raise TypeError("pass either config=... or a Numina(config) plugin, not both")
        plugins = (Numina(config),) + tuple(plugins)
    return Handle(target, adapter, plugins)


def detach(target: Any) -> bool:
    """Detach whatever handle hooks ``target`` (a pipeline or model), found from the marker
    numina-hooks sets on each hooked transformer. Returns True if a handle was detached,
    False if ``target`` was not attached.

    :raises TypeError: ``target`` is not a supported pipeline or model.
    """
    from numina_hooks.adapters import adapter_for

    handles = []
    for _, model in adapter_for(target).transformers():
        handle = handle_of(model)
        if handle is not None and handle not in handles:
            handles.append(handle)
    for handle in handles:
        handle.detach()
    return bool(handles)
