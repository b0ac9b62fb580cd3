"""The official Wan2.1 / Wan2.2 repositories (``wan.WanT2V``, ``wan.modules.model.WanModel``).

The model is described by :data:`~numina_hooks.adapters.descriptions.OFFICIAL_WAN`
and hooked by the generic adapter. The official repository was NOT run here
(``import wan`` needs a CUDA device); CI exercises this description on a stand-in
module tree with the same module names, call signatures and attention-function
layout (tests/official_wan_standin.py).

Token layout
------------
* ``blocks.N.self_attn`` (``WanSelfAttention``): video tokens ``F x H x W`` ordered
  frame, row, column, zero-padded to ``seq_len`` (only with sequence parallelism).
* ``blocks.N.cross_attn`` (``WanT2VCrossAttention``): keys are the text context,
  zero-padded to ``text_len = 512`` inside ``WanModel.forward``, not masked in T2V.
* The kernel is ``wan.modules.model.flash_attention(q, k, v, q_lens, k_lens, ...)``
  with ``[B, L, heads, head_dim]`` tensors after ``norm_q``/``norm_k`` and RoPE.
* Branch and step: ``WanT2V.generate`` calls the model for cond then uncond and says
  nothing else; a ``WanT2V`` attached here is driven by our own copy of its loop
  (:func:`numina_hooks.official_wan.sample_t2v`), which names branch and step for
  every call. A bare ``WanModel`` is named by the caller with ``handle.context``.
"""

from __future__ import annotations

import torch

from .base import register_adapter
from .descriptions import OFFICIAL_WAN
from .generic import GenericAdapter


@register_adapter
class OfficialWanAdapter(GenericAdapter):
    description = OFFICIAL_WAN

    def call_pipeline(self, handle, args: tuple, kwargs: dict):
        from numina_hooks.official_wan import sample_t2v

        if args:
            raise TypeError("call a WanT2V handle with keywords: handle(prompt=..., size=..., seed=...)")
        return sample_t2v(handle, self.pipeline, **kwargs)

    def tokenizer(self):
        return self.pipeline.text_encoder.tokenizer.tokenizer

    def prompt_for_tokenizer(self, prompt: str) -> str:
        wrapper = self.pipeline.text_encoder.tokenizer
        if getattr(wrapper, "clean", None) and hasattr(wrapper, "_clean"):
            return wrapper._clean(prompt)
        return prompt

    def text_length(self, kwargs: dict):
        return int(getattr(self.pipeline, "text_len", None) or self.description.text_length)

    def num_steps(self, kwargs: dict) -> int:
        return int(kwargs.get("sampling_steps") or 50)

    def fix_noise(self, kwargs: dict):
        """The loop draws its noise from a generator seeded with ``seed=`` (``-1``: random)."""
        kwargs = dict(kwargs)
        seed = None
        if kwargs.get("seed") is None or kwargs["seed"] < 0:
            seed = int(torch.seed() % (2**63))
            kwargs["seed"] = seed
        return kwargs, (lambda: None), seed

    def after_abort(self) -> None:
        return None
