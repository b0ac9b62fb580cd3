"""The ``numina`` command."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Optional, Sequence


def _cmd_hooks_tour(args: argparse.Namespace) -> int:
    """Run a tiny random-weight Wan pipeline and print what the hooks saw."""
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
        plain = pipe(prompt=args.prompt, generator=torch.Generator().manual_seed(args.seed), **kwargs).frames
        with numina_hooks.attach(pipe, tour) as handle:
            hooked = handle(prompt=args.prompt, generator=torch.Generator().manual_seed(args.seed), **kwargs).frames
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from numina_hooks.demo import run_demo

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    run_demo(out_dir=args.out, prompts=args.prompts, seeds=seeds, steps=args.steps, json_path=args.json)
    return 0


def _parse_counts_arg(text: Optional[str]) -> Optional[dict]:
    """``"cats=3,dogs=2"`` -> ``{"cats": 3, "dogs": 2}``."""
    if not text:
        return None
    counts = {}
    for part in text.split(","):
        noun, sep, n = part.partition("=")
        if not sep or not noun.strip() or not n.strip().isdigit():
            raise SystemExit(f"--counts {text!r}: expected noun=int pairs separated by commas, e.g. cats=3,dogs=2")
        counts[noun.strip()] = int(n)
    return counts


def _load_pipeline(model: str, dtype: str, device: str):
    import torch
    from diffusers import DiffusionPipeline

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    pipe = DiffusionPipeline.from_pretrained(model, dtype=torch_dtype)
    if type(pipe).__name__.startswith("Wan") and getattr(pipe, "vae", None) is not None:
        pipe.vae.to(torch.float32)  # Wan's VAE is meant to run in float32
    return pipe.to(device)


def write_video(frames, path) -> None:
    """Write ``frames`` (float [F, H, W, 3] in [0, 1], or uint8) as a GIF, or MP4 via diffusers."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in arr]
        images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)
    else:
        from diffusers.utils import export_to_video

        export_to_video([f for f in arr], str(path), fps=16)


def _cmd_generate(args: argparse.Namespace) -> int:
    import json

    import torch

    import numina_hooks
    from numina_hooks.numina.config import NuminaConfig

    pipe = _load_pipeline(args.model, args.dtype, args.device)
    config = NuminaConfig(**json.loads(args.config)) if args.config else NuminaConfig()
    call = dict(num_inference_steps=args.steps, output_type="np")
    for name in ("height", "width", "num_frames", "guidance_scale"):
        value = getattr(args, name)
        if value is not None:
            call[name] = value
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    counts = _parse_counts_arg(args.counts)
    with numina_hooks.attach(pipe, config=config) as numina:
        if args.plain:
            out = numina.run_pipeline(prompt=args.prompt, generator=generator, **call)
            report = None
        else:
            out = numina(prompt=args.prompt, counts=counts, generator=generator, **call)
            report = out.numina
    write_video(out.frames[0], args.out)
    print(f"video: {args.out}")
    if report is not None:
        summary = report.summary()
        print(f"asked: {summary['counts_asked']}  found in phase 1 (per frame): {summary['counts_found']}")
        print(f"phase 2 ran: {summary['phase2_ran']} ({summary['reason']})")
        print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["timings"].items()))
        if args.report:
            print(f"report: {report.save(args.report)}")
    return 0


def _branch(branch) -> str:
    return "+".join(branch) if isinstance(branch, tuple) else str(branch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numina", description="Count-accurate text-to-video with NUMINA hooks.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the embedded default: plain vs NUMINA on the shipped toy model")
    demo.add_argument("--out", default="numina-out/demo", help="folder for the GIF and the layout pictures")
    demo.add_argument("--prompts", type=int, default=4, help="how many held-out toy prompts")
    demo.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    demo.add_argument("--steps", type=int, help="denoising steps (default: the toy model's 20)")
    demo.add_argument("--json", help="write the figures to this JSON file")
    demo.set_defaults(func=_cmd_demo)

    tour = sub.add_parser("tour", help="what the hooks see on a tiny random-weight Wan pipeline")
    tour.add_argument("--prompt", default="three cats chasing two dogs")
    tour.add_argument("--steps", type=int, default=4)
    tour.add_argument("--seed", type=int, default=0)
    tour.add_argument("--two-transformers", action="store_true", help="a Wan2.2 A14B-style pipeline")
    tour.set_defaults(func=_cmd_hooks_tour)

    gen = sub.add_parser("generate", help="NUMINA generation with any diffusers Wan / CogVideoX model")
    gen.add_argument("--model", required=True, help="model id (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or local folder")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--counts", help="override the parsed counts: noun=int,noun=int")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--steps", type=int, default=50)
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--num-frames", dest="num_frames", type=int)
    gen.add_argument("--guidance-scale", dest="guidance_scale", type=float)
    gen.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    gen.add_argument("--device", default="cuda" if _cuda() else "cpu")
    gen.add_argument("--config", help='NuminaConfig fields as JSON, e.g. \'{"cross_head": "mean"}\'')
    gen.add_argument("--plain", action="store_true", help="run the plain pipeline (no NUMINA) for comparison")
    gen.add_argument("--out", default="numina-out/video.gif", help="output video (.gif, or .mp4 with imageio-ffmpeg)")
    gen.add_argument("--report", help="folder for the report pictures and summary.json")
    gen.set_defaults(func=_cmd_generate)

    from numina_hooks.eval import runner as eval_runner

    ev = sub.add_parser("eval", help="CountBench-style evaluation of strategies side by side (docs/eval.md)")
    eval_runner.add_arguments(ev)
    ev.set_defaults(func=eval_runner.cmd_eval)
    return parser


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
