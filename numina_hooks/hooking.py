"""The mechanics of hooking a model, shared by every adapter.

Three pieces, each removable exactly:

* :class:`HookedProcessor` wraps the attention processor a module already has
  (diffusers' own, xDiT's, a user's) and delegates every call to it; while it
  runs, it marks the *site* (which layer of which transformer) in a context
  variable.
* :class:`KernelTap` replaces one module-level attention function that the
  processors call (``dispatch_attention_fn`` for Wan, ``F`` for CogVideoX)
  with a function that, only inside a marked site and only when some plugin
  implements ``on_attention``, builds an :class:`~numina_hooks.views.AttentionView`
  and lets plugins observe or replace the kernel's output. Outside a site it
  calls the original function with the original arguments. Taps are
  reference-counted: installed by the first attach, removed by the last detach.
* :class:`ForwardHook` is a diffusers ``ModelHook`` around the transformer's
  forward: it receives the pipeline's ``cache_context`` (branch name, step index,
  sigma), builds the :class:`~numina_hooks.context.CallContext`, and runs the
  ``on_forward`` hook. Registering through diffusers' ``HookRegistry`` is what
  diffusers' own caches do, so ours coexists with FirstBlockCache, MagCache
  and TaylorSeer. A :class:`_ForwardGuard` puts it back into the forward chain
  when accelerate's offload hooks are removed and re-added around it.

Under ``torch.compile`` (dynamo tracing the transformer) the same three pieces take
a path dynamo can trace: with no plugin implementing ``on_attention`` or
``on_forward`` they add nothing to the graph (no context variable, no timestep
read), and with plugins the Python side (building the call context, pluggy,
the plugins themselves) runs in functions marked ``torch.compiler.disable``: one
graph break when a forward starts, one when it ends, and one per viewed
attention kernel call. See "torch.compile" in docs/attach.md.

Every piece refers to the :class:`~numina_hooks.hub.HookHub` of its attach (named
``hub`` here), never to the user's handle, so a forgotten handle can be collected.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import types
import warnings
from typing import Callable, Optional

import torch

from .compat import clear_cache_context, received_cache_context
from .context import CallContext, ForwardCall, current_call
from .views import AttentionView, Site

#: The hooked attention layer currently running, if any.
_active_site: contextvars.ContextVar[Optional["SiteCall"]] = contextvars.ContextVar(
    "numina_hooks_active_site", default=None
)


#: Under torch.compile: ``[processor, kernel calls so far]`` of the hooked processor whose
#: call dynamo is tracing, or None. A plain list, which dynamo traces (a context variable
#: it cannot); set and restored in traced code, read by the tap's eager dispatch.
_compiled_site: list = [None]

#: Handles (by id) with an ``on_attention`` plugin, and their count: the kernel tap reads
#: the count in traced code, so with none (attached but idle) dynamo sees only the kernel.
_attention_hubs: set = set()
_attention_wanted = 0


def set_wants_attention(hub, wants: bool) -> None:
    """Record whether ``hub`` has an ``on_attention`` plugin (for the compiled tap path)."""
    global _attention_wanted
    if wants:
        _attention_hubs.add(id(hub))
    else:
        _attention_hubs.discard(id(hub))
    _attention_wanted = len(_attention_hubs)


class SiteCall:
    """State of one processor call of one hooked site."""

    __slots__ = ("site", "hub", "context", "expected_kernel", "kernel_calls", "tapped", "parallel_config")

    def __init__(self, site: Site, hub, context: CallContext, expected_kernel: int, parallel_config=None):
        self.site = site
        self.hub = hub
        self.context = context
        self.expected_kernel = expected_kernel
        self.kernel_calls = 0
        self.tapped = False
        #: the processor's diffusers ParallelConfig: under context parallelism every block holds a
        #: slice of the video tokens, also where the kernel gets none (Wan's cross-attention)
        self.parallel_config = parallel_config

    def on_kernel(self, original: Callable, layout: str, args: tuple, kwargs: dict, read_arguments=None):
        index = self.kernel_calls
        self.kernel_calls = index + 1
        if index != self.expected_kernel:
            return original(*args, **kwargs)
        self.tapped = True
        q, k, v, scale = (read_arguments or read_dispatch_arguments)(args, kwargs)
        if scale is not None:  # None: the view works out the default (1 / sqrt(head_dim)) if asked
            scale = float(scale)
        parallel_config = kwargs.get("parallel_config") or self.parallel_config  # context parallelism, if any
        hub = self.hub
        for view in hub._adapter.make_views(self.site, self.context, q, k, v, layout, scale):
            if parallel_config is not None:
                view.set_shard(parallel_config)
            out = hub._dispatch_attention(view)
            if out is not None:
                return view.to_model_layout(_check_replacement(out, view))
        return original(*args, **kwargs)


def read_dispatch_arguments(args: tuple, kwargs: dict):
    """``(q, k, v, scale_or_None)`` of a call of diffusers' ``dispatch_attention_fn`` or torch SDPA
    (``query, key, value, attn_mask, dropout_p, is_causal, scale``)."""
    scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
    if len(args) >= 3:  # how processors call it (the common case, first)
        return args[0], args[1], args[2], scale
    vals = list(args)
    for name in ("query", "key", "value")[len(vals):]:
        vals.append(kwargs[name])
    return vals[0], vals[1], vals[2], scale


def _check_replacement(out, view: AttentionView) -> torch.Tensor:
    q, v = view.q, view.v
    expected = (q.shape[0], q.shape[1], q.shape[2], v.shape[3])
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"on_attention returned {type(out).__name__} for layer {view.layer} ({view.site.name}); "
            "expected None or a tensor [batch, heads, query_tokens, head_dim]"
        )
    if tuple(out.shape) != expected:
        raise ValueError(
            f"on_attention returned a tensor of shape {tuple(out.shape)} for layer {view.layer} "
            f"({view.site.name}, kind={view.kind}); expected {expected} = [batch, heads, query_tokens, head_dim] "
            "in the canonical layout"
        )
    if out.device != q.device:
        raise ValueError(f"on_attention returned a tensor on {out.device}; the layer runs on {q.device}")
    return out.to(q.dtype)


# ----------------------------------------------------------------------------- processors

_wrapper_classes: dict[type, type] = {}
_FORWARDED_ATTRS = ("_attention_backend", "_parallel_config")


class HookedProcessor:
    """Wraps an installed attention processor and delegates to it.

    Reads and writes of ``_attention_backend`` / ``_parallel_config`` go to the
    wrapped processor, so ``model.set_attention_backend(...)`` keeps working
    while attached. ``inspect.signature(wrapper.__call__)`` equals the wrapped
    processor's, because diffusers' ``Attention.forward`` drops keyword
    arguments the processor's signature does not name.
    """

    def __init__(self, inner, site: Site, hub, expected_kernel: int):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "site", site)
        object.__setattr__(self, "hub", hub)
        object.__setattr__(self, "expected_kernel", expected_kernel)

    def _call(self, attn, *args, **kwargs):
        # every wrapper class's __call__ runs this code itself (see wrap_processor): one frame less
        hub = self.hub
        if not hub._wants_attention:
            return self.inner(attn, *args, **kwargs)
        if torch.compiler.is_compiling():
            # traced: mark the site in a plain list (no context variable, no graph break); the
            # tap's eager dispatch reads it. The untapped-processor warning is left to eager calls.
            previous = _compiled_site[0]
            _compiled_site[0] = [self, 0]
            result = self.inner(attn, *args, **kwargs)
            _compiled_site[0] = previous
            return result
        ctx = current_call.get()
        if ctx is None:
            ctx = hub._fallback_context(self.site.transformer)
        site_call = SiteCall(self.site, hub, ctx, self.expected_kernel, getattr(self.inner, "_parallel_config", None))
        token = _active_site.set(site_call)
        try:
            result = self.inner(attn, *args, **kwargs)
        finally:
            _active_site.reset(token)
        if not site_call.tapped and hub._wants_attention:  # (a plugin unregistered during the call: no view due)
            hub._warn_untapped(self.site, self.inner)
        return result

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "inner"), name)

    def __setattr__(self, name, value):
        if name in _FORWARDED_ATTRS:
            setattr(self.inner, name, value)
        else:
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"HookedProcessor({self.inner!r}, layer={self.site.layer}, kind={self.site.kind})"


def wrap_processor(inner, site: Site, hub, expected_kernel: int) -> HookedProcessor:
    """A :class:`HookedProcessor` whose ``__call__`` has ``inner``'s signature."""
    cls = type(inner)
    wrapper_cls = _wrapper_classes.get(cls)
    if wrapper_cls is None:
        # HookedProcessor._call's own code under the name __call__ (a function of its own, to
        # carry the signature): the model calls it directly, with no delegating frame between
        call = HookedProcessor._call
        __call__ = types.FunctionType(call.__code__, call.__globals__, "__call__", call.__defaults__, call.__closure__)
        __call__.__qualname__ = f"Hooked{cls.__name__}.__call__"
        __call__.__doc__ = call.__doc__
        try:
            __call__.__signature__ = inspect.signature(cls.__call__)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            pass
        wrapper_cls = type(f"Hooked{cls.__name__}", (HookedProcessor,), {"__call__": __call__})
        _wrapper_classes[cls] = wrapper_cls
    return wrapper_cls(inner, site, hub, expected_kernel)


# ----------------------------------------------------------------------------- kernel taps


class _FunctionalProxy:
    """Stands in for ``torch.nn.functional`` inside one module: every attribute
    is torch's, except ``scaled_dot_product_attention`` which is tapped."""

    def __init__(self, functional, sdpa):
        self._functional = functional
        self.scaled_dot_product_attention = sdpa

    def __getattr__(self, name):
        return getattr(self._functional, name)


class KernelTap:
    """Replace ``owner.attribute`` (an attention function, or a module ``F`` whose
    ``scaled_dot_product_attention`` is the kernel) while any attached handle needs it.

    :param layout: ``"BLHD"`` (diffusers' dispatch layout) or ``"BHLD"`` (torch SDPA); passed on
        to the adapter's ``make_views``.
    :param functional_proxy: the attribute is ``torch.nn.functional``; tap its SDPA.
    :param read_arguments: ``(args, kwargs) -> (q, k, v, scale_or_None)`` for a function whose
        signature is not diffusers' (default :func:`read_dispatch_arguments`); ``scale=None``
        means ``1 / sqrt(q.shape[-1])``.
    """

    _lock = threading.Lock()
    _installed: dict[tuple[int, str], list] = {}

    def __init__(
        self, owner, attribute: str, layout: str, functional_proxy: bool = False, read_arguments: Optional[Callable] = None
    ):
        self.owner = owner
        self.attribute = attribute
        self.layout = layout
        self.functional_proxy = functional_proxy
        self.read_arguments = read_arguments

    @property
    def key(self) -> tuple[int, str]:
        return (id(self.owner), self.attribute)

    def acquire(self) -> None:
        with self._lock:
            entry = self._installed.get(self.key)
            if entry is not None:
                entry[1] += 1
                return
            original = getattr(self.owner, self.attribute)
            layout = self.layout
            if self.functional_proxy:
                kernel = original.scaled_dot_product_attention
                replacement = _FunctionalProxy(original, _make_tapped(kernel, layout, self.read_arguments))
            else:
                replacement = _make_tapped(original, layout, self.read_arguments)
            setattr(self.owner, self.attribute, replacement)
            self._installed[self.key] = [original, 1, replacement]

    def release(self) -> None:
        with self._lock:
            entry = self._installed.get(self.key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                original, _, replacement = entry
                if getattr(self.owner, self.attribute) is replacement:
                    setattr(self.owner, self.attribute, original)
                else:  # someone replaced it after us: leave theirs, say so
                    warnings.warn(
                        f"{self.owner.__name__}.{self.attribute} was replaced after numina-hooks tapped it; "
                        "leaving the newer replacement in place",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                del self._installed[self.key]


def _make_tapped(original: Callable, layout: str, read_arguments: Optional[Callable] = None) -> Callable:
    def tapped(*args, **kwargs):
        if not _attention_wanted:  # attached but idle (no on_attention plugin): the kernel alone, traced too
            return original(*args, **kwargs)
        if torch.compiler.is_compiling():
            marked = _compiled_site[0]
            if marked is None:  # a site marked some other way (the context variable), if any
                return _dispatch_marked_by_context(original, layout, args, kwargs, read_arguments)
            return _dispatch_compiled_site(marked, original, layout, args, kwargs, read_arguments)
        site_call = _active_site.get()
        if site_call is None:
            return original(*args, **kwargs)
        return site_call.on_kernel(original, layout, args, kwargs, read_arguments)

    tapped.__wrapped__ = original
    tapped.__numina_tap__ = True
    return tapped


@torch.compiler.disable
def _dispatch_compiled_site(marked: list, original: Callable, layout: str, args: tuple, kwargs: dict,
                            read_arguments=None):
    """A tapped kernel call inside a traced hooked processor (``marked`` is its
    ``[processor, kernel calls so far]``), run eagerly: the view, the plugins and the
    kernel. One graph break per kernel call of a hooked site."""
    processor, index = marked[0], marked[1]
    marked[1] = index + 1
    if index != processor.expected_kernel:
        return original(*args, **kwargs)
    hub = processor.hub
    ctx = current_call.get()
    if ctx is None:
        ctx = hub._fallback_context(processor.site.transformer)
    site_call = SiteCall(processor.site, hub, ctx, processor.expected_kernel,
                         getattr(processor.inner, "_parallel_config", None))
    site_call.kernel_calls = index
    return site_call.on_kernel(original, layout, args, kwargs, read_arguments)


@torch.compiler.disable
def _dispatch_marked_by_context(original: Callable, layout: str, args: tuple, kwargs: dict, read_arguments=None):
    """A tapped kernel call under torch.compile outside a traced hooked processor: the eager
    path (an adapter that marks its sites with the context variable)."""
    site_call = _active_site.get()
    if site_call is None:
        return original(*args, **kwargs)
    return site_call.on_kernel(original, layout, args, kwargs, read_arguments)


# ----------------------------------------------------------------------------- forward hook


def make_forward_hook(hub, transformer_name: str, on_enter: Optional[Callable[[], None]] = None):
    """A diffusers ``ModelHook`` (built lazily: diffusers is an optional extra).

    ``on_enter`` is called each time the hooked forward starts (the
    :class:`_ForwardGuard` counts them to notice a forward that bypassed us).
    """
    from diffusers.hooks.hooks import ModelHook, StateManager

    class _ContextReceiver(StateManager):
        """Receives the pipeline's ``cache_context`` (diffusers calls
        ``set_context`` on every ``StateManager`` of a stateful hook)."""

        def __init__(self):
            super().__init__(dict)

    class ForwardHook(ModelHook):
        _is_stateful = True

        def __init__(self):
            super().__init__()
            self.receiver = _ContextReceiver()

        def new_forward(self, module, *args, **kwargs):
            if torch.compiler.is_compiling():
                return _compiled_forward(self, module, args, kwargs)
            if on_enter is not None:
                on_enter()
            if not hub._wants_context:  # no plugin reads a context: the model alone, no timestep read
                return self.fn_ref.original_forward(*args, **kwargs)
            ctx = hub._make_context(transformer_name, module, args, kwargs, received_cache_context(self.receiver))
            token = current_call.set(ctx)
            try:
                if not hub._wants_forward:  # on_forward is the model runner alone: run the model
                    return self.fn_ref.original_forward(*args, **kwargs)
                return hub._run_forward(ctx, module, args, kwargs, self.fn_ref.original_forward)
            finally:
                current_call.reset(token)

        def reset_state(self, module):
            clear_cache_context(self.receiver)
            return module

    def _compiled_forward(hook, module, args, kwargs):
        """The forward as dynamo traces it. No ``on_attention`` / ``on_forward`` plugin: the
        model's forward alone (the same graph as unattached). Otherwise the call context and
        the ``on_forward`` plugins' parts before and after the model run eagerly (two graph
        breaks) and the model between them is traced."""
        if not hub._wants_context:
            return hook.fn_ref.original_forward(*args, **kwargs)
        skipped = _begin_compiled_forward(hub, transformer_name, module, args, kwargs, received_cache_context(hook.receiver),
                                          hook.fn_ref.original_forward)
        output = None if skipped else hook.fn_ref.original_forward(*args, **kwargs)
        return _end_compiled_forward(hub, output)

    return ForwardHook()


@torch.compiler.disable
def _begin_compiled_forward(hub, tname: str, module, args, kwargs, cache_ctx, original_forward) -> bool:
    """Eager start of a traced forward: the call context (set in ``current_call`` until
    :func:`_end_compiled_forward`) and the ``on_forward`` chain up to the model. True
    when a plugin skipped the model."""
    pending = hub._compiled_forwards
    while pending:  # a traced forward that raised before its end: unwind it first
        pending.pop().abandon()
    _compiled_site[0] = None  # and a traced processor call that raised left no site marked
    ctx = hub._make_context(tname, module, args, kwargs, cache_ctx)
    token = current_call.set(ctx)
    try:
        chain = ForwardChain(hub, ForwardCall(ctx, module, args, kwargs, original_forward))
        chain.begin()
    except BaseException:
        current_call.reset(token)
        raise
    chain.token = token
    pending.append(chain)
    return chain.model_skipped


@torch.compiler.disable
def _end_compiled_forward(hub, output):
    """Eager end of a traced forward: the ``on_forward`` chain after the model (``output``,
    None when skipped); returns the forward's result."""
    chain = hub._compiled_forwards.pop()
    try:
        return chain.end(output)
    finally:
        current_call.reset(chain.token)


class ForwardChain:
    """pluggy's ``firstresult`` call of ``on_forward``, split around the model run, for
    traced forwards (the model runs between :meth:`begin` and :meth:`end`, compiled).

    The order and rules are pluggy's: implementations from the last registered (and
    ``tryfirst``) on; a wrapper (``wrapper=True``) runs to its ``yield`` in :meth:`begin` and
    gets the result (or the exception) sent back in :meth:`end`, innermost first; a plain
    implementation's non-None result skips the model and the rest. The model is
    numina-hooks' own ``trylast`` runner; when a plugin gave ``call`` other ``args`` /
    ``kwargs`` it runs eagerly in :meth:`begin` on them. With an old-style ``hookwrapper=True``
    implementation pluggy runs the whole chain in :meth:`begin`, the model inside it
    (eager, not compiled).
    """

    def __init__(self, hub, call: ForwardCall):
        self.hub = hub
        self.call = call
        self.teardowns: list = []
        self.result = None
        self.exception: Optional[BaseException] = None
        self.model_skipped = False
        self.ran_eagerly = False
        self.token = None
        self._given = (tuple(call.args), dict(call.kwargs))

    def _arguments_changed(self) -> bool:
        """True when a plugin gave ``call`` other arguments than the forward's own."""
        args, kwargs = self._given
        call = self.call
        return (len(call.args) != len(args) or any(a is not b for a, b in zip(call.args, args))
                or call.kwargs.keys() != kwargs.keys() or any(call.kwargs[k] is not v for k, v in kwargs.items()))

    def begin(self) -> None:
        from .hub import _ModelRunner

        call = self.call
        hookimpls = self.hub._pm.hook.on_forward.get_hookimpls()
        if any(impl.hookwrapper for impl in hookimpls):
            self.result = self.hub._pm.hook.on_forward(call=call)
            self.model_skipped = self.ran_eagerly = True
            return
        try:
            for impl in reversed(hookimpls):
                if isinstance(impl.plugin, _ModelRunner):
                    if call.skipped or self._arguments_changed():
                        # skipped: the wrapper's output; new arguments: the model runs here, eagerly,
                        # on them (the traced model only knows the forward's own arguments)
                        self.result = call.run_model()
                        self.model_skipped = True
                    return
                if impl.wrapper:
                    gen = impl.function(call)
                    try:
                        next(gen)
                    except StopIteration:
                        raise RuntimeError(f"the on_forward wrapper of {impl.plugin_name} did not yield") from None
                    self.teardowns.append(gen)
                else:
                    res = impl.function(call)
                    if res is not None:
                        self.result = res
                        self.model_skipped = True
                        return
        except BaseException as exc:  # as pluggy: the wrappers already set up see it
            self.exception = exc
            self.model_skipped = True

    def end(self, output):
        """The forward's result: ``output`` (the model's, None when it was skipped) after the
        wrappers' code past their ``yield``; raises what they leave raised."""
        if self.ran_eagerly:
            return self.result
        result = self.result if self.model_skipped else output
        exception = self.exception
        teardowns, self.teardowns = self.teardowns, []
        for gen in reversed(teardowns):
            try:
                if exception is not None:
                    gen.throw(exception)
                else:
                    gen.send(result)
                gen.close()
            except StopIteration as stop:
                result, exception = stop.value, None
                continue
            except BaseException as exc:  # noqa: BLE001 - the next wrapper out sees it, as in pluggy
                exception = exc
                continue
            exception = RuntimeError("an on_forward wrapper yielded twice")
        if exception is not None:
            raise exception
        return result

    def abandon(self) -> None:
        """Close the wrappers of a forward whose traced part raised (their ``finally`` blocks
        run) and restore ``current_call``."""
        teardowns, self.teardowns = self.teardowns, []
        for gen in reversed(teardowns):
            try:
                gen.close()
            except Exception:  # noqa: BLE001 - best effort; the original error has surfaced already
                pass
        if self.token is not None:
            try:
                current_call.reset(self.token)
            except ValueError:  # pragma: no cover - set in another context
                pass


FORWARD_HOOK_NAME = "numina_hooks.forward"


def install_processor_wrapper(hub, site: Site, attn, expected_kernel: int):
    """Wrap ``attn``'s processor; returns the undo (puts the very same object back)."""
    original = attn.processor
    attn.set_processor(wrap_processor(original, site, hub, expected_kernel))
    return lambda: attn.set_processor(original)


class _ForwardGuard:
    """Keeps our forward hook in the transformer's forward chain, and notices when it is not.

    accelerate's ``remove_hook_from_module`` (which diffusers' ``enable_model_cpu_offload``
    and ``maybe_free_model_hooks`` run at the end of every pipeline call) puts back the
    ``forward`` it saw when *it* was installed: with offload enabled before attach, that
    forward is beneath our hook, so from the next call on the transformer would run
    unhooked. :meth:`ensure` relinks our hook above whatever forward is now at the
    bottom of the chain (beneath accelerate's wrapper when there is one); it runs from a
    torch forward pre-hook before every call (accelerate's wrapper looks ``_old_forward``
    up at call time, so the relinked chain already serves that call) and at the start of
    every pipeline call made through the handle. A call that still ran without our hook
    (something replaced ``forward`` itself, with no wrapper above it) is reported to the
    handle (``hub._note_bypass``), which warns and lets NUMINA refuse to claim
    results it did not produce.
    """

    def __init__(self, hub, name: str, model, hook, ours):
        self.hub = hub
        self.name = name
        self.model = model
        self.hook = hook
        self.ours = ours  # the forward diffusers' registry installed for our hook
        self.started = 0  # calls of model(...) seen by the pre-hook
        self.entered = 0  # of those, calls that reached our hook
        self.relinked = 0  # times ensure() put our hook back

    def _reaches_us(self, fn) -> bool:
        if fn is self.ours:
            return True
        # a diffusers hook registered after ours wraps ours
        index, mine = self._registry_index(fn), self._registry_index(self.ours, own=True)
        return index is not None and mine is not None and index > mine

    def _registry_index(self, fn, own: bool = False) -> Optional[int]:
        registry = self.model.__dict__.get("_diffusers_hook")
        refs = getattr(registry, "_fn_refs", [])
        target = self.hook.fn_ref if own else _registry_fn_ref(fn)
        return next((i for i, r in enumerate(refs) if target is not None and r is target), None)

    def _misses_us(self, fn) -> bool:
        """True when ``fn`` is known not to reach our hook: the model's own forward, or a
        diffusers hook registered before ours. Anything else (someone's wrapper) is left alone."""
        if fn is None:
            return True
        if getattr(fn, "__func__", None) is type(self.model).forward and getattr(fn, "__self__", None) is self.model:
            return True
        index, mine = self._registry_index(fn), self._registry_index(self.ours, own=True)
        return index is not None and mine is not None and index < mine

    def ensure(self) -> bool:
        """Relink our hook if the forward chain is known to skip it; True when it did."""
        d = self.model.__dict__
        slot, fn = "forward", d.get("forward")
        if self._reaches_us(fn):
            return False
        if _is_accelerate_wrapper(fn, self.model) and "_old_forward" in d:
            # accelerate's wrapper calls ``module._old_forward`` at call time: relink beneath it
            slot, fn = "_old_forward", d["_old_forward"]
            if self._reaches_us(fn):
                return False
        if not self._misses_us(fn):
            return False  # an unknown wrapper: after_call will notice if it skipped us
        self.hook.fn_ref.original_forward = fn if fn is not None else type(self.model).forward.__get__(self.model)
        d[slot] = self.ours
        self.relinked += 1
        return True

    def entering(self) -> None:
        self.entered += 1

    def before_call(self, module, args):
        if torch.compiler.is_compiling():
            return None
        self.ensure()
        self.started += 1
        return None

    def after_call(self, module, args, output):
        if torch.compiler.is_compiling():
            return None
        if self.entered < self.started:
            missed = self.started - self.entered
            self.entered = self.started
            self.hub._note_bypass(self.name, missed)
        return None


def _is_accelerate_wrapper(fn, model) -> bool:
    """True for the forward accelerate's ``add_hook_to_module`` installs on ``model``."""
    import functools

    return (
        isinstance(fn, functools.partial)
        and getattr(fn.func, "__qualname__", "").startswith("add_hook_to_module.")
        and bool(fn.args)
        and fn.args[0] is model
    )


def _registry_fn_ref(fn):
    """The ``HookFunctionReference`` behind a forward installed by diffusers' ``HookRegistry``, or None."""
    import functools

    if not isinstance(fn, functools.partial):
        return None
    for cell in getattr(fn.func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # pragma: no cover - an empty cell
            continue
        if type(value).__name__ == "HookFunctionReference":
            return value
    return None


def install_diffusers_forward_hook(hub, name: str, model):
    """Register our ``ModelHook`` in ``model``'s diffusers ``HookRegistry``; returns the undo.

    A :class:`_ForwardGuard` keeps the hook in the forward chain when accelerate's offload
    hooks are removed and re-added around it (``enable_model_cpu_offload`` before or after
    attach). The undo restores the instance exactly: the ``forward`` attribute is deleted
    again when it was not an instance attribute before, ``_diffusers_hook`` is removed when
    we created it, the guard's torch hooks are removed, and if accelerate wrapped the forward
    after us, its wrapper stays on top.
    """
    from diffusers.hooks.hooks import HookRegistry

    had_registry = hasattr(model, "_diffusers_hook")
    had_forward_attr = "forward" in model.__dict__
    registry = HookRegistry.check_if_exists_or_initialize(model)
    guard_box: list = []
    hook = make_forward_hook(hub, name, on_enter=lambda: guard_box[0].entering())
    registry.register_hook(hook, FORWARD_HOOK_NAME)
    ours = model.__dict__.get("forward")
    guard = _ForwardGuard(hub, name, model, hook, ours)
    guard_box.append(guard)
    hub._guards.append(guard)
    pre = model.register_forward_pre_hook(guard.before_call)
    post = model.register_forward_hook(guard.after_call, always_call=True)
    _invalidate(registry)

    def undo():
        pre.remove()
        post.remove()
        if guard in hub._guards:
            hub._guards.remove(guard)
        current = model.__dict__.get("forward")
        registry.remove_hook(FORWARD_HOOK_NAME, recurse=False)
        if current is not ours and getattr(model, "_old_forward", None) is ours:
            # accelerate wrapped the forward after us: keep its wrapper, unhook beneath it
            restored = model.__dict__.get("forward")
            model._old_forward = restored if restored is not None else type(model).forward.__get__(model)
            model.forward = current
        elif not had_forward_attr and not registry.hooks and "forward" in model.__dict__:
            del model.forward
        if not had_registry and not registry.hooks:
            model.__dict__.pop("_diffusers_hook", None)
        else:
            _invalidate(registry)

    return undo


def _invalidate(registry) -> None:
    if hasattr(registry, "invalidate_child_registries_cache"):
        registry.invalidate_child_registries_cache()
