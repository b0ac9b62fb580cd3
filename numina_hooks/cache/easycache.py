"""EasyCache: runtime-adaptive reuse of the transformer's output, as an ``on_forward`` plugin.

The idea (EasyCache, arXiv 2507.02860): late in denoising the transformer's
*transformation* ``delta = output - input`` changes slowly, so a step can reuse the
last computed ``delta`` (``output ~ input + delta``) while an estimate of the error
this makes stays small. Per transformer and branch:

* on a computed step ``i`` keep ``delta_i = v_i - x_i`` and the transformation rate
  ``k = mean|v_i - v_j| / mean|x_i - x_j|`` (``j`` the previous computed step);
* on a later step ``n`` add ``eps_n = k * mean|x_n - x_{n-1}| / mean|v_i|`` to an
  accumulated error ``E`` (``x_{n-1}`` the input of the previous step, computed or not,
  ``v_i`` the last computed output); while ``E < error_threshold`` (tau in the paper)
  return ``x_n + delta_i``
  without running the model; otherwise compute and reset ``E`` to 0.

The first ``warmup`` steps and the last step always compute; so does any step
listed in ``generation.extras["must_compute_steps"]`` (NUMINA's reference step).
With classifier-free guidance the decision is taken on the conditional branch and
the unconditional call of the same step follows it (for a batched CFG call, as in
CogVideoX, on the conditional rows of the batch). ``error_threshold=0`` never skips: the output
is bit-identical to the plain pipeline.

Shapes: ``x`` is the forward's ``hidden_states`` (Wan ``[B, C, F, H, W]``,
CogVideoX ``[B, F, C, H, W]``); the output sample has the same shape, or fewer
channels when the input carries conditioning channels (image-to-video), in which
case ``delta`` is taken against the leading channels of the input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..deprecation import renamed_attribute, warn_renamed
from ..hookspecs import hookimpl


@dataclass
class _BranchState:
    """What one (transformer, branch) keeps between steps. Tensors are ``[B, ...]`` like the sample."""

    last_step: Optional[int] = None
    prev_input: Optional[torch.Tensor] = None  # input of the previous step (computed or not)
    computed_input: Optional[torch.Tensor] = None  # input of the last computed step
    computed_output: Optional[torch.Tensor] = None  # output sample of the last computed step
    delta: Optional[torch.Tensor] = None  # computed_output - computed_input
    output_template: Any = None  # the model's last output object, to rebuild its type
    k: Optional[float] = None  # transformation rate at the last computed step
    error: float = 0.0  # accumulated estimate since the last computed step


@dataclass
class CacheStats:
    """Per generation: model calls computed and skipped, and the denoising steps skipped."""

    computed_calls: int = 0
    skipped_calls: int = 0
    skipped_steps: set = field(default_factory=set)  # {(transformer, step)}

    def as_dict(self) -> dict:
        return {
            "computed_calls": self.computed_calls,
            "skipped_calls": self.skipped_calls,
            "skipped_steps": len(self.skipped_steps),
        }


def _sample_of(output: Any) -> torch.Tensor:
    """The sample tensor of a transformer output (tuple, ``ModelOutput`` or tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise TypeError(
        f"EasyCache cannot read the sample of a {type(output).__name__} transformer output: expected a tensor, "
        "a tuple whose first item is the sample, or an object with .sample"
    )


def _with_sample(template: Any, sample: torch.Tensor, listed: bool = False) -> Any:
    """``template``'s type with ``sample`` in place of its sample (``listed``: a list of the
    batch's videos, as the official Wan model returns)."""
    if listed:
        return type(template)(sample.unbind(0))
    if isinstance(template, torch.Tensor):
        return sample
    if isinstance(template, tuple):
        return (sample,) + tuple(template[1:])
    if isinstance(template, list):
        return [sample] + list(template[1:])
    return type(template)(sample=sample)


def _leading(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` made to ``like``'s shape: repeated along the batch when the model batches CFG inside
    (DiffSynth's ``cfg_merge`` repeats the latents), and cut along the one dimension where they
    still differ (conditioning channels of image-to-video models)."""
    if x.shape == like.shape:
        return x
    if x.dim() == like.dim() and x.shape[0] != like.shape[0] and like.shape[0] % x.shape[0] == 0:
        x = x.repeat(like.shape[0] // x.shape[0], *([1] * (x.dim() - 1)))
        if x.shape == like.shape:
            return x
    differing = [d for d in range(x.dim()) if x.shape[d] != like.shape[d]] if x.dim() == like.dim() else None
    if not differing or len(differing) != 1 or x.shape[differing[0]] < like.shape[differing[0]]:
        raise ValueError(
            f"EasyCache: the transformer's input {tuple(x.shape)} and output {tuple(like.shape)} differ in more "
            "than extra input channels, so output - input has no meaning; this model cannot be cached"
        )
    return x.narrow(differing[0], 0, like.shape[differing[0]])


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.float().abs().mean())


def _branch_key(branch) -> Any:
    return branch if isinstance(branch, (str, tuple)) else "unknown"


def _decides(branch) -> bool:
    """A call that takes the skip decision for its step (anything but a lone uncond call)."""
    return branch != "uncond"


def _cond_rows(branch, batch: int) -> Optional[list]:
    """Rows of a batched CFG call that belong to the conditional branch (None: all rows)."""
    if isinstance(branch, tuple) and "cond" in branch and len(branch) == batch:
        return [i for i, b in enumerate(branch) if b == "cond"]
    return None


class EasyCache:
    """Skip transformer forwards whose output can be predicted from the last computed one.

    ::

        cache = numina_hooks.EasyCache(error_threshold=0.05, warmup=10)
        handle = numina_hooks.attach(pipe, cache)
        video = pipe(prompt=..., num_inference_steps=50).frames   # fewer transformer calls
        cache.stats.as_dict()   # {'computed_calls': ..., 'skipped_calls': ..., 'skipped_steps': ...}

    :param error_threshold: threshold on the accumulated error estimate (the paper's tau);
        0 never skips (bit-identical output), larger skips more. ``tau=`` is its deprecated
        name (a ``DeprecationWarning``, same value). Published settings: Wan2.1 0.05 (0.1 about 2x, 0.2 about 3x);
        HunyuanVideo 0.025.
    :param warmup: the first ``warmup`` denoising steps always compute (Wan2.1: 10 of 50;
        HunyuanVideo: 5). The last step always computes too.
    :param phases: with NUMINA, the passes the cache works in: ``("phase1", "phase2")``
        (default: both), ``("phase1",)`` or ``("phase2",)``. Plain generations (no NUMINA)
        are always cached.

    ``stats`` holds the counters of the last generation (:class:`CacheStats`). State is
    kept per transformer module and branch (so Wan2.2 A14B's two experts, and two
    pipelines sharing one plugin, never mix) and reset at the start of every generation.
    """

    PHASES = ("phase1", "phase2")

    def __init__(self, error_threshold: float = 0.05, warmup: int = 10, phases: tuple = PHASES, *,
                 tau: Optional[float] = None):
        name = "error_threshold"
        if tau is not None:
            warn_renamed("EasyCache", "tau", "error_threshold")
            error_threshold, name = tau, "tau"
        t = error_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t >= 0) or t == float("inf"):
            raise ValueError(f"EasyCache({name}={t!r}): expected a finite number >= 0 "
                             "(0 disables skipping; Wan2.1 uses 0.05)")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"EasyCache(warmup={warmup!r}): expected an int >= 0 (steps that always compute; Wan2.1 uses 10)")
        if isinstance(phases, str) or not set(phases) <= set(self.PHASES) or not phases:
            raise ValueError(f"EasyCache(phases={phases!r}): expected a non-empty tuple from {self.PHASES}")
        self.error_threshold = float(error_threshold)
        self.warmup = warmup
        self.phases = tuple(phases)
        self.stats = CacheStats()
        self._states: dict = {}  # (id(module), branch key) -> _BranchState
        self._decisions: dict = {}  # (id(module), step) -> True (skip) / False (compute)
        self._must_compute: frozenset = frozenset()
        self._enabled = True
        self._warned_no_step = False

    tau = renamed_attribute("EasyCache", "tau", "error_threshold")

    def __repr__(self) -> str:
        return f"EasyCache(error_threshold={self.error_threshold}, warmup={self.warmup})"

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget every cached transformation (called at the start of each generation)."""
        self._states.clear()
        self._decisions.clear()
        self.stats = CacheStats()

    @hookimpl
    def on_generation_start(self, generation):
        _refuse_diffusers_cache(generation.pipeline)
        self.reset()
        phase = generation.extras.get("numina_phase")
        self._enabled = phase is None or phase in self.phases
        self._must_compute = frozenset(generation.extras.get("must_compute_steps", ()))

    @hookimpl
    def on_generation_end(self, generation, error):
        generation.extras.setdefault("cache", {})["easycache"] = self.stats.as_dict()
        # drop the tensors: the next generation starts from scratch anyway
        self._states.clear()
        self._decisions.clear()
        self._must_compute = frozenset()
        self._enabled = True

    # ------------------------------------------------------------------ forward
    @hookimpl(wrapper=True)
    def on_forward(self, call):
        ctx = call.context
        step, num_steps = ctx.step, ctx.num_steps
        if self.error_threshold == 0.0:
            return (yield)  # never skips: stay out of the way entirely (bit-identical, no bookkeeping)
        if not self._enabled or step is None:
            if step is None and not self._warned_no_step:
                self._warned_no_step = True
                warnings.warn(
                    "EasyCache: this forward has no step index (a bare model called outside a pipeline and "
                    "outside handle.context(step=..., num_steps=...)), so it always computes",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return (yield)

        x = call.hidden_states
        listed = isinstance(x, (list, tuple))  # the official Wan model takes and returns a list of [C, F, H, W]
        if listed:
            if not x or len({tuple(u.shape) for u in x}) != 1:
                return (yield)  # videos of different sizes in one call: nothing to stack, always compute
            x = torch.stack(list(x))
        key = (id(call.module), _branch_key(ctx.branch))
        state = self._states.get(key)
        if state is None or (state.last_step is not None and step <= state.last_step):
            # first call, or the steps start over: a new generation (also when the pipeline is called directly)
            state = self._states[key] = _BranchState()
            if _decides(ctx.branch):
                self._decisions = {k: v for k, v in self._decisions.items() if k[0] != id(call.module)}

        skip = self._decide(call.module, ctx, state, x, step, num_steps)
        if skip:
            sample = _leading(x, state.delta) + state.delta
            call.skip_with(_with_sample(state.output_template, sample, listed))
        output = yield
        if skip:
            self.stats.skipped_calls += 1
            self.stats.skipped_steps.add((ctx.transformer, step))
        else:
            self.stats.computed_calls += 1
            self._remember(state, x, output, step, listed)
        state.prev_input = x
        state.last_step = step
        return output

    def _decide(self, module, ctx, state: _BranchState, x: torch.Tensor, step: int, num_steps) -> bool:
        """True to reuse ``x + delta`` for this call."""
        decision_key = (id(module), step)
        if not _decides(ctx.branch):
            # the unconditional call follows the decision of the conditional one of this step
            return bool(self._decisions.get(decision_key, False)) and state.delta is not None \
                and state.prev_input is not None and state.prev_input.shape == x.shape
        must = (
            self.error_threshold == 0.0
            or step < self.warmup
            or (num_steps is not None and step >= num_steps - 1)
            or step in self._must_compute
            or state.k is None
            or state.delta is None
            or state.prev_input is None
            or state.prev_input.shape != x.shape
        )
        skip = False
        if not must:
            def pick(t: torch.Tensor) -> torch.Tensor:
                rows = _cond_rows(ctx.branch, t.shape[0])
                return t[rows] if rows is not None else t

            input_change = _mean_abs(pick(x) - pick(state.prev_input))
            scale = _mean_abs(pick(state.computed_output))
            eps = state.k * input_change / max(scale, 1e-12)
            state.error += eps
            skip = state.error < self.error_threshold
        self._decisions[decision_key] = skip
        return skip

    def _remember(self, state: _BranchState, x: torch.Tensor, output: Any, step: int, listed: bool = False) -> None:
        sample = (torch.stack(list(output)) if listed else _sample_of(output)).detach()
        x_in = _leading(x, sample).detach()
        state.k = None
        # the rate is needed only once skipping may start: save the reductions during warm-up
        if step + 1 >= self.warmup and state.computed_input is not None and state.computed_input.shape == x_in.shape:
            input_change = _mean_abs(x_in - state.computed_input)
            if input_change > 0:
                state.k = _mean_abs(sample - state.computed_output) / input_change
        state.computed_input = x_in
        state.computed_output = sample
        state.delta = sample - x_in
        state.output_template = output
        state.error = 0.0


def _refuse_diffusers_cache(pipeline) -> None:
    """Raise when one of the pipeline's transformers has a diffusers cache hook enabled."""
    if pipeline is None:
        return
    for name in ("transformer", "transformer_2"):
        model = getattr(pipeline, name, None)
        if model is not None and getattr(model, "is_cache_enabled", False):
            raise RuntimeError(
                f"EasyCache: pipe.{name} has a diffusers cache enabled (FirstBlockCache, MagCache, TaylorSeer, ...). "
                "Two caches would each skip work the other relies on. Call "
                f"pipe.{name}.disable_cache() to use EasyCache, or unregister EasyCache to keep the diffusers cache."
            )
