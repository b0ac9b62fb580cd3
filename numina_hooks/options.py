"""Command-line options that ``numina generate``, ``numina demo`` and ``numina eval`` share.

Each check turns a bad value into :class:`CliError`: one line that names the option, the
value and what is expected (``numina`` prints it and exits 2). The generation options
(seeds, NUMINA config, steps, frame size, dtype, device) are added to a parser by one
function, :func:`add_generation_options`, so they mean the same in every command.

Nothing here imports torch or diffusers at import time (``numina --help`` stays instant);
``numina_hooks.cli`` and ``numina_hooks.eval`` both build on this module, and it imports
neither.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional

__all__ = ["CliError", "DTYPES", "parse_seeds", "parse_seed_list", "parse_config_arg", "apply_threads",
           "check_positive", "resolve_device", "resolve_dtype", "check_model_arg", "require",
           "add_generation_options"]

DTYPES = ("auto", "bf16", "fp16", "fp32")


class CliError(Exception):
    """An expected failure (bad input, missing requirement): one line, exit 2."""


def finite_float(text: str) -> float:
    """An argparse type: a finite float ("nan" and "inf" parse as floats and would reach the
    pipeline, whose video would be NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number, e.g. 5.0") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number, e.g. 5.0")
    return value


# ---------------------------------------------------------------------------- seeds
#: the seeds ``torch.Generator.manual_seed`` accepts
SEED_RANGE = (-(2**63), 2**64 - 1)


def parse_seeds(text: str) -> list[int]:
    """``"1..5"`` -> [1, 2, 3, 4, 5]; ``"1,4,7"`` -> [1, 4, 7]; ``"3"`` -> [3]; mixes work.

    Raises ValueError for anything else, for no seed and for a repeated seed."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("..")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
            else:
                a = b = int(part)
        except ValueError:
            raise ValueError(f"seeds {text!r}: expected a range like 1..5 or a list like 1,2,3") from None
        if not (SEED_RANGE[0] <= a and b <= SEED_RANGE[1]):
            raise ValueError(f"seeds {text!r}: expected seeds from {SEED_RANGE[0]} to {SEED_RANGE[1]} "
                             "(what torch.Generator.manual_seed takes)")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise ValueError(f"seeds {text!r}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {text!r}: a seed is repeated")
    return seeds


def parse_seed_list(text: str, option: str = "--seeds") -> list[int]:
    """``"0"``, ``"0,3"``, ``"1..3"`` (and mixes) -> a list of distinct ints, or CliError."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise CliError(f"{option} {text!r}: {str(err).split(': ', 1)[-1]}") from None


# ---------------------------------------------------------------------------- config and numbers
def parse_config_arg(text: Optional[str]):
    """``--config`` JSON (or a JSON file) -> ``NuminaConfig``; errors name the field and list the valid ones."""
    import dataclasses

    from .numina.config import NuminaConfig

    if not text:
        return NuminaConfig()
    source = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source = Path(text).read_text(encoding="utf-8")
    try:
        fields = json.loads(source)
    except json.JSONDecodeError as err:
        raise CliError(f"--config {text!r} is not valid JSON ({err.msg} at character {err.pos}); "
                       'expected an object such as \'{"cross_head": "max"}\' or a JSON file') from None
    if not isinstance(fields, dict):
        raise CliError(f"--config {text!r}: expected a JSON object of NuminaConfig fields, got {type(fields).__name__}")
    from .numina import config as config_module

    valid = [f.name for f in dataclasses.fields(NuminaConfig)]
    # old names keep working (NuminaConfig warns and maps them); the list shows current names only
    accepted = set(valid) | set(getattr(config_module, "RENAMED_FIELDS", {})) | set(
        getattr(config_module, "_INERT_FIELDS", {}))
    unknown = [k for k in fields if k not in accepted]
    if unknown:
        raise CliError(f"--config: unknown field {unknown[0]!r}; valid fields: {', '.join(valid)}")
    try:
        return NuminaConfig(**fields)
    except (TypeError, ValueError) as err:
        raise CliError(f"--config: {err}") from None


def check_positive(args, *names: str) -> None:
    """CliError unless each option ``names`` of ``args`` (an argparse namespace) is unset or an int >= 1."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} {value}: expected an int >= 1")


def apply_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads (checked first: an int >= 1)."""
    if threads is None:
        return
    if threads < 1:
        raise CliError(f"--threads {threads}: expected a number of CPU threads >= 1")
    import torch

    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- device, dtype, model
def resolve_device(device: Optional[str]) -> str:
    """``None``/``"auto"`` -> cuda when available, else cpu; a cuda device that is absent is an error."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise CliError(f"--device {device}: not a torch device; expected auto, cpu, cuda or cuda:N") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def resolve_dtype(dtype: Optional[str], device: str) -> str:
    """``auto``: bf16 on CUDA, fp32 elsewhere (CPUs run bf16 slowly and less exactly)."""
    if dtype in (None, "auto"):
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return dtype


def check_model_arg(model: str) -> None:
    """``toy``, an existing diffusers folder (with ``model_index.json``), or a hub id."""
    if model == "toy":
        return
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CliError(f"--model {model}: is a file; expected a diffusers model folder (with model_index.json)")
        if not (path / "model_index.json").exists():
            raise CliError(f"--model {model}: the folder has no model_index.json; expected a diffusers pipeline "
                           "folder (as written by pipe.save_pretrained)")
        return
    looks_like_path = model.startswith((".", "/", "~")) or model.endswith("/") or model.count("/") != 1
    if looks_like_path:
        raise CliError(f"--model {model}: no such folder; expected 'toy', a local diffusers folder or a hub id "
                       "such as Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def require(module: str, extra: str, what: str) -> None:
    """CliError unless ``module`` imports (an optional dependency of ``extra``)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CliError(f"{what} needs {module}: pip install 'numina-hooks[{extra}]'")


# ---------------------------------------------------------------------------- the parser
def add_generation_options(parser, *, seeds_default: str, seeds_help: str = "seed(s): 0, or a list 0,3, or a range 1..3",
                           pipeline: bool = True) -> None:
    """Add the generation options to ``parser`` (an argparse parser or argument group).

    Always ``--seeds``/``--seed`` (default ``seeds_default``) and ``--config``; with
    ``pipeline`` also what a pipeline call takes: ``--steps``, ``--height``, ``--width``,
    ``--num-frames``, ``--guidance-scale``, ``--dtype``, ``--device``. Unset sizes keep the
    pipeline's defaults.
    """
    parser.add_argument("--seeds", "--seed", dest="seeds", default=seeds_default, help=seeds_help)
    parser.add_argument("--config", help='NuminaConfig fields as JSON (or a JSON file), e.g. \'{"cross_head": "max"}\'')
    if not pipeline:
        return
    parser.add_argument("--steps", type=int,
                        help="denoising steps (default: the pipeline's default, 50 for Wan; the paper uses 50)")
    parser.add_argument("--height", type=int, help="frame height in pixels (default: the pipeline's default)")
    parser.add_argument("--width", type=int, help="frame width in pixels (default: the pipeline's default)")
    parser.add_argument("--num-frames", dest="num_frames", type=int, help="frames (default: the pipeline's default)")
    parser.add_argument("--guidance-scale", dest="guidance_scale", type=finite_float,
                        help="classifier-free guidance scale (default: the pipeline's default)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype; auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
