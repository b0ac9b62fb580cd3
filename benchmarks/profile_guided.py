"""Where one guided cross-attention call spends its time: torch.profiler's table.

    python benchmarks/profile_guided.py [--device cuda] [--video 32760] [--mix mixed]

Inputs as in ``gpu_check.py``'s guided section (Wan2.1-1.3B size by default: 32760 video
queries as ``[B, H, L, d]`` views of ``[B, L, H, d]``, 512 text keys, 12 heads of 128,
bfloat16, 30% of rows edited). Prints the operators sorted by device time (CPU time on
CPU) and the number of kernel launches, after three warm-up calls.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    from bench_guided_attention import make_edits
    from gpu_check import _on, _qkv

    from numina_hooks.attention import guided_attention

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--video", type=int, default=32760)
    p.add_argument("--mix", default="mixed", choices=["mixed", "share"])
    p.add_argument("--rows", type=int, default=25, help="rows of the table")
    a = p.parse_args(argv)
    sz = dict(heads=12, dim=128, text=512, video=a.video)
    g = torch.Generator().manual_seed(0)
    q, k, v = _qkv("wan-views", sz, a.device, g)
    spec = dict(batch=1, heads=12, dim=128, text=512, video=a.video, joint=False, row=0)
    edits = _on(a.device, make_edits(a.mix, spec, q, k, g))
    for _ in range(3):
        guided_attention(q, k, v, edits)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if a.device.startswith("cuda"):
        acts.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=acts) as prof:
        guided_attention(q, k, v, edits)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if a.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
