"""The ``numina`` command: ``demo``, ``tour``, ``generate`` and ``eval``.

Every command checks its arguments before anything loads: a bad value prints one line
that names the option, the value and what is expected, and exits 2 (``--debug`` shows the
traceback instead). torch and diffusers load only when a command runs, so ``numina
--help`` is instant. Options mean the same in every command: ``--model toy``,
``--seed``/``--seeds`` (``0``, ``0,3``, ``1..3``), ``--threads``, ``--dtype auto``.

The checks every command shares (seeds, config, threads, device, dtype, model) and the
generation options are ``options.py``'s; ``numina eval`` is ``eval/command.py``.

Exit codes: 0 done; 1 ran but failed (an unexpected error, or items that failed); 2 bad
input or a missing requirement, nothing run; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from .media import VideoWriterError, check_video_writer, pipeline_frames, write_video
from .options import (CliError, add_generation_options, apply_threads, check_model_arg, check_positive,
                      parse_config_arg, parse_seed_list, require, resolve_device, resolve_dtype)
from .progress import StepProgress

log = logging.getLogger("numina_hooks")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def parse_counts_arg(text: Optional[str], prompt: Optional[str] = None) -> Optional[dict]:
    """``--counts "cats=3,dogs=2"`` -> ``{"cats": 3, "dogs": 2}`` (``numina.counts.parse_counts_arg``), or CliError."""
    from .numina.counts import parse_counts_arg as parse_counts_text  # not at import: numina loads torch

    try:
        return parse_counts_text(text, prompt)
    except ValueError as err:
        raise CliError(f"--counts {err}") from None


# ---------------------------------------------------------------------------- tour
def _cmd_tour(args: argparse.Namespace) -> int:
    """Run a tiny random-weight Wan pipeline and print what the hooks saw."""
    check_positive(args, "steps")
    (seed,) = _single_seed(args.seed)
    apply_threads(args.threads)
    import torch

    import numina_hooks
    from numina_hooks import hookimpl, testing

    class Tour:
        def __init__(self):
            self.calls = Counter()
            self.shapes = {}
            self.steps = []
            self.forwards = Counter()

        @hookimpl
        def on_attention(self, view):
            key = (view.transformer, view.layer, view.kind)
            self.calls[(view.step, _branch(view.branch))] += 1
            self.shapes[key] = (tuple(view.q.shape), tuple(view.k.shape))

        @hookimpl(wrapper=True)
        def on_forward(self, call):
            self.forwards[(call.context.transformer, _branch(call.context.branch))] += 1
            return (yield)

        @hookimpl
        def on_step(self, state):
            self.steps.append((state.step, round(state.timestep, 1)))

    pipe = testing.tiny_wan_pipeline(two_transformers=args.two_transformers)
    pipe.set_progress_bar_config(disable=True)
    tour = Tour()
    kwargs = dict(testing.WAN_CALL, num_inference_steps=args.steps, output_type="pt")
    with torch.no_grad():
        plain = pipe(prompt=args.prompt, generator=torch.Generator().manual_seed(seed), **kwargs).frames
        with numina_hooks.attach(pipe, tour) as handle:
            hooked = handle(prompt=args.prompt, generator=torch.Generator().manual_seed(seed), **kwargs).frames
    print(f"pipeline: tiny random-weight diffusers {type(pipe).__name__} built in memory "
          f"({'two transformers, ' if args.two_transformers else ''}{len(pipe.transformer.blocks)} blocks)")
    print(f"output: {tuple(hooked.shape)} [batch, frames, channels, height, width]; "
          f"identical to the unhooked pipeline: {bool(torch.equal(plain, hooked))}")
    print(f"steps (index, timestep): {tour.steps}")
    print("transformer forwards per (transformer, branch): "
          + ", ".join(f"{t}/{b}: {n}" for (t, b), n in sorted(tour.forwards.items())))
    print("attention layers and view shapes (q, k as [batch, heads, tokens, head_dim]):")
    for (tname, layer, kind), (qs, ks) in sorted(tour.shapes.items()):
        print(f"  {tname:14s} layer {layer} {kind:5s} q={qs} k={ks}")
    per_step = sorted(tour.calls.items())
    print("attention calls per (step, branch): " + ", ".join(f"{s}/{b}: {n}" for (s, b), n in per_step))
    return 0


def _single_seed(text: str) -> list[int]:
    seeds = parse_seed_list(text, "--seed")
    if len(seeds) != 1:
        raise CliError(f"--seed {text!r}: this command takes one seed")
    return seeds


# ---------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    check_positive(args, "prompts", "threads")
    seeds = parse_seed_list(args.seeds)
    config = parse_config_arg(args.config)
    if args.steps is not None:
        _check_steps_reach_reference(config, args.steps)
    if args.json:
        _check_writable_file(args.json, "--json")
    _check_writable_file(str(Path(args.out) / "plain_vs_numina.gif"), "--out")
    require("PIL", "media", "numina demo (the GIF and layout pictures)")
    require("tqdm", "media", "numina demo (progress)")
    run_demo(out_dir=args.out, prompts=args.prompts, seeds=seeds, steps=args.steps, json_path=args.json,
             config=config, threads=args.threads, progress=not args.no_progress)
    return 0


def _check_writable_file(path: str, option: str) -> None:
    """CliError unless ``path``'s folder exists or can be created (and ``path`` is no folder)."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {path}: is a folder; expected a file name")
    for parent in [p.parent, *p.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise CliError(f"{option} {path}: {parent} is a file, not a folder")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"{option} {path}: cannot create its folder ({err.strerror or err})") from None
    existed = p.exists()
    try:  # writable now, not after the run: opened for appending (nothing written), a new file removed
        with open(p, "a"):
            pass
    except OSError as err:
        raise CliError(f"{option} {path}: cannot write it ({err.strerror or err})") from None
    if not existed:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- generate
def _load_pipeline(model: str, dtype: str, device: str):
    """A diffusers pipeline from a hub id or folder (Wan's VAE kept in float32), on ``device``."""
    from .eval.model_loading import load_pipeline

    require("diffusers", "diffusers", f"--model {model}")
    try:
        return load_pipeline(model, dtype, device)
    except Exception as err:
        raise CliError(f"--model {model}: could not load it ({type(err).__name__}: "
                       f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no message'})") from err


def latent_grid(pipe, call: dict) -> Optional[tuple[int, int]]:
    """Patches per latent frame (rows, cols) a call of ``pipe`` will make, or None when the
    pipeline does not say (then counts are only checked once the layout is read)."""
    import inspect

    def default(name):
        if call.get(name) is not None:
            return call[name]
        param = inspect.signature(type(pipe).__call__).parameters.get(name)
        return None if param is None or param.default is inspect.Parameter.empty else param.default

    height, width = default("height"), default("width")
    if height is None or width is None:  # CogVideoX: None means the transformer's sample size
        cfg = getattr(getattr(pipe, "transformer", None), "config", None)
        scale = getattr(pipe, "vae_scale_factor_spatial", None)
        if cfg is None or scale is None or getattr(cfg, "sample_height", None) is None:
            return None
        height = height or cfg.sample_height * scale
        width = width or cfg.sample_width * scale
    scale = getattr(pipe, "vae_scale_factor_spatial", None)
    patch = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "patch_size", None)
    if scale is None or patch is None:
        return None
    ph, pw = (patch[1], patch[2]) if isinstance(patch, (tuple, list)) else (patch, patch)
    return int(height) // int(scale) // int(ph), int(width) // int(scale) // int(pw)


def check_counts_fit(counts: dict, grid: Optional[tuple[int, int]], option: str = "--counts") -> None:
    """Each count must fit the latent grid: at most one instance per patch of a frame."""
    if not counts:
        return
    from .numina.counts import count_over_grid  # not at import: numina loads torch

    over = count_over_grid(counts, grid)
    if over is not None:
        noun, n, most = over
        raise CliError(f"{option} {noun}={n}: a frame's latent grid has {grid[0]}x{grid[1]} = {most} patches, "
                       f"so the allowed range is 1..{most}; ask for fewer or generate larger frames")


def _out_for_seed(out: Path, seed: int, many: bool) -> Path:
    return out.with_name(f"{out.stem}_seed{seed}{out.suffix}") if many else out


def _cmd_generate(args: argparse.Namespace) -> int:
    # ---- everything that can be checked without the model
    if not args.prompt.strip():
        raise CliError("--prompt is empty; describe the video, e.g. 'three cats chasing two dogs'")
    check_model_arg(args.model)
    seeds = parse_seed_list(args.seeds)
    check_positive(args, "height", "width", "num_frames", "threads")
    counts = parse_counts_arg(args.counts, args.prompt)
    config = parse_config_arg(args.config)
    if args.steps is not None:
        _check_steps_reach_reference(config, args.steps)
    out = Path(args.out)
    for seed in seeds:
        try:
            check_video_writer(_out_for_seed(out, seed, len(seeds) > 1))
        except VideoWriterError as err:
            raise CliError(f"--out {args.out}: {err}") from None
    if args.report:
        _check_writable_file(str(Path(args.report) / "summary.json"), "--report")
    if args.model == "toy":
        from .eval.model_loading import check_toy_frame_size

        try:
            check_toy_frame_size(height=args.height, width=args.width, num_frames=args.num_frames)
        except ValueError as err:
            raise CliError(str(err)) from None
    apply_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    # ---- the model
    import torch

    import numina_hooks

    if args.model == "toy":
        from .toy.model import TOY_CALL, load_toy_pipeline, toy_frames

        log.info("loading the toy model on %s", device)
        pipe = load_toy_pipeline(device=device)
        call = dict(TOY_CALL)
        frames_of = toy_frames
    else:
        log.info("loading %s (%s on %s)", args.model, dtype, device)
        pipe = _load_pipeline(args.model, dtype, device)
        call = {"output_type": "np"}
        frames_of = pipeline_frames
    pipe.set_progress_bar_config(disable=True)
    for name in ("height", "width", "num_frames", "guidance_scale"):
        if getattr(args, name) is not None:
            call[name] = getattr(args, name)
    if args.steps is not None:
        call["num_inference_steps"] = args.steps
    else:
        call.setdefault("num_inference_steps", _default_steps(pipe))
        _check_steps_reach_reference(config, call["num_inference_steps"])
    if not args.plain:
        asked = counts if counts is not None else numina_hooks.parse_counts(args.prompt)
        check_counts_fit(asked, latent_grid(pipe, call), "--counts" if counts is not None else "the prompt asks for")

    # ---- generate, one video per seed
    with numina_hooks.attach(pipe, numina_hooks.Numina(config)) as numina, torch.no_grad():
        for seed in seeds:
            progress = StepProgress(prefix=f"seed {seed}: " if len(seeds) > 1 else "", disable=args.no_progress)
            numina.register(progress)
            generator = torch.Generator(device=device).manual_seed(seed)
            try:
                if args.plain:
                    result, report = numina.run_pipeline(prompt=args.prompt, generator=generator, **call), None
                else:
                    result = numina(prompt=args.prompt, counts=counts, generator=generator, **call)
                    report = result.numina
            finally:
                numina.unregister(progress)
            path = write_video(frames_of(result), _out_for_seed(out, seed, len(seeds) > 1))
            print(f"video (seed {seed}): {path}")
            if report is not None:
                _print_report(report)
                if args.report:
                    folder = Path(args.report) / f"seed{seed}" if len(seeds) > 1 else Path(args.report)
                    print(f"report: {report.save(folder)}")
    return 0


def _check_steps_reach_reference(config, steps: int) -> None:
    """NUMINA reads the layout at the reference step: the run must reach it."""
    if steps < 1:
        raise CliError(f"--steps {steps}: too few to reach NUMINA's reference step, where it reads the layout; "
                       "expected at least 1 denoising step")
    try:
        config.resolve_step(steps)
    except ValueError as err:
        raise CliError(f"--steps {steps}: too few to reach NUMINA's reference step ({err})") from None


def _default_steps(pipe) -> int:
    import inspect

    param = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
    return int(param.default) if param is not None and isinstance(param.default, int) else 50


def _print_report(report) -> None:
    summary = report.summary()
    print(f"asked: {summary['counts_asked']}  found in phase 1 (per frame): {summary['counts_found']}")
    print(f"phase 2 ran: {summary['phase2_ran']} ({summary['reason']})")
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["timings"].items()))


def _branch(branch) -> str:
    return "+".join(branch) if isinstance(branch, tuple) else str(branch)


# ---------------------------------------------------------------------------- parser
class _Formatter(argparse.HelpFormatter):
    """Shows every option's default (options without one say in their help what happens)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and "(default: " not in text and action.option_strings
                and action.default not in (None, False, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


def _common(parser: argparse.ArgumentParser, threads_default: Optional[int] = None) -> None:
    parser.add_argument("--threads", type=int, default=threads_default,
                        help="CPU threads for torch (default: %(default)s; the tiny toy model is as fast on 1)"
                        if threads_default is not None else
                        "CPU threads for torch (default: torch's own; 1 is fastest on a busy 2-core machine)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what numina-hooks does (logging INFO)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="numina", description="Count-accurate text-to-video with NUMINA hooks.",
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"numina-hooks {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,generate,eval,tour}")

    demo = sub.add_parser("demo", formatter_class=_Formatter,
                          help="plain vs NUMINA on the shipped toy model (1-4 minutes on a 2-core CPU)",
                          description="Plain vs NUMINA on the shipped toy model: a table, a labelled GIF, the "
                          "layout pictures and the CountAcc difference with its 95% interval. "
                          "A prompt-seed pair took 8 s on a 2-core CPU shared with a training run, 32 s with six "
                          "jobs sharing it (the default is 8 pairs).")
    demo.add_argument("--model", choices=("toy",), default="toy", help="the demo runs the shipped toy model")
    demo.add_argument("--out", default="numina-out/demo", help="folder for the GIF and the layout pictures")
    demo.add_argument("--prompts", type=int, default=4, help="how many held-out toy prompts")
    add_generation_options(demo, seeds_default="0,1", pipeline=False)
    demo.add_argument("--steps", type=int, help="denoising steps (default: the toy model's 20)")
    demo.add_argument("--json", help="also write the figures to this JSON file")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(demo, threads_default=1)
    demo.set_defaults(func=_cmd_demo)

    gen = sub.add_parser("generate", formatter_class=_Formatter,
                         help="NUMINA generation with the toy model or any diffusers Wan / CogVideoX model")
    gen.add_argument("--model", required=True,
                     help="'toy', a hub id (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or a local diffusers folder")
    gen.add_argument("--prompt", required=True, help="what the video shows, with counts ('three cats ...')")
    gen.add_argument("--counts", help="override the counts parsed from the prompt: noun=count,noun=count")
    add_generation_options(gen, seeds_default="1")
    gen.add_argument("--plain", action="store_true", help="run the plain pipeline (no NUMINA) for comparison")
    gen.add_argument("--out", default="numina-out/video.gif",
                     help="output video, .gif or .mp4 (several seeds: NAME_seedK.gif)")
    gen.add_argument("--report", help="folder for the report pictures and summary.json")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars")
    _common(gen)
    gen.set_defaults(func=_cmd_generate)

    from .eval import command as eval_command

    ev = sub.add_parser("eval", formatter_class=_Formatter,
                        help="CountBench-style evaluation of strategies side by side (docs/eval.md)")
    eval_command.add_arguments(ev)
    _common(ev)
    ev.set_defaults(func=eval_command.cmd_eval)

    tour = sub.add_parser("tour", formatter_class=_Formatter,
                          help="what the hooks see on a tiny random-weight Wan pipeline")
    tour.add_argument("--prompt", default="three cats chasing two dogs", help="the prompt")
    tour.add_argument("--steps", type=int, default=4, help="denoising steps")
    tour.add_argument("--seed", default="0", help="the seed")
    tour.add_argument("--two-transformers", action="store_true", help="a Wan2.2 A14B-style pipeline")
    _common(tour)
    tour.set_defaults(func=_cmd_tour)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("numina: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(verbose: bool) -> None:
    """``--verbose``: the "numina_hooks" logger's INFO messages on stderr; else warnings only."""
    if verbose and not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(logging.INFO if verbose else logging.WARNING)


EXPECTED_ERRORS = (CliError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError,
                   VideoWriterError)
"""Errors that are bad input or a missing requirement: one line, exit 2."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``numina`` with ``argv`` (default: the command line); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"numina {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EXPECTED_ERRORS as err:
        if args.debug:
            raise
        print(f"numina {args.command}: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # unexpected: still one line, the traceback on request
        if args.debug:
            raise
        print(f"numina {args.command}: failed: {type(err).__name__}: {_one_line(err)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
