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


def _branch(branch) -> str:
    return "+".join(branch) if isinstance(branch, tuple) else str(branch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numina", description="Count-accurate text-to-video with NUMINA hooks.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the embedded default: what the hooks see on a tiny Wan pipeline")
    demo.add_argument("--prompt", default="three cats chasing two dogs")
    demo.add_argument("--steps", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--two-transformers", action="store_true", help="a Wan2.2 A14B-style pipeline")
    demo.set_defaults(func=_cmd_hooks_tour)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
