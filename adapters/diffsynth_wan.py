"""DiffSynth-Studio Wan (``WanVideoPipeline``, ``WanModel``; diffsynth 2.1.12).

Everything about the model is in :data:`~numina_hooks.adapters.descriptions.DIFFSYNTH_WAN`
and is installed by the generic adapter; this module only adds what a whole
generation needs from DiffSynth's pipeline, which has no callback API.

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

import torch

from numina_hooks.context import StepState

from .base import register_adapter
from .descriptions import DIFFSYNTH_WAN
from .generic import GenericAdapter, _loop_step


@register_adapter
class DiffSynthWanAdapter(GenericAdapter):
    description = DIFFSYNTH_WAN

    # -------------------------------------------------------------- pipeline calls
    def call_pipeline(self, handle, args: tuple, kwargs: dict):
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

    def sigma_at(self, step):
        sigmas = getattr(getattr(self.pipeline, "scheduler", None), "sigmas", None)
        if step is None or sigmas is None or step >= len(sigmas):
            return None
        return float(sigmas[step])

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
        wrapper = self.pipeline.tokenizer
        if getattr(wrapper, "clean", None) and hasattr(wrapper, "_clean"):
            return wrapper._clean(prompt)  # what HuggingfaceTokenizer does before tokenizing
        return prompt

    def text_length(self, kwargs: dict):
        return int(getattr(self.pipeline.tokenizer, "seq_len", None) or self.description.text_length)

    def fix_noise(self, kwargs: dict):
        """DiffSynth draws the noise from ``seed=`` (a fresh generator per call), so the
        same seed is the same noise; with no seed, one is chosen and returned."""
        kwargs = dict(kwargs)
        seed = None
        if kwargs.get("seed") is None:
            seed = int(torch.seed() % (2**31))
            kwargs["seed"] = seed
        return kwargs, (lambda: None), seed

    def after_abort(self) -> None:
        # what the pipeline does at the end of a call: offload every model (VRAM management)
        if hasattr(self.pipeline, "load_models_to_device"):
            self.pipeline.load_models_to_device([])


def _end_step(hook, previous: tuple, num_steps: int) -> bool:
    """Run ``on_step(phase="end")`` for a finished step; True when a plugin asked to stop."""
    state = StepState(phase="end", step=previous[0], num_steps=num_steps, timestep=previous[1], latents=None)
    hook.on_step(state=state)
    return state.stop_requested
