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
  (:func:`sample_t2v`), which names branch and step for every call. A bare
  ``WanModel`` is named by the caller with ``handle.context``.

Generating
----------
:func:`sample_t2v` is ``WanT2V.generate``'s sampling loop, run with the ``WanT2V``
object's own components (text encoder, VAE, model(s), configuration), naming the branch
and the step of every model call (``handle.context``) and running the ``on_step`` hooks;
:class:`OfficialWanDriver` runs it for ``handle(...)``. The ``--numina`` patches in
``patches/`` call ``numina_hooks.generate_with_numina(wan_t2v, prompt, size=..., seed=...)``.
Tested on a stand-in ``WanT2V`` (tests/official_wan_standin.py) with a diffusers
flow-matching scheduler in place of Wan's UniPC / DPM++ solvers.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable, Optional

import torch

from numina_hooks.context import StepState

from .base import SeedArgumentDriver, cleaned_prompt, register_adapter
from .descriptions import OFFICIAL_WAN
from .generic import GenericAdapter


@register_adapter
class OfficialWanAdapter(GenericAdapter):
    description = OFFICIAL_WAN

    def driver(self):
        return None if self.pipeline is None else OfficialWanDriver(self.pipeline, self.description.text_length)


class OfficialWanDriver(SeedArgumentDriver):
    """Runs a ``WanT2V`` through :func:`sample_t2v`; noise from ``seed=`` (``-1``: random)."""

    negative_is_random = True

    def __init__(self, pipeline, default_text_length: int):
        super().__init__(pipeline)
        self.default_text_length = default_text_length

    def run(self, handle, args: tuple, kwargs: dict):
        if args:
            raise TypeError("call a WanT2V handle with keywords: handle(prompt=..., size=..., seed=...)")
        return sample_t2v(handle, self.pipeline, **kwargs)

    def tokenizer(self):
        return self.pipeline.text_encoder.tokenizer.tokenizer

    def prompt_for_tokenizer(self, prompt: str) -> str:
        return cleaned_prompt(self.pipeline.text_encoder.tokenizer, prompt)

    def text_length(self, kwargs: dict):
        return int(getattr(self.pipeline, "text_len", None) or self.default_text_length)

    def num_steps(self, kwargs: dict) -> int:
        return int(kwargs.get("sampling_steps") or 50)


def _wan_scheduler(t2v, sample_solver: str, sampling_steps: int, shift: float):
    """Wan's own solver, set up as ``WanT2V.generate`` does; returns ``(scheduler, timesteps)``."""
    if sample_solver == "unipc":
        from wan.utils.fm_solvers_unipc import FlowUniPCMultistepScheduler

        scheduler = FlowUniPCMultistepScheduler(
            num_train_timesteps=t2v.num_train_timesteps, shift=1, use_dynamic_shifting=False
        )
        scheduler.set_timesteps(sampling_steps, device=t2v.device, shift=shift)
        return scheduler, scheduler.timesteps
    if sample_solver == "dpm++":
        from wan.utils.fm_solvers import FlowDPMSolverMultistepScheduler, get_sampling_sigmas, retrieve_timesteps

        scheduler = FlowDPMSolverMultistepScheduler(
            num_train_timesteps=t2v.num_train_timesteps, shift=1, use_dynamic_shifting=False
        )
        timesteps, _ = retrieve_timesteps(scheduler, device=t2v.device, sigmas=get_sampling_sigmas(sampling_steps, shift))
        return scheduler, timesteps
    raise ValueError(f"sample_solver={sample_solver!r}: expected 'unipc' or 'dpm++' (what WanT2V.generate accepts)")


def _encode(t2v, prompts: list[str], offload_model: bool):
    if not getattr(t2v, "t5_cpu", False):
        t2v.text_encoder.model.to(t2v.device)
        out = [t2v.text_encoder([p], t2v.device) for p in prompts]
        if offload_model:
            t2v.text_encoder.model.cpu()
        return out
    return [[t.to(t2v.device) for t in t2v.text_encoder([p], torch.device("cpu"))] for p in prompts]


def sample_t2v(
    handle,
    t2v: Any,
    *,
    prompt: str,
    size: tuple = (1280, 720),
    frame_num: int = 81,
    shift: float = 5.0,
    sample_solver: str = "unipc",
    sampling_steps: int = 50,
    guide_scale=5.0,
    n_prompt: str = "",
    seed: int = -1,
    offload_model: bool = True,
    make_scheduler: Optional[Callable] = None,
):
    """``WanT2V.generate``'s loop with every model call named; returns the video ``[C, N, H, W]``.

    Wan2.1 (``t2v.model``) and Wan2.2 A14B (``t2v.high_noise_model`` at
    ``t >= boundary * num_train_timesteps``, else ``low_noise_model``; ``guide_scale``
    may be ``(low, high)``). ``make_scheduler(t2v, sample_solver, sampling_steps, shift)``
    returns ``(scheduler, timesteps)``; by default Wan's own solvers.
    """
    if seed is None or seed < 0:
        raise ValueError("sample_t2v needs seed >= 0 (handle(...) picks one when seed is -1)")
    two_experts = getattr(t2v, "low_noise_model", None) is not None
    if isinstance(guide_scale, (int, float)):
        guide_scale = (float(guide_scale), float(guide_scale))
    target_shape = (
        t2v.vae.model.z_dim,
        (frame_num - 1) // t2v.vae_stride[0] + 1,
        size[1] // t2v.vae_stride[1],
        size[0] // t2v.vae_stride[2],
    )
    sp_size = getattr(t2v, "sp_size", 1)
    seq_len = math.ceil(
        (target_shape[2] * target_shape[3]) / (t2v.patch_size[1] * t2v.patch_size[2]) * target_shape[1] / sp_size
    ) * sp_size
    n_prompt = n_prompt or t2v.sample_neg_prompt
    generator = torch.Generator(device=t2v.device).manual_seed(seed)
    context, context_null = _encode(t2v, [prompt, n_prompt], offload_model)
    latents = [torch.randn(*target_shape, dtype=torch.float32, device=t2v.device, generator=generator)]

    scheduler, timesteps = (make_scheduler or _wan_scheduler)(t2v, sample_solver, sampling_steps, shift)
    num_steps = len(timesteps)
    boundary = t2v.boundary * t2v.num_train_timesteps if two_experts else None
    amp = (
        torch.amp.autocast("cuda", dtype=t2v.param_dtype)
        if torch.device(t2v.device).type == "cuda"
        else nullcontext()
    )
    hook = handle.hook
    stepped = bool(hook.on_step.get_hookimpls())
    arg_c = {"context": context, "seq_len": seq_len}
    arg_null = {"context": context_null, "seq_len": seq_len}
    with amp, torch.no_grad():
        for i, t in enumerate(timesteps):
            timestep = torch.stack([t])
            high = two_experts and t.item() >= boundary
            if two_experts:
                model = t2v._prepare_model_for_timestep(t, boundary, offload_model)
            else:
                model = t2v.model
                model.to(t2v.device)
            scale = guide_scale[1] if high else guide_scale[0]
            with handle.context(branch="cond", step=i, num_steps=num_steps, timestep=float(t)):
                cond = model(latents, t=timestep, **arg_c)[0]
            with handle.context(branch="uncond", step=i, num_steps=num_steps, timestep=float(t)):
                uncond = model(latents, t=timestep, **arg_null)[0]
            noise_pred = uncond + scale * (cond - uncond)
            x0 = scheduler.step(
                noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False, generator=generator
            )[0]
            latents = [x0.squeeze(0)]
            if stepped:
                state = StepState(phase="end", step=i, num_steps=num_steps, timestep=float(t), latents=latents[0])
                hook.on_step(state=state)
                if state.stop_requested:
                    break
        if offload_model:
            for name in ("model", "low_noise_model", "high_noise_model"):
                if getattr(t2v, name, None) is not None:
                    getattr(t2v, name).cpu()
        videos = t2v.vae.decode(latents)
    return videos[0]
