"""Loading the model an evaluation generates with: the shipped toy model or a diffusers pipeline.

:func:`load_model` returns an ``EvalModel`` (``strategies.py``): the attached pipeline, the
call arguments every generation uses and how to take uint8 frames out of an output.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Optional

from ..media import pipeline_frames
from ..options import resolve_dtype

if TYPE_CHECKING:
    from .strategies import EvalModel

log = logging.getLogger(__name__)

__all__ = ["load_model", "load_pipeline", "check_toy_frame_size"]

TORCH_DTYPES = ("bf16", "fp16", "fp32")


def load_model(model: str, *, steps: Optional[int] = None, height: Optional[int] = None,
               width: Optional[int] = None, num_frames: Optional[int] = None,
               guidance_scale: Optional[float] = None, dtype: str = "auto", device: Optional[str] = None,
               config=None) -> EvalModel:
    """Load ``model`` (a diffusers model id or local folder, or ``"toy"``) and attach NUMINA.

    For a real model this is ``DiffusionPipeline.from_pretrained(model, dtype=...)`` (Wan's
    VAE kept in float32), called with ``output_type="np"``; ``None`` arguments keep the
    pipeline's defaults. ``"toy"`` is the shipped toy model (``numina_hooks.toy``), whose
    frame geometry is fixed.
    """
    import torch

    import numina_hooks
    from ..numina.config import NuminaConfig
    from .strategies import EvalModel

    config = config or NuminaConfig()
    if model == "toy":
        from ..toy.model import TOY_CALL, load_toy_pipeline, toy_frames

        check_toy_frame_size(height=height, width=width, num_frames=num_frames)
        pipe = load_toy_pipeline(device=device or "cpu")
        call = dict(TOY_CALL)
        if steps is not None:
            call["num_inference_steps"] = steps
        if guidance_scale is not None:
            call["guidance_scale"] = guidance_scale
        handle = numina_hooks.attach(pipe, numina_hooks.Numina(config))
        return EvalModel(handle, call, toy_frames, name="toy", device="cpu", info=_toy_weights_info())

    device = device if device not in (None, "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(dtype, device)
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected 'auto', 'bf16', 'fp16' or 'fp32'")
    log.info("loading %s (%s on %s)", model, dtype, device)
    pipe = load_pipeline(model, dtype, device)
    pipe.set_progress_bar_config(disable=True)
    call: dict = {"output_type": "np"}
    for name, value in (("num_inference_steps", steps), ("height", height), ("width", width),
                        ("num_frames", num_frames), ("guidance_scale", guidance_scale)):
        if value is not None:
            call[name] = value
    handle = numina_hooks.attach(pipe, numina_hooks.Numina(config))
    return EvalModel(handle, call, pipeline_frames, name=model, device=device)


def check_toy_frame_size(**sizes: Optional[int]) -> None:
    """ValueError unless each of ``height``, ``width``, ``num_frames`` given is unset or the
    toy model's own (its frame geometry is fixed: ``toy.model.TOY_CALL``)."""
    from ..toy.model import TOY_CALL

    for name, value in sizes.items():
        if value is not None and value != TOY_CALL[name]:
            raise ValueError(f"--{name.replace('_', '-')} {value}: the toy model only makes "
                             f"{TOY_CALL[name]} (leave it unset)")


def load_pipeline(model: str, dtype: str, device: str):
    """``DiffusionPipeline.from_pretrained(model)`` in ``dtype`` ("bf16", "fp16", "fp32") on
    ``device``; Wan's VAE stays in float32, as it is meant to run."""
    import torch
    from diffusers import DiffusionPipeline

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    try:  # diffusers >= 0.36 names it dtype (torch_dtype is deprecated); older releases only know torch_dtype
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        pipe = DiffusionPipeline.from_pretrained(model, dtype=torch_dtype)
    except ImportError:
        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    if type(pipe).__name__.startswith("Wan") and getattr(pipe, "vae", None) is not None:
        pipe.vae.to(torch.float32)
    return pipe.to(device)


def _toy_weights_info() -> dict:
    """Which toy weights: their hash and training step (the shipped weights change as training goes)."""
    import hashlib

    from ..toy.model import WEIGHTS_DIR

    info = {"weights_sha1": hashlib.sha1((WEIGHTS_DIR / "model.safetensors").read_bytes()).hexdigest()[:12]}
    meta = WEIGHTS_DIR / "info.json"
    if meta.exists():
        info["weights_step"] = json.loads(meta.read_text()).get("steps")
    return info
