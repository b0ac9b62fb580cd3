"""Frozen facts about one call, handed to plugins.

Nothing here is inferred by counting calls: the step index and the branch come
from the pipeline (diffusers' ``cache_context`` names and step index, the
scheduler's timesteps, the pipeline's classifier-free-guidance flag).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

import torch

#: ``"cond"``, ``"uncond"``, a tuple naming each batch row of a batched CFG call
#: (``("uncond", "cond")``), or ``None`` when nothing says (a bare model called
#: outside any pipeline or context).
Branch = Union[str, Tuple[str, ...], None]


@dataclass(frozen=True)
class Geometry:
    """Where the tokens of one transformer call sit.

    ``frames``, ``height`` and ``width`` count latent patches (Wan2.1 at
    832x480, 81 frames: 21 x 30 x 52). ``text_tokens`` is the length of the
    text sequence the model attends to (512 for Wan, 226 for CogVideoX).
    """

    frames: int
    height: int
    width: int
    text_tokens: int

    @property
    def frame_tokens(self) -> int:
        """Video tokens per latent frame (``height * width``)."""
        return self.height * self.width

    @property
    def video_tokens(self) -> int:
        """All video tokens (``frames * height * width``)."""
        return self.frames * self.height * self.width


@dataclass(frozen=True)
class CallContext:
    """What is known about one transformer forward.

    :ivar transformer: attribute name of the transformer in its pipeline
        (``"transformer"``, ``"transformer_2"`` for Wan2.2 A14B's low-noise
        expert), or ``"transformer"`` for a bare model.
    :ivar step: 0-based denoising step index, ``None`` when unknown.
    :ivar num_steps: number of denoising steps of the generation, if known.
    :ivar timestep: the scheduler timestep of this call (float), if known.
    :ivar sigma: the flow-matching noise level of this step, if known.
    :ivar branch: see :data:`Branch`.
    :ivar geometry: token geometry of the call.
    """

    transformer: str
    step: Optional[int]
    num_steps: Optional[int]
    timestep: Optional[float]
    sigma: Optional[float]
    branch: Branch
    geometry: Optional[Geometry]

    @classmethod
    def _of(cls, transformer: str, step, num_steps, timestep, sigma, branch: Branch, geometry) -> "CallContext":
        """``cls(transformer, step, ...)``, made without the frozen dataclass's ``__init__``
        (one ``object.__setattr__`` per field; a context is made at every hooked forward).
        Fills every field; the object is the same in every respect."""
        ctx = object.__new__(cls)
        ctx.__dict__.update(transformer=transformer, step=step, num_steps=num_steps, timestep=timestep,
                            sigma=sigma, branch=branch, geometry=geometry)
        return ctx

    def branch_rows(self, batch: int) -> Tuple[str, ...]:
        """The branch name of each of ``batch`` rows (``"unknown"`` when nothing says)."""
        if self.branch is None:
            return ("unknown",) * batch
        if isinstance(self.branch, str):
            return (self.branch,) * batch
        return tuple(self.branch)


class ForwardCall:
    """One transformer forward, as seen by ``on_forward``.

    :ivar context: the :class:`CallContext`.
    :ivar module: the transformer module being called.
    :ivar args, kwargs: the forward's arguments, as the caller passed them.
    """

    __slots__ = ("context", "module", "args", "kwargs", "_skip_output", "skipped", "_run")

    def __init__(self, context: CallContext, module: torch.nn.Module, args: tuple, kwargs: dict, run):
        self.context = context
        self.module = module
        self.args = args
        self.kwargs = kwargs
        self._skip_output: Any = None
        self.skipped = False
        self._run = run

    @property
    def hidden_states(self) -> torch.Tensor:
        """The latent input of the forward (the model's own layout)."""
        return hidden_states_of(self.args, self.kwargs)

    def skip_with(self, output: Any) -> None:
        """Use ``output`` as the transformer's output and do not run the model."""
        if output is None:
            raise ValueError("skip_with(None): pass the output the model would have returned")
        self._skip_output = output
        self.skipped = True

    def run_model(self) -> Any:
        """Run the wrapped forward (used by numina-hooks' own terminal hook)."""
        if self.skipped:
            return self._skip_output
        return self._run(*self.args, **self.kwargs)


def hidden_states_of(args: tuple, kwargs: dict) -> Any:
    """The latent input of a transformer forward called with ``(args, kwargs)``:
    ``hidden_states=`` when passed by keyword, else the first positional argument."""
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    return args[0]


@dataclass
class StepState:
    """A denoising step of an attached pipeline, for ``on_step``.

    :ivar phase: always ``"end"``: the hook runs after the scheduler step (diffusers
        exposes no pre-step callback; a plugin that needs the start of a step sees the
        step's first ``on_forward``).
    :ivar step: 0-based step index.
    :ivar num_steps: number of steps of the generation.
    :ivar timestep: the scheduler timestep of this step.
    :ivar latents: latents after the step, read-only by contract; ``None`` where the
        framework does not hand them to its step callback (DiffSynth).
    """

    phase: str
    step: int
    num_steps: Optional[int]
    timestep: Optional[float]
    latents: Optional[torch.Tensor] = None
    stop_requested: bool = False
    stop_reason: Optional[str] = None

    def request_stop(self, reason: str = "") -> None:
        """Ask the pipeline to skip the remaining denoising steps."""
        self.stop_requested = True
        self.stop_reason = reason


@dataclass
class GenerationInfo:
    """One call of an attached pipeline, for the lifecycle hooks.

    :ivar pipeline: the pipeline object.
    :ivar kwargs: the keyword arguments of the call (after numina-hooks' own
        additions such as the step callback).
    :ivar extras: a free-form dict plugins may fill (reports, timings).
    """

    pipeline: Any
    kwargs: dict
    extras: dict = field(default_factory=dict)


#: The forward currently running (set by the adapter's forward hook).
current_call: contextvars.ContextVar[Optional[CallContext]] = contextvars.ContextVar(
    "numina_hooks_current_call", default=None
)
