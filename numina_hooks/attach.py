"""``numina_hooks.attach``: hook a pipeline or model, and undo it exactly."""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from typing import Any, Iterator, Optional

import pluggy
import torch

from . import hookspecs
from .context import CallContext, ForwardCall, GenerationInfo
from .hookspecs import hookimpl
from .views import AttentionView, Site

_HOOK_NAMES = ("on_attention", "on_step", "on_forward", "on_generation_start", "on_generation_end")

# transformer module -> handle, to refuse a second attach of the same model
_attached: "weakref.WeakKeyDictionary[torch.nn.Module, Handle]" = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


class _ModelRunner:
    """The innermost ``on_forward`` implementation: runs the transformer."""

    @hookimpl(trylast=True)
    def on_forward(self, call: ForwardCall):
        return call.run_model()


class Handle:
    """What :func:`attach` returns.

    * ``handle.register(plugin)`` / ``handle.unregister(plugin)``;
    * ``handle(**pipeline_kwargs)`` runs the pipeline with the step and
      lifecycle hooks (plain ``pipe(...)`` calls still get ``on_forward`` and
      ``on_attention``);
    * ``handle.detach()`` (or leaving a ``with`` block) restores every
      processor object, forward and module attribute exactly.
    """

    def __init__(self, target: Any, adapter, plugins=(), config=None):
        self.target = target
        #: the NUMINA configuration; ``None`` when the handle only runs plugins
        self.config = config
        self._adapter = adapter
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._pm.register(_ModelRunner(), name="numina_hooks.model_runner")
        self._wants_attention = False
        #: some plugin implements on_attention or on_forward: a traced forward needs its context
        self._wants_context = False
        self._compiled_forwards: list = []  # hooking.ForwardChain of traced forwards under way
        self._warned_untapped: set[str] = set()
        self._undo: list = []  # what detach runs, last first
        self._user_context: Optional[dict] = None
        self._timestep_memo: Optional[tuple] = None  # (tensor held, its key, its float): see _timestep_value
        self._attached = False
        self._guards: list = []  # hooking._ForwardGuard of each diffusers transformer
        #: transformer name -> forward calls that ran without our forward hook
        self.bypassed_calls: dict[str, int] = {}
        self._install()
        try:
            for plugin in plugins:
                self.register(plugin)
        except BaseException:
            self.detach()
            raise

    # ------------------------------------------------------------------ plugins
    def register(self, plugin: Any, name: Optional[str] = None) -> Any:
        """Add a plugin (an object with ``@numina_hooks.hookimpl`` methods); returns it."""
        self._check_attached()
        impls = [n for n in dir(plugin) if not n.startswith("__") and self._pm.parse_hookimpl_opts(plugin, n)]
        if not impls:
            raise TypeError(
                f"{plugin!r} is not a numina-hooks plugin: it has no method marked with @numina_hooks.hookimpl. "
                f"Mark one or more of {', '.join(_HOOK_NAMES)}."
            )
        unknown = [n for n in impls if n not in _HOOK_NAMES]
        if unknown:
            raise TypeError(
                f"{plugin!r} implements unknown hook(s) {unknown}; the hooks are {', '.join(_HOOK_NAMES)}"
            )
        if self._pm.is_registered(plugin):
            raise ValueError(f"{plugin!r} is already registered on this handle")
        self._pm.register(plugin, name=name)
        self._refresh()
        return plugin

    def unregister(self, plugin: Any) -> None:
        """Remove a registered plugin; ``ValueError`` if it is not registered."""
        if not self._pm.is_registered(plugin):
            raise ValueError(f"{plugin!r} is not registered on this handle")
        self._pm.unregister(plugin)
        self._refresh()

    @property
    def plugins(self) -> list:
        """The registered plugins, oldest first."""
        return [p for p in self._pm.get_plugins() if not isinstance(p, _ModelRunner)]

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def hook(self):
        """pluggy's hook relay, for plugins that call hooks themselves."""
        return self._pm.hook

    def _refresh(self) -> None:
        from .hooking import set_wants_attention

        self._wants_attention = bool(self._pm.hook.on_attention.get_hookimpls())
        wants_forward = any(not isinstance(i.plugin, _ModelRunner) for i in self._pm.hook.on_forward.get_hookimpls())
        self._wants_context = self._wants_attention or wants_forward
        set_wants_attention(self, self._wants_attention and self._attached)

    # ------------------------------------------------------------------ install / undo
    def _install(self) -> None:
        adapter = self._adapter
        transformers = adapter.transformers()
        with _attach_lock:
            for _, model in transformers:
                if model in _attached:
                    raise RuntimeError(
                        f"{type(model).__name__} is already attached (handle {_attached[model]!r}); "
                        "use that handle, or call its .detach() before attaching again"
                    )
            self._attached = True
            try:
                for tap in adapter.kernel_taps():
                    tap.acquire()
                    self._undo.append(tap.release)
                for tname, model in transformers:
                    for site, attn in adapter.sites(tname, model):
                        self._undo.append(adapter.install_site(self, site, attn))
                    self._undo.append(adapter.install_forward(self, tname, model))
                    _attached[model] = self
                    self._undo.append(lambda model=model: _attached.pop(model, None))
                undo = adapter.install_pipeline(self)
                if undo is not None:
                    self._undo.append(undo)
            except BaseException:
                self.detach()
                raise

    def detach(self) -> None:
        """Undo everything, in reverse order; idempotent. The model is then exactly as before attach."""
        if not self._attached:
            return
        errors = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # pragma: no cover - keep undoing the rest
                errors.append(exc)
        self._attached = False
        from .hooking import set_wants_attention

        set_wants_attention(self, False)
        if errors:  # pragma: no cover
            raise RuntimeError(f"detach finished with errors: {errors}")

    def _check_attached(self) -> None:
        if not self._attached:
            raise RuntimeError("this numina-hooks handle is detached; call numina_hooks.attach(...) again")

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return f"<numina_hooks.Handle {self._adapter.name} {state}, {len(self.plugins)} plugin(s)>"

    # ------------------------------------------------------------------ context
    @contextlib.contextmanager
    def context(
        self, *, branch=None, step: Optional[int] = None, num_steps: Optional[int] = None, timestep=None
    ) -> Iterator[None]:
        """Name the branch and step of model calls made inside the block.

        For bare models driven by your own loop (no pipeline to read them from)::

            with handle.context(branch="cond", step=i, num_steps=n):
                model(...)
        """
        previous = self._user_context
        self._user_context = dict(branch=branch, step=step, num_steps=num_steps, timestep=timestep)
        try:
            yield
        finally:
            self._user_context = previous

    def _make_context(self, tname: str, module, args, kwargs, cache_ctx) -> CallContext:
        adapter = self._adapter
        geometry = adapter.geometry(module, args, kwargs)
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        batch = int(hidden.shape[0])
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
        user = self._user_context
        if user is not None:
            branch = user["branch"] if user["branch"] is not None else branch
            step = user["step"] if user["step"] is not None else step
            num_steps = user["num_steps"] if user["num_steps"] is not None else num_steps
            t_float = float(user["timestep"]) if user["timestep"] is not None else t_float
        return CallContext(
            transformer=tname,
            step=step,
            num_steps=num_steps,
            timestep=t_float,
            sigma=sigma,
            branch=branch,
            geometry=geometry,
        )

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
            key = (timestep.data_ptr(), timestep._version, tuple(timestep.shape), tuple(timestep.stride()),
                   timestep.dtype, timestep.device)
        except RuntimeError:  # an inference-mode tensor has no version counter: read it every time
            return float(timestep.max())
        memo = self._timestep_memo
        if memo is not None and memo[1] == key:
            return memo[2]
        value = float(timestep.max())
        self._timestep_memo = (timestep, key, value)
        return value

    def _fallback_context(self, tname: str) -> CallContext:
        return CallContext(tname, None, None, None, None, None, None)

    # ------------------------------------------------------------------ dispatch
    def _run_forward(self, ctx: CallContext, module, args, kwargs, original_forward):
        call = ForwardCall(ctx, module, args, kwargs, original_forward)
        return self._pm.hook.on_forward(call=call)

    def _dispatch_attention(self, view: AttentionView):
        return self._pm.hook.on_attention(view=view)

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

    # ------------------------------------------------------------------ pipeline calls
    def __call__(self, *args, **kwargs):
        """Run the attached pipeline; returns its own output type.

        With NUMINA enabled (``handle.config`` set) this is the two-phase
        generation and the output carries ``out.numina`` (a
        :class:`~numina_hooks.numina.report.NuminaReport`, or a list of them, one per
        video, for a list of prompts or several videos per call); ``counts=`` overrides
        the counts parsed from the prompt. Otherwise it is one pipeline call with
        the step and lifecycle hooks (:meth:`run_pipeline`).
        """
        if self.config is None:
            return self.run_pipeline(*args, **kwargs)
        from .numina.generate import run_numina

        self._check_attached()
        if args:
            if "prompt" in kwargs or len(args) > 1:
                raise TypeError("pass the prompt once, as prompt=... (other pipeline arguments by keyword)")
            kwargs["prompt"] = args[0]
        if "prompt" not in kwargs:
            raise TypeError("NUMINA needs prompt=...: the text whose counts it enforces")
        return run_numina(self, self.config, **kwargs)

    def read_layout(self, **kwargs):
        """NUMINA's phase 1 only: the layout at the reference step, as a report (no video).

        Takes the same arguments as a NUMINA call; the caller's generator is left
        as it was, so ``handle(...)`` with it afterwards samples the same noise.
        """
        from .numina.config import NuminaConfig
        from .numina.generate import read_layout

        self._check_attached()
        return read_layout(self, self.config or NuminaConfig(), **kwargs)

    def run_pipeline(self, *args, generation_extras: Optional[dict] = None, **kwargs):
        """One pipeline call with the step and lifecycle hooks (no NUMINA).

        ``generation_extras`` seeds ``generation.extras`` for the lifecycle hooks
        (NUMINA passes ``numina_phase`` and ``must_compute_steps`` this way).
        """
        self._check_attached()
        pipe = self._adapter.pipeline
        if pipe is None:
            raise TypeError(
                f"this handle hooks a bare {type(self.target).__name__}; call the model yourself "
                "(use handle.context(branch=..., step=...) to name branch and step)"
            )
        self._ensure_hooked()
        generation = GenerationInfo(pipeline=pipe, kwargs=kwargs, extras=dict(generation_extras or {}))
        self._pm.hook.on_generation_start(generation=generation)
        error = None
        try:
            return self._adapter.call_pipeline(self, args, kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._pm.hook.on_generation_end(generation=generation, error=error)


def attach(target: Any, *plugins: Any, config=None) -> Handle:
    """Hook a diffusers Wan / CogVideoX pipeline or transformer; returns a :class:`Handle`.

    ::

        numina = numina_hooks.attach(pipe)                       # NUMINA with the default NuminaConfig
        out = numina(prompt="Three cats chasing two dogs")      # out.numina: the report
        handle = numina_hooks.attach(pipe, MyPlugin())           # plugins only: no NUMINA
        handle = numina_hooks.attach(pipe, EasyCache(), config=NuminaConfig())  # both
        handle.detach()          # pipe is exactly as before

    NUMINA is enabled when ``config`` is given, or when a *pipeline* is attached
    with no plugin at all (the one-line use above). It only acts in calls made
    through the handle; plain ``pipe(...)`` calls see the plugins alone.

    :raises TypeError: ``target`` is not supported (the message lists what is),
        or a plugin has no ``@hookimpl`` method.
    :raises RuntimeError: a transformer of ``target`` is already attached.
    """
    from numina_hooks.adapters import adapter_for

    adapter = adapter_for(target)
    if config is None and not plugins and adapter.pipeline is not None:
        from .numina.config import NuminaConfig

        config = NuminaConfig()
    if config is not None:
        from .numina.config import NuminaConfig

        if not isinstance(config, NuminaConfig):
            raise TypeError(f"config={config!r}: expected a numina_hooks.NuminaConfig")
        if adapter.pipeline is None:
            raise TypeError(
                "NUMINA runs a whole generation, so it needs the pipeline: attach the pipeline, not its transformer"
            )
    return Handle(target, adapter, plugins, config=config)
