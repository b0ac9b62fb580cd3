"""diffusers CogVideoX 2B / 5B / 1.5 (``CogVideoXPipeline``, ``CogVideoXTransformer3DModel``).

Token layout
------------
* ``transformer_blocks.N.attn1`` is one joint attention over the concatenated
  sequence ``[text (226) | video (F x H x W)]``; the processor calls torch's
  ``F.scaled_dot_product_attention`` with ``[batch, heads, tokens, head_dim]``,
  RoPE applied to the video part only.
* Views: the call is offered twice, as ``kind="self"`` (the video->video
  block: queries and keys ``text:``) and as ``kind="cross"`` (the video->text
  block: queries ``text:``, keys ``:text``), both with the full joint q/k/v,
  and cross-attention maps use the joint softmax over all keys.
* Branch: the pipeline runs classifier-free guidance as one batch
  ``[uncond, cond]`` inside ``cache_context("cond_uncond")``; the view's
  branch is then the tuple naming each row. Step: the index of the call's
  timestep in the pipeline scheduler's timesteps.
* Frames: ``F = frames`` (CogVideoX 1.0) or ``ceil(frames / patch_size_t)``
  (1.5), ``H = height // patch_size``, ``W = width // patch_size``.
"""

from __future__ import annotations

from typing import Any

import torch

from numina_hooks.context import Geometry, hidden_states_of
from numina_hooks.hooking import KernelTap
from numina_hooks.views import AttentionView, Site

from .base import Adapter, _class_named, register_adapter, unwrap_compiled

_MODEL = ("CogVideoXTransformer3DModel",)


@register_adapter
class CogVideoXAdapter(Adapter):
    name = "diffusers-cogvideox"
    accepts = "diffusers CogVideoXPipeline (2B, 5B, 1.5) or a CogVideoXTransformer3DModel"
    layout = "BHLD"

    @classmethod
    def matches(cls, target: Any) -> bool:
        if _class_named(target, _MODEL):
            return True
        if isinstance(target, torch.nn.Module):
            return False
        return _class_named(getattr(target, "transformer", None), _MODEL)

    def transformers(self):
        if isinstance(self.target, torch.nn.Module):
            return [("transformer", unwrap_compiled(self.target))]
        return [("transformer", unwrap_compiled(self.target.transformer))]

    def sites(self, transformer_name, transformer):
        return [
            (Site(i, "joint", f"transformer_blocks.{i}.attn1", transformer_name), block.attn1)
            for i, block in enumerate(transformer.transformer_blocks)
        ]

    def kernel_taps(self):
        from diffusers.models import attention_processor

        return [KernelTap(attention_processor, "F", "BHLD", functional_proxy=True)]

    def geometry(self, module, args, kwargs) -> Geometry:
        hidden = hidden_states_of(args, kwargs)
        text = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        _, f, _, h, w = hidden.shape
        p = module.config.patch_size
        p_t = module.config.patch_size_t
        frames = f if p_t is None else (f + p_t - 1) // p_t
        return Geometry(frames=frames, height=h // p, width=w // p, text_tokens=int(text.shape[1]))

    def branch(self, cache_name, batch):
        if cache_name == "cond_uncond" and self.pipeline is not None:
            # the pipeline decides CFG by ``guidance_scale > 1`` and stores the scale as ``_guidance_scale``
            if float(getattr(self.pipeline, "_guidance_scale", 1.0) or 1.0) > 1.0 and batch % 2 == 0:
                half = batch // 2
                return ("uncond",) * half + ("cond",) * half
            return "cond"
        return super().branch(cache_name, batch)

    def make_views(self, site: Site, context, q, k, v, layout, scale):
        if context.geometry is None:
            # called outside the hooked transformer forward (a forward that bypassed our hook,
            # which the handle reports): the text length, hence the token split, is unknown
            return ()
        n_text = context.geometry.text_tokens
        n = q.shape[2]
        video, text = slice(n_text, n), slice(0, n_text)
        return (
            AttentionView._of(site, "self", context, q, k, v, layout, scale, video, text, video),
            AttentionView._of(site, "cross", context, q, k, v, layout, scale, video, text, video),
        )
