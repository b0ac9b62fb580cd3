"""The hooks' side of an attached target: plugins, installed hooks, call contexts.

A :class:`HookHub` is what the installed hooks (processor wrappers, forward hooks, the
kernel tap) refer to. It holds the plugin manager, the adapter and the undo list, and
builds the :class:`~numina_hooks.context.CallContext` of each transformer call. The
user's :class:`~numina_hooks.attach.Handle` holds the hub, never the other way round:
a handle that is dropped without ``detach()`` is collected, and the hub's hooks are then
removed (the model is not pinned by a forgotten handle).

Internal: plugins and methods use the :class:`~numina_hooks.attach.Handle`.
"""

from __future__ import annotations

import inspect
import threading
import warnings
import weakref
from typing import Any, Optional

import pluggy
import torch

from . import hookspecs
from .context import CallContext, ForwardCall, hidden_states_of
from .driver import GenerationStrategy
from .hookspecs import hookimpl
from .views import AttentionView, Site

#: The hook names, read from the hookspecs module (every function marked ``@hookspec``).
HOOK_NAMES: tuple = tuple(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hookspecs.hookspec.project_name + "_spec" in vars(fn)
)

_attach_lock = threading.Lock()

#: the attribute set on every hooked transformer (and removed by detach): a weak
#: reference to its handle, the only record of what is attached (it keeps neither the
#: model nor the handle alive); ``numina_hooks.detach(target)`` follows it
MARKER = "_numina_hooks_handle"


def handle_of(model: torch.nn.Module):
    """The live handle attached to ``model`` (read from its marker), or None."""
    ref = model.__dict__.get(MARKER)
    handle = ref() if ref is not None else None
    return handle if handle is not None and handle.attached else None


class _ModelRunner:
    """The innermost ``on_forward`` implementation: runs the transformer."""

    @hookimpl(trylast=True)
    def on_forward(self, call: ForwardCall):
        return call.run_model()


def _run_undos(undos: list) -> list:
    """Run and empty ``undos`` (callables), last first; every one runs, and the exceptions
    they raised are returned."""
    errors = []
    while undos:
        undo = undos.pop()
        try:
            undo()
        except Exception as exc:  # pragma: no cover - keep undoing the rest
            errors.append(exc)
    return errors


class HookHub:
    """Plugins, installed hooks and call contexts of one attached target."""

    def __init__(self, adapter):
        self._adapter = adapter
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_ModelRunner(), name="numina_hooks.model_runner")
        self.strategy: Optional[GenerationStrategy] = None
        self._wants_attention = False
        #: some plugin implements on_forward (besides the model runner)
        self._wants_forward = False
        #: some plugin implements on_attention or on_forward: a forward needs its context
        self._wants_context = False
        #: the on_attention implementations to call in order, when pluggy's call reduces to a
        #: loop over them (see _refresh); None: call through pluggy
        self._attention_plan: Optional[tuple] = ()
        self._fallback_contexts: dict[str, CallContext] = {}
        self._compiled_forwards: list = []  # hooking.ForwardChain of traced forwards under way
        self._warned_untapped: set[str] = set()
        self._undo: list = []  # what detach runs, last first
        #: (site, attention module) of every hooked site, and the undos of the kernel taps and
        #: processor wrappers while they are installed: only while some plugin implements
        #: on_attention (see _sync_sites), so an attached pipeline with none pays nothing per call
        self._sites: list = []
        self._site_undo: list = []
        self._sites_installed = False
        self._user_context: Optional[dict] = None
        self._timestep_memo: Optional[tuple] = None  # (tensor held, its key, its float): see _timestep_value
        self.attached = False
        self._guards: list = []  # hooking._ForwardGuard of each diffusers transformer
        #: transformer name -> forward calls that ran without our forward hook
        self.bypassed_calls: dict[str, int] = {}

    # ------------------------------------------------------------------ plugins
    def register(self, plugin: Any, name: Optional[str] = None) -> Any:
        if isinstance(plugin, type) and (issubclass(plugin, GenerationStrategy) or _has_method_hookimpls(plugin, self._pm)):
            raise TypeError(
                f"{plugin.__qualname__} is a class, not a plugin: pass an instance, {plugin.__name__}() "
                f"(e.g. numina_hooks.attach(pipe, {plugin.__name__}()))"
            )
        impls = [n for n in dir(plugin) if not n.startswith("__") and self._pm.parse_hookimpl_opts(plugin, n)]
        strategy = isinstance(plugin, GenerationStrategy)
        if not impls and not strategy:
            raise TypeError(
                f"{plugin!r} is not a numina-hooks plugin: it has no method marked with @numina_hooks.hookimpl "
                f"and is not a numina_hooks.GenerationStrategy. Mark one or more of {', '.join(HOOK_NAMES)}."
            )
        unknown = [n for n in impls if n not in HOOK_NAMES]
        if unknown:
            raise TypeError(
                f"{plugin!r} implements unknown hook(s) {unknown}; the hooks are {', '.join(HOOK_NAMES)}"
            )
        if plugin is self.strategy or self._pm.is_registered(plugin):
            raise ValueError(f"{plugin!r} is already registered on this handle")
        if strategy and self.strategy is not None:
            raise ValueError(
                f"{plugin!r} is a generation strategy, and this handle already runs {self.strategy!r}: "
                "a handle runs one strategy. Unregister it first, or attach another pipeline."
            )
        if impls:
            self._pm.register(plugin, name=name)
        if strategy:
            self.strategy = plugin
        try:
            self._refresh()  # may install the attention hooks (an adapter can refuse a site)
        except BaseException:
            if impls:
                self._pm.unregister(plugin)
            if strategy:
                self.strategy = None
            self._refresh()  # nothing half-applied: the plugins and hooks as before
            raise
        return plugin

    def unregister(self, plugin: Any) -> None:
        if plugin is not self.strategy and not self._pm.is_registered(plugin):
            raise ValueError(f"{plugin!r} is not registered on this handle")
        if self._pm.is_registered(plugin):
            self._pm.unregister(plugin)
        if plugin is self.strategy:
            self.strategy = None
        self._refresh()

    @property
    def plugins(self) -> list:
        hooked = [p for p in self._pm.get_plugins() if not isinstance(p, _ModelRunner)]
        if self.strategy is not None and self.strategy not in hooked:
            hooked.insert(0, self.strategy)
        return hooked

    def _refresh(self) -> None:
        from .hooking import set_wants_attention

        attention = self._pm.hook.on_attention.get_hookimpls()
        self._wants_attention = bool(attention)
        self._attention_plan = _direct_plan(attention)
        self._wants_forward = any(not isinstance(i.plugin, _ModelRunner) for i in self._pm.hook.on_forward.get_hookimpls())
        self._wants_context = self._wants_attention or self._wants_forward
        set_wants_attention(self, self._wants_attention and self.attached)
        self._sync_sites()

    def _sync_sites(self) -> None:
        """Install the kernel taps and the sites' hooks (processor wrappers) while attached
        and some plugin implements ``on_attention``; remove them, restoring each exactly,
        when none does. Without them an attention call runs the model's own code alone."""
        want = self.attached and self._wants_attention
        if want and not self._sites_installed:
            self._sites_installed = True
            try:
                for tap in self._adapter.kernel_taps():
                    tap.acquire()
                    self._site_undo.append(tap.release)
                for site, attn in self._sites:
                    self._site_undo.append(self._adapter.install_site(self, site, attn))
            except BaseException:
                self._remove_sites()
                raise
        elif not want and self._sites_installed:
            self._remove_sites()

    def _remove_sites(self) -> None:
        errors = _run_undos(self._site_undo)
        self._sites_installed = False
        if errors:  # pragma: no cover
            raise RuntimeError(f"removing the attention hooks finished with errors: {errors}")

    # ------------------------------------------------------------------ install / undo
    def install(self, handle) -> None:
        """Install every hook of the adapter; ``handle`` is recorded (weakly) as the owner."""
        adapter = self._adapter
        transformers = adapter.transformers()
        with _attach_lock:
            for _, model in transformers:
                owner = handle_of(model)
                if owner is not None:
                    raise RuntimeError(
                        f"{type(model).__name__} is already attached (handle {owner!r}); use that handle, "
                        "call its .detach() or numina_hooks.detach(model) before attaching again"
                    )
            self.attached = True
            try:
                ref = weakref.ref(handle)
                self._sites = []
                for tname, model in transformers:
                    self._sites += adapter.sites(tname, model)
                    self._undo.append(adapter.install_forward(self, tname, model))
                    self._undo.append(_set_marker(model, ref))
                undo = adapter.install_pipeline(self)
                if undo is not None:
                    self._undo.append(undo)
                self._sync_sites()
            except BaseException:
                self.detach()
                raise

    def detach(self) -> None:
        """Undo everything, in reverse order; idempotent."""
        if not self.attached:
            return
        errors = []
        try:
            self._remove_sites()
        except Exception as exc:  # pragma: no cover - keep undoing the rest
            errors.append(exc)
        errors += _run_undos(self._undo)
        self.attached = False
        from .hooking import set_wants_attention

        set_wants_attention(self, False)
        if errors:  # pragma: no cover
            raise RuntimeError(f"detach finished with errors: {errors}")

    @staticmethod
    def release_forgotten(hub: "HookHub", description: str) -> None:
        """Run when a handle is collected while still attached: remove its hooks."""
        if not hub.attached:
            return
        warnings.warn(
            f"numina-hooks: a handle of {description} was garbage-collected while attached; its hooks were "
            "removed. Keep the handle while you use it, and call handle.detach() (or use a with block).",
            ResourceWarning,
            stacklevel=2,
        )
        hub.detach()

    # ------------------------------------------------------------------ context
    def _make_context(self, tname: str, module, args, kwargs, cache_ctx) -> CallContext:
        """The context of a diffusers-style forward: step and branch from the pipeline's
        ``cache_context`` (``cache_ctx``), else from the timestep."""
        adapter = self._adapter
        geometry = adapter.geometry(module, args, kwargs)
        batch = int(hidden_states_of(args, kwargs).shape[0])
        t_float = self._timestep_value(kwargs.get("timestep"))
        step = num_steps = sigma = None
        branch = None
        if cache_ctx is not None:
            branch = adapter.branch(cache_ctx.name, batch)
            step = cache_ctx.step_index
            num_steps = cache_ctx.num_inference_steps
            sigma = cache_ctx.sigma
        if step is None:
            step, n = adapter.step_from_timestep(t_float)
            num_steps = num_steps or n
        return self.context_for(tname, step=step, num_steps=num_steps, timestep=t_float, sigma=sigma,
                                branch=branch, geometry=geometry)

    def context_for(self, tname: str, *, step, num_steps, timestep, sigma, branch, geometry) -> CallContext:
        """A :class:`CallContext` from what the adapter read, with the caller's
        ``handle.context(...)`` values taking precedence."""
        user = self._user_context
        if user is not None:
            branch = user["branch"] if user["branch"] is not None else branch
            step = user["step"] if user["step"] is not None else step
            num_steps = user["num_steps"] if user["num_steps"] is not None else num_steps
            timestep = float(user["timestep"]) if user["timestep"] is not None else timestep
        return CallContext._of(tname, step, num_steps, timestep, sigma, branch, geometry)

    def _timestep_value(self, timestep) -> Optional[float]:
        """The float of a forward's ``timestep`` (its max: Wan2.2 TI2V passes one per token,
        0 on a conditioning first frame), read once per step rather than once per call.

        Reading a device tensor's value waits for the device. Pipelines pass views of the
        scheduler's timestep (``t.expand(batch)``), the same memory for every call of a
        step (cond, uncond, each expert), so the value is kept for the last tensor read,
        keyed by its memory, shape and in-place version; the tensor is held, so that
        memory cannot be reused by another one while the key stands.
        """
        if timestep is None:
            return None
        if not isinstance(timestep, torch.Tensor):
            return float(torch.as_tensor(timestep).max())
        try:
            key = (timestep.data_ptr(), timestep._version, timestep.shape, timestep.stride(), timestep.dtype,
                   timestep.device)
        except RuntimeError:  # an inference-mode tensor has no version counter: read it every time
            return float(timestep.max())
        memo = self._timestep_memo
        if memo is not None and memo[1] == key:
            return memo[2]
        value = float(timestep.max())
        self._timestep_memo = (timestep, key, value)
        return value

    def _fallback_context(self, tname: str) -> CallContext:
        """The context of an attention call outside any hooked forward (nothing known; frozen,
        so one per transformer name serves every such call)."""
        ctx = self._fallback_contexts.get(tname)
        if ctx is None:
            ctx = self._fallback_contexts[tname] = CallContext(tname, None, None, None, None, None, None)
        return ctx

    # ------------------------------------------------------------------ dispatch
    def _run_forward(self, ctx: CallContext, module, args, kwargs, original_forward):
        call = ForwardCall(ctx, module, args, kwargs, original_forward)
        return self._pm.hook.on_forward(call=call)

    def _dispatch_attention(self, view: AttentionView):
        """``on_attention(view=view)``: the first non-None result, or None. Runs the plan of
        :func:`_direct_plan` where there is one, else pluggy's call."""
        plan = self._attention_plan
        if plan is None:
            return self._pm.hook.on_attention(view=view)
        for function, takes_view in plan:
            out = function(view) if takes_view else function()
            if out is not None:
                return out
        return None

    def _ensure_hooked(self) -> None:
        """Put the forward hooks back where something (accelerate's offload) took them out."""
        for guard in self._guards:
            guard.ensure()

    def _note_bypass(self, transformer: str, calls: int) -> None:
        first = not self.bypassed_calls
        self.bypassed_calls[transformer] = self.bypassed_calls.get(transformer, 0) + calls
        if first:
            warnings.warn(
                f"numina-hooks: {transformer}.forward ran without numina-hooks' forward hook: something replaced "
                "the model's forward after attach with a function that does not call the previous one. on_forward "
                "did not run and attention views of that call have no step, branch or geometry. Detach, make the "
                "change, then attach again.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _warn_untapped(self, site: Site, processor) -> None:
        key = type(processor).__qualname__
        if key in self._warned_untapped:
            return
        self._warned_untapped.add(key)
        warnings.warn(
            f"numina-hooks: the attention processor {type(processor).__module__}.{key} on {site.name} does not "
            "call an attention function numina-hooks can tap, so on_attention sees no view there. "
            "Use the model's default processor, or open an issue naming that processor.",
            RuntimeWarning,
            stacklevel=3,
        )


def _has_method_hookimpls(cls: type, pm) -> bool:
    """True when a hook implementation of class ``cls`` is a plain method (it needs an
    instance: registering the class itself would call it without ``self``)."""
    for n in dir(cls):
        if n.startswith("__") or not pm.parse_hookimpl_opts(cls, n):
            continue
        if not isinstance(inspect.getattr_static(cls, n, None), (staticmethod, classmethod)):
            return True
    return False


def _direct_plan(hookimpls: list) -> Optional[tuple]:
    """pluggy's call of a ``firstresult`` hook with one argument (``on_attention(view=...)``)
    as ``((function, takes_the_argument), ...)`` in pluggy's calling order (the last of
    ``hookimpls``, which pluggy keeps sorted by registration and ``tryfirst`` / ``trylast``,
    first): each function is called in turn until one returns non-None, as pluggy does,
    without pluggy's per-call bookkeeping (argument checks, list copies, result list), which
    is most of an observer's cost per attention call. None (call through pluggy) when an
    implementation is a wrapper or takes arguments with defaults. Rebuilt by
    :meth:`HookHub._refresh` at every register and unregister; a plugin registering another
    one from inside the hook is seen from the next call on, as with pluggy."""
    plan = []
    for impl in reversed(hookimpls):
        if impl.wrapper or impl.hookwrapper or impl.kwargnames or len(impl.argnames) > 1:
            return None
        plan.append((impl.function, bool(impl.argnames)))
    return tuple(plan)


def _set_marker(model: torch.nn.Module, ref: weakref.ref):
    """Set the handle marker on ``model`` (bypassing ``nn.Module.__setattr__``); returns the undo."""
    had = MARKER in model.__dict__
    previous = model.__dict__.get(MARKER)
    model.__dict__[MARKER] = ref

    def undo():
        if had:
            model.__dict__[MARKER] = previous
        else:
            model.__dict__.pop(MARKER, None)

    return undo
