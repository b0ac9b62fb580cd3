"""DiffSynth-Studio Wan (``WanVideoPipeline``, ``WanModel``; diffsynth 2.1.12).

Everything about the model is in :data:`~numina_hooks.adapters.descriptions.DIFFSYNTH_WAN`
and is installed by the generic adapter; this module only adds the driver of a whole
generation (:class:`DiffSynthDriver`), since DiffSynth's pipeline has no callback API.

Token layout
------------
* ``blocks.N.self_attn.attn`` (self-attention): video tokens ``F x H x W``
  (latent frames, rows, columns of patches), ordered frame, row, column.
* ``blocks.N.cross_attn.attn`` (cross-attention): queries are the video tokens,
  keys the 512 text tokens (UMT5, zero-padded, not masked). An I2V model's
  257 image tokens are attended by a second ``flash_attention`` call outside
  ``.attn`` and are not viewed.
* The kernel is the module-level ``flash_attention(q, k, v, num_heads)`` with
  ``[B, S, heads * head_dim]`` tensors after ``norm_q``/``norm_k`` and RoPE;
  views unflatten them to ``[B, S, heads, head_dim]`` without a copy.
* Branch: ``model_fn(positive=True)`` is cond, ``positive=False`` uncond;
  with ``cfg_merge=True`` one call holds ``(cond, uncond)`` rows.
* Step: within a call made through the handle, the index of the pipeline's own
  timestep loop (we wrap its ``progress_bar_cmd``); in a plain ``pipe(...)``
  call, the timestep found in ``pipe.scheduler.timesteps`` (compared in the
  timestep's dtype, since the pipeline casts it to its ``torch_dtype``).
* Wan2.2 A14B: ``dit`` (high noise) then ``dit2`` (low noise) below
  ``switch_DiT_boundary``; ``view.transformer`` says which.
"""

from __future__ import annotations

from numina_hooks.context import StepState

from .base import SeedArgumentDriver, cleaned_prompt, register_adapter, steps_argument
from .descriptions import DIFFSYNTH_WAN
from .generic import GenericAdapter, _loop_step


@register_adapter
class DiffSynthWanAdapter(GenericAdapter):
    description = DIFFSYNTH_WAN

    def driver(self):
        return None if self.pipeline is None else DiffSynthDriver(self.pipeline, self.description.text_length)

    def sigma_at(self, step):
        sigmas = getattr(getattr(self.pipeline, "scheduler", None), "sigmas", None)
        if step is None or sigmas is None or step >= len(sigmas):
            return None
        return float(sigmas[step])


class DiffSynthDriver(SeedArgumentDriver):
    """Runs a ``WanVideoPipeline``: ``on_step`` from its ``progress_bar_cmd`` loop (it has
    no callback API), noise from ``seed=`` (a fresh generator per call)."""

    seed_bits = 31

    def __init__(self, pipeline, default_text_length: int):
        super().__init__(pipeline)
        self.default_text_length = default_text_length

    def run(self, handle, args: tuple, kwargs: dict):
        kwargs = dict(kwargs)
        user_bar = kwargs.get("progress_bar_cmd")
        hook = handle.hook
        stepped = bool(hook.on_step.get_hookimpls())

        current = [None]  # (step index, num_steps) of the pipeline's own loop

        def progress(timesteps):
            inner = user_bar(timesteps) if user_bar is not None else timesteps
            n = len(timesteps)
            previous = None
            for i, t in enumerate(inner):
                if previous is not None and stepped and _end_step(hook, previous, n):
                    return  # a plugin asked to stop: the pipeline decodes what it has
                current[0] = (i, n)
                yield t
                previous = (i, float(t))
            current[0] = None
            if previous is not None and stepped:
                _end_step(hook, previous, n)

        kwargs["progress_bar_cmd"] = progress
        token = _loop_step.set(current)
        try:
            return self.pipeline(*args, **kwargs)
        finally:
            _loop_step.reset(token)

    def tokenizer(self):
        wrapper = getattr(self.pipeline, "tokenizer", None)
        tok = getattr(wrapper, "tokenizer", None)
        if tok is None:
            raise TypeError(
                "the WanVideoPipeline has no tokenizer (pipe.tokenizer.tokenizer): NUMINA maps nouns to "
                "text tokens with it; load the pipeline with its tokenizer_config"
            )
        return tok

    def prompt_for_tokenizer(self, prompt: str) -> str:
        return cleaned_prompt(self.pipeline.tokenizer, prompt)

    def text_length(self, kwargs: dict):
        return int(getattr(self.pipeline.tokenizer, "seq_len", None) or self.default_text_length)

    def num_steps(self, kwargs: dict) -> int:
        return steps_argument(self.pipeline, kwargs)

    def after_abort(self) -> None:
        # what the pipeline does at the end of a call: offload every model (VRAM management)
        if hasattr(self.pipeline, "load_models_to_device"):
            self.pipeline.load_models_to_device([])


def _end_step(hook, previous: tuple, num_steps: int) -> bool:
    """Run ``on_step(phase="end")`` for a finished step; True when a plugin asked to stop."""
    state = StepState(phase="end", step=previous[0], num_steps=num_steps, timestep=previous[1], latents=None)
    hook.on_step(state=state)
    return state.stop_requested
