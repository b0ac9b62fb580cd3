"""The adapter contract and the registry of adapters.

An adapter knows one model family: which objects it accepts, where their
transformers and attention layers are, which attention function their
processors call (and in what tensor layout), how to read the token geometry
of a forward, and how the pipeline names the branch and the step.
Everything else (wrapping processors, tapping kernels, the forward hook,
undoing it all) is shared and lives in :mod:`numina_hooks.hooking`.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from numina_hooks.context import Branch, CallContext, Geometry, StepState
from numina_hooks.driver import PipelineDriver
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
    def install_site(self, hub, site: Site, attn: torch.nn.Module):
        """Mark calls of one attention module as ``site`` (default: wrap its processor)."""
        return install_processor_wrapper(hub, site, attn, self.expected_kernel(site, attn))

    def install_forward(self, hub, name: str, model: torch.nn.Module):
        """Run ``on_forward`` around the transformer (default: a diffusers ``ModelHook``)."""
        return install_diffusers_forward_hook(hub, name, model)

    def install_pipeline(self, hub):
        """Anything the pipeline itself needs; returns an undo or None.

        diffusers: the pipeline's ``remove_all_hooks`` (run by ``enable_model_cpu_offload``,
        ``maybe_free_model_hooks`` and users) puts back the forward accelerate wrapped,
        dropping our hook when offload was enabled before attach; it is wrapped (as an
        instance attribute, deleted again by the undo) to relink our hook right after.
        """
        pipe = self.pipeline
        original = getattr(pipe, "remove_all_hooks", None) if pipe is not None else None
        if not callable(original) or "remove_all_hooks" in vars(pipe):
            return None

        def remove_all_hooks(*args, **kwargs):
            result = original(*args, **kwargs)
            if hub.attached:
                hub._ensure_hooked()
            return result

        pipe.__dict__["remove_all_hooks"] = remove_all_hooks

        def undo():
            if pipe.__dict__.get("remove_all_hooks") is remove_all_hooks:
                del pipe.__dict__["remove_all_hooks"]

        return undo

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

    def step_from_timestep(self, timestep: Optional[float], raw=None) -> tuple[Optional[int], Optional[int]]:
        """``(step, num_steps)`` by finding ``timestep`` in the pipeline scheduler's timesteps
        (the first match within 1e-3). With ``raw``, the tensor the pipeline passed, the
        timesteps are compared in its dtype (DiffSynth casts the timestep to bfloat16:
        937.5 arrives as 936)."""
        if self.pipeline is None or timestep is None:
            return None, None
        timesteps = getattr(getattr(self.pipeline, "scheduler", None), "timesteps", None)
        if timesteps is None or len(timesteps) == 0:
            return None, None
        dtype = raw.dtype if isinstance(raw, torch.Tensor) and raw.is_floating_point() else None
        ts = self._timesteps_on_cpu(timesteps, dtype)
        # numpy on the kept float32 copy: a few microseconds where torch's isclose/nonzero took
        # 25 us, paid at every forward of a pipeline that gives no step (no cache_context)
        hits = np.flatnonzero(np.abs(ts.numpy() - np.float32(timestep)) <= np.float32(1e-3))
        if hits.size == 0:
            return None, len(ts)
        return int(hits[0]), len(ts)

    def _timesteps_on_cpu(self, timesteps, dtype) -> torch.Tensor:
        """The scheduler's ``timesteps`` as float32 on the CPU (through ``dtype`` first, if
        given). Copying a device tensor to the CPU waits for the device: the copy is kept
        for the tensor it came from (held, with its in-place version, until the scheduler
        sets new timesteps), so a generation copies once rather than at every forward."""
        key = None
        if isinstance(timesteps, torch.Tensor):
            try:
                key = (timesteps._version, timesteps.data_ptr(), tuple(timesteps.shape), dtype)
            except RuntimeError:  # an inference-mode tensor has no version counter: copy every time
                key = None
        memo = self.__dict__.get("_timesteps_memo")
        if key is not None and memo is not None and memo[0] is timesteps and memo[1] == key:
            return memo[2]
        ts = torch.as_tensor(timesteps).detach().cpu()
        if dtype is not None:
            ts = ts.to(dtype)
        ts = ts.float()
        if key is not None:
            self._timesteps_memo = (timesteps, key, ts)
        return ts

    def make_views(
        self, site: Site, context: CallContext, q, k, v, layout: str, scale: float
    ) -> Iterable[AttentionView]:
        raise NotImplementedError

    # -------------------------------------------------------------- the pipeline's driver
    def driver(self) -> Optional[PipelineDriver]:
        """The :class:`~numina_hooks.driver.PipelineDriver` that runs the attached pipeline
        (diffusers' by default); None when a bare model is attached."""
        return None if self.pipeline is None else DiffusersDriver(self.pipeline)


class DiffusersDriver(PipelineDriver):
    """Runs a diffusers pipeline: ``on_step`` through ``callback_on_step_end``, noise
    repeated by saving the ``generator`` states, counts of steps and text tokens from the
    call's arguments or the pipeline's defaults."""

    def run(self, handle, args: tuple, kwargs: dict):
        return self.pipeline(*args, **_with_step_callback(handle, kwargs))

    def tokenizer(self):
        return self.pipeline.tokenizer

    def text_length(self, kwargs: dict) -> Optional[int]:
        return kwargs.get("max_sequence_length") or _signature_default(self.pipeline, "max_sequence_length", None)

    def num_steps(self, kwargs: dict) -> int:
        return steps_argument(self.pipeline, kwargs)

    def fix_noise(self, kwargs: dict):
        """diffusers: the ``generator`` states are saved (a seeded generator is added when
        neither ``generator`` nor ``latents`` is given, and its seed returned); ``latents``
        are reused as they are."""
        kwargs = dict(kwargs)
        seed = None
        if kwargs.get("latents") is None and kwargs.get("generator") is None:
            seed = int(torch.seed() % (2**63))
            kwargs = self.with_seed(kwargs, seed)
        gen = kwargs.get("generator")
        generators = [] if gen is None else list(gen) if isinstance(gen, (list, tuple)) else [gen]
        for g in generators:
            if not isinstance(g, torch.Generator):
                raise TypeError(
                    f"generator={gen!r}: expected a torch.Generator (or a list of them, one per video), "
                    "e.g. generator=torch.Generator(device).manual_seed(1), or None for a random seed"
                )
        states = [g.get_state() for g in generators]

        def rewind():
            for g, state in zip(generators, states):
                g.set_state(state)

        return kwargs, rewind, seed

    def with_seed(self, kwargs: dict, seed: int) -> dict:
        device = getattr(self.pipeline, "_execution_device", "cpu")
        return {**kwargs, "generator": torch.Generator(device=device).manual_seed(int(seed))}

    def after_abort(self) -> None:
        if hasattr(self.pipeline, "maybe_free_model_hooks"):
            self.pipeline.maybe_free_model_hooks()  # what the pipeline does at the end of a call


class SeedArgumentDriver(PipelineDriver):
    """A driver for loops that draw their noise from an integer ``seed=`` argument (a
    fresh generator per call: the same seed is the same noise). With no seed (or a
    negative one, where ``negative_is_random``), one is chosen and returned."""

    seed_bits: int = 63
    negative_is_random: bool = False

    def fix_noise(self, kwargs: dict):
        kwargs = dict(kwargs)
        seed = None
        given = kwargs.get("seed")
        if given is None or (self.negative_is_random and given < 0):
            seed = int(torch.seed() % (2**self.seed_bits))
            kwargs = self.with_seed(kwargs, seed)
        return kwargs, (lambda: None), seed

    def with_seed(self, kwargs: dict, seed: int) -> dict:
        return {**kwargs, "seed": int(seed)}


def steps_argument(pipeline: Any, kwargs: dict, name: str = "num_inference_steps", default: int = 50) -> int:
    """Denoising steps of a call: ``kwargs[name]``, else the default of that argument in
    the pipeline's ``__call__`` signature, else ``default``; ValueError unless an int >= 1."""
    steps = kwargs.get(name)
    if steps is None:
        return int(_signature_default(pipeline, name, default))
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{name}={steps!r}: expected an int >= 1 (the number of denoising steps), "
                         f"or leave it out for the pipeline's default")
    return int(steps)


def cleaned_prompt(tokenizer_wrapper: Any, prompt: str) -> str:
    """The prompt after the cleaning Wan's ``HuggingfaceTokenizer`` wrapper applies before
    tokenizing (its ``clean`` setting and ``_clean`` method), else unchanged."""
    if getattr(tokenizer_wrapper, "clean", None) and hasattr(tokenizer_wrapper, "_clean"):
        return tokenizer_wrapper._clean(prompt)
    return prompt


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
    # description-based adapters (GenericAdapter) carry their name in ``description``
    named = [getattr(cls, "description", None) or cls for cls in registered_adapters()]
    supported = "; ".join(f"{d.name}: {d.accepts}" for d in named if d.accepts)
    raise TypeError(
        f"numina_hooks.attach cannot hook a {type(target).__module__}.{type(target).__qualname__}. "
        f"Supported: {supported}. Pass one of these pipelines or its transformer model."
    )


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import diffsynth_wan, diffusers_cogvideox, diffusers_wan, official_wan  # noqa: F401  (they register themselves)


def unwrap_compiled(obj: Any) -> Any:
    """The module ``torch.compile(module)`` wrapped (``OptimizedModule._orig_mod``), else ``obj``.

    Hooks go on the wrapped module: the compiled wrapper calls it, so they run (traced or
    not) in every call of the compiled module, and detach restores the wrapped module.
    """
    if not isinstance(obj, torch.nn.Module) or type(obj).__name__ != "OptimizedModule":
        return obj
    inner = obj.__dict__.get("_modules", {}).get("_orig_mod")
    return inner if isinstance(inner, torch.nn.Module) else obj


def _class_named(obj: Any, names: Sequence[str]) -> bool:
    """True when ``obj``'s class or a base has one of ``names`` (no import needed); a
    ``torch.compile`` d module is judged by the module it wraps."""
    return any(c.__name__ in names for c in type(unwrap_compiled(obj)).__mro__)


def _signature_default(pipe, name: str, fallback):
    param = inspect.signature(type(pipe).__call__).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return fallback
    return param.default


def _with_step_callback(handle, kwargs: dict) -> dict:
    """``kwargs`` with diffusers' ``callback_on_step_end`` running ``on_step`` (and the caller's own)."""
    if not handle.hook.on_step.get_hookimpls():
        return kwargs
    kwargs = dict(kwargs)
    user_cb = kwargs.get("callback_on_step_end")
    inputs = list(kwargs.get("callback_on_step_end_tensor_inputs") or ["latents"])
    tensor_inputs = getattr(user_cb, "tensor_inputs", None)
    if tensor_inputs:
        inputs = list(dict.fromkeys(list(tensor_inputs) + inputs))
    if "latents" not in inputs:
        inputs.append("latents")
    num_steps = kwargs.get("num_inference_steps")
    hook = handle.hook

    def on_step_end(p, i, t, cb_kwargs):
        # the steps the pipeline runs (its default when the call gives none), as the pipeline counts them
        steps = getattr(p, "_num_timesteps", None)
        state = StepState(
            phase="end", step=int(i), num_steps=steps if isinstance(steps, int) else num_steps, timestep=float(t),
            latents=cb_kwargs.get("latents")
        )
        hook.on_step(state=state)
        if state.stop_requested:
            p._interrupt = True
        if user_cb is not None:
            return user_cb(p, i, t, cb_kwargs)
        return {}

    kwargs["callback_on_step_end"] = on_step_end
    kwargs["callback_on_step_end_tensor_inputs"] = inputs
    return kwargs
