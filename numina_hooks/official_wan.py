"""NUMINA with the official Wan2.1 / Wan2.2 repositories' ``WanT2V``.

``WanT2V.generate`` calls its model for the conditional then the unconditional
branch at each step and tells nobody which is which. Rather than infer that from
call order, :func:`sample_t2v` is the same sampling loop, run with the ``WanT2V``
object's own components (text encoder, VAE, model(s), configuration), that names
the branch and the step of every model call (``handle.context``) and runs the
``on_step`` hooks. :func:`generate_with_numina` is what the ``--numina`` patches
in ``patches/`` call::

    import numina_hooks
    from numina_hooks.official_wan import generate_with_numina
    video = generate_with_numina(wan_t2v, prompt, size=(832, 480), frame_num=81, seed=42)
    video.numina.counts_found

Not run here: the official repositories need a CUDA device to import. This loop
is tested in CI on a stand-in ``WanT2V`` (tests/official_wan_standin.py) with a
diffusers flow-matching scheduler in place of Wan's UniPC / DPM++ solvers.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable, Optional

import torch

from .context import StepState


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


def parse_counts_arg(text: Optional[str]) -> Optional[dict]:
    """``"cats=3,dogs=2"`` -> ``{"cats": 3, "dogs": 2}``; ``None`` or ``""`` -> ``None`` (parse the prompt)."""
    if not text:
        return None
    counts = {}
    for item in text.split(","):
        noun, sep, number = item.partition("=")
        if not sep or not noun.strip() or not number.strip().isdigit():
            raise ValueError(f"--numina_counts {text!r}: expected noun=count pairs, e.g. 'cats=3,dogs=2'")
        counts[noun.strip()] = int(number)
    return counts


def generate_with_numina(wan_t2v, prompt: str, *, counts: Optional[dict] = None, config=None, **kwargs):
    """One NUMINA generation with a ``WanT2V``: attach, generate, detach.

    ``kwargs`` are ``WanT2V.generate``'s (``size``, ``frame_num``, ``shift``,
    ``sample_solver``, ``sampling_steps``, ``guide_scale``, ``n_prompt``, ``seed``,
    ``offload_model``); ``counts`` overrides the counts parsed from the prompt.
    Returns the video tensor ``[C, N, H, W]`` with ``.numina`` (the report).
    """
    import numina_hooks
    from numina_hooks.numina.config import NuminaConfig

    handle = numina_hooks.attach(wan_t2v, config=config or NuminaConfig())
    try:
        return handle(prompt=prompt, counts=counts, **kwargs)
    finally:
        handle.detach()
