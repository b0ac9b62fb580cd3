"""EasyCache alone: speed-up and output difference against the plain pipeline, at several tau.

Two subjects, each run plain and with ``EasyCache(tau)`` side by side in one run:

* ``toy``: the shipped trained toy model (a real ``WanTransformer3DModel`` through
  ``WanPipeline``) at the published Wan2.1 schedule: 50 steps, warm-up 10 (``--quick``:
  20 steps, warm-up 4). Its outputs are pictures, so PSNR (dB, uint8 frames) is the
  same measure the EasyCache paper reports;
* ``wan-random``: the proportionate random-weight Wan of the other benchmarks (6 blocks,
  4 heads x 32, 96x96, 13 frames), 20 steps, warm-up 4; PSNR on the latents with the
  plain latents' range as the peak.

Speed-up = plain wall clock / cached wall clock (median over repeats); calls = transformer
forwards that really ran.

    python benchmarks/bench_easycache.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_line  # noqa: E402

import numina_hooks  # noqa: E402
from numina_hooks import EasyCache, testing  # noqa: E402
from numina_hooks.numina.generate import CallCounter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TAUS = (0.0, 0.05, 0.1, 0.2, 0.4)
TOY_PROMPTS = (
    "three red discs and two blue squares drifting",
    "a yellow triangle beside four red discs",
    "five blue squares moving slowly",
    "two yellow triangles and six red discs",
)


def psnr(reference: np.ndarray, other: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (inf when identical)."""
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def _subjects(quick: bool):
    from numina_hooks.toy.model import TOY_CALL, load_toy_pipeline, toy_frames

    steps = 20 if quick else 50
    toy = load_toy_pipeline()
    toy_call = dict(TOY_CALL, num_inference_steps=steps)
    yield "toy", toy, toy_call, TOY_PROMPTS[: 2 if quick else 4], steps // 5, (lambda out: toy_frames(out), 255.0)

    wan = testing.tiny_wan_pipeline(num_layers=6, heads=4, head_dim=32)
    wan_call = dict(testing.WAN_CALL, num_inference_steps=20, output_type="latent", height=96, width=96, num_frames=13)
    yield "wan-random", wan, wan_call, ("three cats chasing two dogs in a park",), 4, (
        lambda out: out.frames.float().numpy(), None)


def _generate(pipe, call, prompts, cache):
    counter = CallCounter()
    handle = numina_hooks.attach(pipe, counter, cache) if cache is not None else None
    outs = []
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            for i, prompt in enumerate(prompts):
                outs.append(pipe(prompt=prompt, generator=torch.Generator().manual_seed(i), **call))
        seconds = time.perf_counter() - t0
        calls = counter.calls
    finally:
        if handle is not None:
            handle.detach()
    return outs, seconds, calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: OpenMP threads waiting for a busy core distort ratios)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    result = {"machine": describe(), "subjects": {}}
    for name, pipe, call, prompts, warmup, (to_array, peak) in _subjects(args.quick):
        pipe.set_progress_bar_config(disable=True)
        steps = call["num_inference_steps"]
        per_step = 2 if call.get("guidance_scale", 1.0) > 1.0 else 1
        _generate(pipe, call, prompts[:1], None)  # warm-up
        seconds = {tau: [] for tau in ("plain",) + TAUS}
        arrays, calls = {}, {}
        for _ in range(repeats):  # interleaved, so drift hits every setting alike
            for tau in ("plain",) + TAUS:
                cache = None if tau == "plain" else EasyCache(error_threshold=tau, warmup=warmup)
                outs, sec, n = _generate(pipe, call, prompts, cache)
                seconds[tau].append(sec)
                arrays[tau] = [to_array(o) for o in outs]
                calls[tau] = n if cache is not None else per_step * steps * len(prompts)
        plain_sec = statistics.median(seconds["plain"])
        rows = {}
        for tau in TAUS:
            values = []
            for ref, got in zip(arrays["plain"], arrays[tau]):
                p = peak if peak is not None else float(ref.max() - ref.min())
                values.append(psnr(ref, got, p))
            finite = [v for v in values if math.isfinite(v)]
            rows[str(tau)] = {
                "speedup": plain_sec / statistics.median(seconds[tau]),
                "calls": calls[tau],
                "calls_ratio": calls[tau] / calls["plain"],
                "psnr_db": statistics.mean(finite) if len(finite) == len(values) else math.inf,
                "identical": all(np.array_equal(a, b) for a, b in zip(arrays["plain"], arrays[tau])),
            }
        result["subjects"][name] = {
            "steps": steps, "warmup": warmup, "prompts": len(prompts), "plain_seconds": plain_sec, "taus": rows,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "easycache.json").write_text(json.dumps(result, indent=2, default=str))
    md = ["| subject | tau | speed-up (wall clock) | transformer calls / plain | PSNR vs plain (dB) |",
          "|---|---|---|---|---|"]
    for name, sub in result["subjects"].items():
        for tau, r in sub["taus"].items():
            quality = "identical" if r["identical"] else f"{r['psnr_db']:.1f}"
            md.append(f"| {name} ({sub['steps']} steps, warm-up {sub['warmup']}) | {tau} | {r['speedup']:.2f}x | "
                      f"{r['calls_ratio']:.2f} | {quality} |")
    md += ["", f"machine: {machine_line(result['machine'])}."]
    (RESULTS / "easycache.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
