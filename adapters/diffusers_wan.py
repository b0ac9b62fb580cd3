"""diffusers Wan2.1 / Wan2.2 (``WanPipeline``, ``WanTransformer3DModel``).

Token layout
------------
* ``blocks.N.attn1`` (self-attention): queries and keys are the video tokens,
  ``F x H x W`` patches ordered frame, row, column (``F = frames // p_t``,
  ``H = height // p_h``, ``W = width // p_w`` in latent units).
* ``blocks.N.attn2`` (cross-attention): queries are the video tokens, keys
  the text tokens (UMT5, zero-padded to 512, not masked). With an image
  context (I2V), the processor first attends to the image tokens; that first
  kernel call is passed through and the text call is the one viewed.
* The kernel is diffusers' ``dispatch_attention_fn`` with q/k/v in
  ``[batch, tokens, heads, head_dim]`` after ``norm_q``/``norm_k`` and RoPE.
* Branch and step: the pipeline wraps each transformer call in
  ``cache_context("cond"|"uncond", step_index=i, sigma=...)``.
* Wan2.2 A14B: ``transformer`` (high noise) and ``transformer_2`` (low noise)
  are both hooked; ``view.transformer`` tells which, layer indices are per
  transformer and steps are the pipeline's.
"""

from __future__ import annotations

from typing import Any

import torch

from numina_hooks.context import Geometry, hidden_states_of
from numina_hooks.hooking import KernelTap
from numina_hooks.views import EVERY_TOKEN, AttentionView, Site

from .base import Adapter, DiffusersDriver, _class_named, register_adapter, unwrap_compiled

_MODEL = ("WanTransformer3DModel",)


@register_adapter
class WanAdapter(Adapter):
    name = "diffusers-wan"
    accepts = "diffusers WanPipeline (Wan2.1 T2V, Wan2.2 TI2V-5B and A14B) or a WanTransformer3DModel"
    layout = "BLHD"

    @classmethod
    def matches(cls, target: Any) -> bool:
        if _class_named(target, _MODEL):
            return True
        if isinstance(target, torch.nn.Module):
            return False
        return any(_class_named(getattr(target, n, None), _MODEL) for n in ("transformer", "transformer_2"))

    def transformers(self):
        if isinstance(self.target, torch.nn.Module):
            return [("transformer", unwrap_compiled(self.target))]
        found = []
        for name in ("transformer", "transformer_2"):
            model = getattr(self.target, name, None)
            if model is not None:
                found.append((name, unwrap_compiled(model)))
        return found

    def sites(self, transformer_name, transformer):
        out = []
        for i, block in enumerate(transformer.blocks):
            out.append((Site(i, "self", f"blocks.{i}.attn1", transformer_name), block.attn1))
            out.append((Site(i, "cross", f"blocks.{i}.attn2", transformer_name), block.attn2))
        return out

    def kernel_taps(self):
        from diffusers.models.transformers import transformer_wan

        return [KernelTap(transformer_wan, "dispatch_attention_fn", "BLHD")]

    def expected_kernel(self, site, attn):
        return 1 if site.kind == "cross" and getattr(attn, "add_k_proj", None) is not None else 0

    def geometry(self, module, args, kwargs) -> Geometry:
        hidden = hidden_states_of(args, kwargs)
        text = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        # the same shapes give the same (frozen) Geometry: kept, as the config reads are slow-ish
        key = (id(module), hidden.shape, None if text is None else text.shape[1])
        cache = self.__dict__.setdefault("_geometries", {})
        geo = cache.get(key)
        if geo is not None:
            return geo
        p_t, p_h, p_w = module.config.patch_size
        _, _, f, h, w = hidden.shape
        n_text = 0 if text is None else int(text.shape[1])
        if getattr(module.config, "image_dim", None) is not None and n_text > 512:
            n_text = 512  # image context comes first, then the 512 text tokens
        geo = Geometry(frames=f // p_t, height=h // p_h, width=w // p_w, text_tokens=n_text)
        if len(cache) < 64:
            cache[key] = geo
        return geo

    def driver(self):
        return None if self.pipeline is None else WanDriver(self.pipeline)

    def make_views(self, site: Site, context, q, k, v, layout, scale):
        # every query is a video token; the keys are all video (self) or all text (cross)
        if site.kind == "self":
            return (AttentionView._of(site, "self", context, q, k, v, layout, scale, EVERY_TOKEN, None, EVERY_TOKEN),)
        return (AttentionView._of(site, site.kind, context, q, k, v, layout, scale, EVERY_TOKEN, EVERY_TOKEN, None),)


class WanDriver(DiffusersDriver):
    """diffusers' driver, with the prompt cleaned as ``WanPipeline`` cleans it before
    tokenizing."""

    def prompt_for_tokenizer(self, prompt: str) -> str:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean  # what the pipeline does first

        return prompt_clean(prompt)
