"""The handle of an attached pipeline or model (core: knows nothing of NUMINA).

:func:`numina_hooks.attach` returns a :class:`Handle`. It holds a
:class:`~numina_hooks.hub.HookHub` (the installed hooks refer to the hub, never to the
handle) and the pipeline's :class:`~numina_hooks.driver.PipelineDriver`.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator, Optional

from .driver import GenerationStrategy, PipelineDriver
from .hub import HookHub


class Handle:
    """What :func:`attach` returns.

    * ``handle.register(plugin)`` / ``handle.unregister(plugin)``;
    * ``handle(...)`` runs the registered generation strategy (``Numina``: the two
      phases, output with ``.numina``), or with none, one pipeline call with the step and
      lifecycle hooks (plain ``pipe(...)`` calls still get ``on_forward`` and
      ``on_attention``);
    * ``handle.detach()`` (or leaving a ``with`` block, or ``numina_hooks.detach(pipe)``)
      restores every processor object, forward and module attribute exactly.

    A handle dropped while attached is collected like any object; its hooks are then
    removed (with a ``ResourceWarning``), so a forgotten handle neither pins the model
    nor leaves hooks behind.
    """

    def __init__(self, target: Any, adapter, plugins=()):
        self.target = target
        self._hub = HookHub(adapter)
        self._driver: Optional[PipelineDriver] = adapter.driver()
        self._hub.install(self)
        self._finalizer = weakref.finalize(self, HookHub.release_forgotten, self._hub,
                                           f"{type(target).__name__} ({adapter.name})")
        self._finalizer.atexit = False
        try:
            for plugin in plugins:
                self.register(plugin)
        except BaseException:
            self.detach()
            raise

    # ------------------------------------------------------------------ plugins
    def register(self, plugin: Any, name: Optional[str] = None) -> Any:
        """Add a plugin (an object with ``@numina_hooks.hookimpl`` methods, or a
        :class:`~numina_hooks.driver.GenerationStrategy` such as ``Numina``); returns it."""
        self._check_attached()
        if isinstance(plugin, GenerationStrategy) and self._driver is None:
            raise TypeError(
                f"{plugin!r} runs whole generations, so it needs the pipeline: attach the pipeline, not its "
                f"{type(self.target).__name__}"
            )
        return self._hub.register(plugin, name)

    def unregister(self, plugin: Any) -> None:
        """Remove a registered plugin; ``ValueError`` if it is not registered."""
        self._hub.unregister(plugin)

    @property
    def plugins(self) -> list:
        """The registered plugins, the strategy first, then the others oldest first."""
        return self._hub.plugins

    @property
    def strategy(self) -> Optional[GenerationStrategy]:
        """The registered generation strategy (what ``handle(...)`` runs), or None."""
        return self._hub.strategy

    @property
    def config(self):
        """The strategy's configuration (``NuminaConfig`` with ``Numina``); None without one."""
        return getattr(self._hub.strategy, "config", None)

    @property
    def attached(self) -> bool:
        return self._hub.attached

    @property
    def hook(self):
        """pluggy's hook relay, for plugins and drivers that call hooks themselves."""
        return self._hub._pm.hook

    @property
    def adapter(self):
        """The adapter that maps the model's attention onto views (read-only use)."""
        return self._hub._adapter

    @property
    def driver(self) -> Optional[PipelineDriver]:
        """The :class:`~numina_hooks.driver.PipelineDriver` of the attached pipeline; None
        when a bare model is attached."""
        return self._driver

    @property
    def depth(self) -> int:
        """Attention layers (blocks) of the first hooked transformer."""
        adapter = self._hub._adapter
        transformers = adapter.transformers()
        return len({site.layer for site, _ in adapter.sites(*transformers[0])})

    @property
    def bypassed_calls(self) -> dict:
        """Transformer name -> forward calls that ran without numina-hooks' forward hook."""
        return self._hub.bypassed_calls

    # ------------------------------------------------------------------ undo
    def detach(self) -> None:
        """Undo everything, in reverse order; idempotent. The model is then exactly as before attach."""
        self._finalizer.detach()
        self._hub.detach()

    def _check_attached(self) -> None:
        if not self._hub.attached:
            raise RuntimeError("this numina-hooks handle is detached; call numina_hooks.attach(...) again")

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<numina_hooks.Handle {self._hub._adapter.name} {state}, {len(self.plugins)} plugin(s)>"

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
        hub = self._hub
        previous = hub._user_context
        hub._user_context = dict(branch=branch, step=step, num_steps=num_steps, timestep=timestep)
        try:
            yield
        finally:
            hub._user_context = previous

    # ------------------------------------------------------------------ pipeline calls
    def __call__(self, *args, **kwargs):
        """Run the attached pipeline; returns its own output type.

        With a generation strategy registered (``Numina``) this is
        ``strategy.generate(handle, *args, **kwargs)``: NUMINA's two phases, whose output
        carries ``out.numina`` (a :class:`~numina_hooks.numina.report.NuminaReport`, or a
        list of them, one per video). Otherwise one pipeline call with the step and
        lifecycle hooks (:meth:`run_pipeline`).
        """
        self._check_attached()
        strategy = self._hub.strategy
        if strategy is None:
            return self.run_pipeline(*args, **kwargs)
        self._require_driver("run a generation strategy")
        return strategy.generate(self, *args, **kwargs)

    def read_layout(self, **kwargs):
        """NUMINA's phase 1 only: the layout at the reference step, as a report (no video).

        Needs the ``Numina`` plugin (``attach(pipe, Numina(config))``); takes the same
        arguments as a NUMINA call. The caller's generator is left as it was, so
        ``handle(...)`` with it afterwards samples the same noise.
        """
        self._check_attached()
        strategy = self._hub.strategy
        if strategy is None or not callable(getattr(strategy, "read_layout", None)):
            raise TypeError(
                f"read_layout needs a strategy that reads layouts (numina_hooks.Numina); this handle runs "
                f"{strategy!r}. Attach with attach(pipe, numina_hooks.Numina(config))."
            )
        self._require_driver("read a layout")
        return strategy.read_layout(self, **kwargs)

    def run_pipeline(self, *args, generation_extras: Optional[dict] = None, **kwargs):
        """One pipeline call with the step and lifecycle hooks (no strategy).

        ``generation_extras`` seeds ``generation.extras`` for the lifecycle hooks
        (NUMINA passes ``numina_phase`` and ``must_compute_steps`` this way).
        """
        from .context import GenerationInfo

        self._check_attached()
        driver = self._require_driver("call the pipeline")
        hub = self._hub
        hub._ensure_hooked()
        generation = GenerationInfo(pipeline=driver.pipeline, kwargs=kwargs, extras=dict(generation_extras or {}))
        hub._pm.hook.on_generation_start(generation=generation)
        error = None
        try:
            return driver.run(self, args, kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            hub._pm.hook.on_generation_end(generation=generation, error=error)

    def _require_driver(self, what: str) -> PipelineDriver:
        if self._driver is None:
            raise TypeError(
                f"this handle hooks a bare {type(self.target).__name__}, so it cannot {what}; call the model "
                "yourself (use handle.context(branch=..., step=...) to name branch and step), or attach the pipeline"
            )
        return self._driver
