"""The ``numina eval`` command: its arguments, their checks, and the run or scoring they start.

Everything that can be checked before a model loads is checked first
(:func:`check_eval_args`); a bad value raises ``options.CliError`` (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..options import (CliError, add_generation_options, apply_threads, check_model_arg, check_positive,
                       parse_config_arg, parse_seed_list, require, resolve_device, resolve_dtype)
from . import model_loading
from .benchmark import countbench_files, load_benchmark, toy_benchmark, write_benchmark
from .results import SettingsMismatch, count_results
from .run import DEFAULT_STRATEGIES, check_mp4_writer, run_eval
from .scoring import _video_sets, score_videos

__all__ = ["add_arguments", "cmd_eval", "check_eval_args"]


def add_arguments(parser) -> None:
    """The arguments of ``numina eval`` (added to ``parser``, an argparse (sub)parser).

    ``--threads``, ``--debug`` and ``--verbose`` are added by the ``numina`` command itself."""
    src = parser.add_argument_group("what to evaluate")
    src.add_argument("--prompts", help="prompt file, one a line (CountBench's prompts.txt); without it, the "
                     "CountBench copy that ships with the package, or with --model toy held-out toy prompts "
                     "(as many as --limit, default 20)")
    src.add_argument("--counts", help="counts file, one JSON object noun -> count a line (noun_counts.jsonl)")
    src.add_argument("--limit", type=int, help="only the first N prompts (default: all; 20 toy prompts with --model toy)")
    src.add_argument("--model", help="'toy', a diffusers hub id or a local folder (Wan, CogVideoX)")
    src.add_argument("--videos", help="score existing videos in this folder instead of generating "
                     "(files or frame folders named by 0-based prompt line: 0007.mp4, 7.gif, 0007/; or one "
                     "such folder per strategy)")
    src.add_argument("--index-base", type=int, choices=(0, 1), default=0,
                     help="with --videos: 1 when the names count prompt lines from 1")
    src.add_argument("--name", help="with --videos: the strategy name for this folder (default: its name)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                     help="comma-separated: plain, seed-search, numina, numina+seed-search, layout-seeds; any "
                     "with '+enhance' (needs --enhance)")
    add_generation_options(gen, seeds_default="1..5",
                           seeds_help="seeds: 0, a list 1,2,3 or a range 1..5; single-trial strategies use the first")
    gen.add_argument("--enhance", metavar="MODULE:FUNCTION",
                     help="prompt enhancer for '+enhance' strategies: a callable str -> str, imported by name")
    gen.add_argument("--save-videos", choices=("gif", "mp4", "none"), default="gif",
                     help="write each chosen video to OUT/videos/<strategy>/")
    det = parser.add_argument_group("counting")
    det.add_argument("--detector", choices=("grounding-dino", "owlv2", "toy"),
                     help="counter (default: toy for --model toy, else grounding-dino)")
    det.add_argument("--detector-model", help="detector checkpoint id or folder (default: the detector's default)")
    det.add_argument("--box-threshold", type=float, help="box score threshold (default: GroundingDINO 0.35, OWLv2 0.2)")
    det.add_argument("--text-threshold", type=float, help="GroundingDINO text threshold (default: 0.25)")
    det.add_argument("--nms-iou", type=float, help="IoU above which boxes of one noun are duplicates (default: 0.5)")
    det.add_argument("--max-box-fraction", type=float,
                     help="drop boxes larger than this fraction of the frame (default: keep all)")
    det.add_argument("--clip", action="store_true", help="also compute the CLIP score (frame-averaged)")
    det.add_argument("--clip-model", help="CLIP checkpoint (default: openai/clip-vit-base-patch32)")
    parser.add_argument("--out", default="numina-out/eval", help="output folder (results, videos, table, plot)")


def _import_callable(spec: str) -> Callable[[str], str]:
    import importlib

    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise CliError(f"--enhance {spec!r}: expected MODULE:FUNCTION, e.g. mypackage.prompts:enhance")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except ImportError as err:
        raise CliError(f"--enhance {spec!r}: cannot import {module} ({err})") from None
    if not callable(fn):
        raise CliError(f"--enhance {spec!r}: {module} has no callable {attr!r}")
    return fn


def cmd_eval(args, echo: Callable[[str], None] = print, on_result=None) -> int:
    """``numina eval``: check everything, run (or score), print the table.

    Exit 0 when every item was scored; 1 when some failed or nothing was scored (the
    message says how many); 130 on Ctrl-C, with every finished result kept on disk."""
    out = Path(args.out)
    try:
        return _cmd_eval(args, echo, on_result)
    except SettingsMismatch as err:
        raise CliError(str(err)) from None
    except KeyboardInterrupt:
        kept, _ = count_results(out)
        echo(f"interrupted; {kept} result(s) kept in {out / 'results'}; rerun the same command to resume")
        return 130


def check_eval_args(args) -> dict:
    """Everything about ``numina eval``'s arguments that can be checked before loading.

    Returns ``{"config", "seeds", "strategies", "enhance"}`` parsed (None when scoring videos)."""
    if bool(args.model) == bool(args.videos):
        raise CliError("give either --model (generate and score) or --videos (score existing videos)")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit {args.limit}: expected a number of prompts >= 1 (leave it out for all)")
    check_positive(args, "steps", "height", "width", "num_frames")
    if args.prompts or args.counts:
        if not (args.prompts and args.counts):
            raise CliError("--prompts and --counts go together (line i of one matches line i of the other)")
        for option, path in (("--prompts", args.prompts), ("--counts", args.counts)):
            if not Path(path).is_file():
                raise CliError(f"{option} {path}: no such file")
    require("matplotlib", "media", "numina eval (the accuracy plot)")
    require("PIL", "media", "numina eval (GIF videos)")
    require("tqdm", "media", "numina eval (progress)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: is a file; expected a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--out {out}: cannot create it ({err.strerror or err})") from None
    checked = {"config": None, "seeds": None, "strategies": None, "enhance": None}
    if args.videos:
        videos = Path(args.videos)
        if not videos.is_dir():
            raise CliError(f"--videos {args.videos}: {'is a file' if videos.exists() else 'no such folder'}; "
                           "expected a folder of videos named by "
                           "prompt line (0007.mp4, 7.gif, 0007/), or of one such folder per strategy")
        try:
            _video_sets(videos, args.index_base)
        except ValueError as err:
            raise CliError(f"--videos {args.videos}: {err}") from None
    if args.model:
        check_model_arg(args.model)
        if args.model == "toy":
            try:
                model_loading.check_toy_frame_size(height=args.height, width=args.width, num_frames=args.num_frames)
            except ValueError as err:
                raise CliError(str(err)) from None
        checked["config"] = parse_config_arg(args.config)
        checked["seeds"] = parse_seed_list(args.seeds)
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if not strategies:
            raise CliError(f"--strategies {args.strategies!r}: no strategy given")
        from .strategies import split_strategy

        for s in strategies:
            try:
                split_strategy(s)
            except ValueError as err:
                raise CliError(f"--strategies: {err}") from None
        if any(s.endswith("+enhance") for s in strategies) and not args.enhance:
            raise CliError("a '+enhance' strategy needs --enhance MODULE:FUNCTION")
        checked["strategies"] = strategies
        checked["enhance"] = _import_callable(args.enhance) if args.enhance else None
        if args.save_videos == "mp4":
            try:
                check_mp4_writer(out)
            except RuntimeError as err:
                raise CliError(f"--save-videos mp4: {err}") from None
    apply_threads(getattr(args, "threads", None))
    return checked


def eval_items(args, detector: str, echo) -> list:
    """The items ``numina eval`` runs: ``--prompts``/``--counts`` when given; else held-out
    toy prompts for the toy model (or toy videos), written to ``OUT/benchmark``; else the
    CountBench copy that ships with the package. ``--limit`` applies to each."""
    if args.prompts:
        return load_benchmark(args.prompts, args.counts, limit=args.limit)
    if args.model == "toy" or (args.videos and detector == "toy"):
        items = toy_benchmark(20 if args.limit is None else args.limit)
        write_benchmark(items, Path(args.out) / "benchmark")
        echo(f"{len(items)} held-out toy prompts (written to {Path(args.out) / 'benchmark'})")
        return items
    items = load_benchmark(*countbench_files(), limit=args.limit)  # the paper's CountBench
    echo(f"CountBench: {len(items)} prompts (the copy that ships with numina-hooks; "
         "--prompts/--counts for other files)")
    return items


def _cmd_eval(args, echo, on_result) -> int:
    from .detectors import make_counter

    checked = check_eval_args(args)
    detector = args.detector or ("toy" if args.model == "toy" else "grounding-dino")
    items = eval_items(args, detector, echo)
    if not items:
        raise CliError(f"{args.prompts}: no prompts to evaluate")
    device = resolve_device(args.device)
    counter = make_counter(detector, args.detector_model, box_threshold=args.box_threshold,
                           text_threshold=args.text_threshold, nms_iou=args.nms_iou,
                           max_box_fraction=args.max_box_fraction, device=device)
    clip = None
    if args.clip:
        from .clip_score import ClipScorer

        clip = ClipScorer(args.clip_model, device=device)
    out = Path(args.out)
    if args.videos:
        summary = score_videos(args.videos, items, counter, out, clip=clip, name=args.name,
                               index_base=args.index_base, echo=echo)
    else:
        model = model_loading.load_model(args.model, steps=args.steps, height=args.height, width=args.width,
                                         num_frames=args.num_frames, guidance_scale=args.guidance_scale,
                                         dtype=resolve_dtype(args.dtype, device), device=device,
                                         config=checked["config"])
        try:
            summary = run_eval(items, model, counter, out, strategies=checked["strategies"], seeds=checked["seeds"],
                               clip=clip, enhance=checked["enhance"],
                               save_videos=None if args.save_videos == "none" else args.save_videos,
                               on_result=on_result, echo=echo)
        finally:
            model.handle.detach()
    from .report import markdown_table

    echo(markdown_table(summary))
    echo(f"results: {out / 'results'}  summary: {out / 'summary.json'}  table: {out / 'table.md'}  "
         f"plot: {out / 'accuracy_by_count.png'}")
    scored = sum(e["own"]["videos"] for e in summary["strategies"].values())
    failed = sum(len(e["errors"]) for e in summary["strategies"].values())
    if scored == 0:
        echo(f"numina eval: nothing was scored ({failed} result(s) failed; see their result files)")
        return 1
    if failed:
        echo(f"numina eval: {failed} of {scored + failed} result(s) failed (see the table's last line); "
             "rerun the same command to retry them")
        return 1
    return 0
