"""Run every benchmark and write ``docs/benchmarks.md``.

    python benchmarks/run_all.py [--quick]

Each benchmark runs in its own process (its JSON and markdown land in
``benchmarks/results/``); this script then assembles the tables, with the machine
each was measured on, into ``docs/benchmarks.md``. Every figure is a ratio measured
side by side within one run of one benchmark.

Exit status: 0 when every benchmark ran and met its aims; 1 when one missed an aim (it
exited 1: the benchmarks that check their aims say so in their docstring) or crashed.
Not part of the test suite: timings belong to a machine, not to a commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "benchmarks.md"

# (script, quick args, full args, title, what it measures and the aim)
BENCHMARKS = [
    ("bench_idle_overhead.py", ["--quick"], [], "Hooked but idle",
     "What numina-hooks costs attached with no plugin acting and with an observer (one `on_attention` "
     "reading `view.layer`), against the unhooked pipeline: wall clock of a whole generation at 144, 3072 "
     "and 32760 video tokens (tiny Wan pipelines; the main one 6 blocks, 8 steps); the fixed cost per "
     "attention call in microseconds, in situ (forwards of the 144-token transformer) and of the hook path "
     "alone at each size; tensor value reads per generation. Aims, checked (issue 16), at 144 tokens: "
     "1.02 without a plugin and 1.05 with the observer end to end, the observer at most 20 us per "
     "attention call in situ, outputs bit-identical."),
    ("bench_guided_attention.py", ["--quick", "--threads", "1"], ["--threads", "1"], "Guided cross-attention",
     "One guided attention call (sparse exact path) against the unguided call on the same q/k/v, on the "
     "layouts the adapters hand over: Wan2.1-1.3B size as [B, L, H, d] views (diffusers Wan, DiffSynth, "
     "official Wan) and CogVideoX joint attention (contiguous, text + video keys, fewer video tokens). "
     "Aims, checked: time and peak-memory ratio at most 1.10."),
    ("bench_identify.py", ["--seeds", "1"], [], "Identify stage",
     "The phase-1 reader (`LayoutReader`) from the kernel's q/k, seconds per frame and noun at 15x26, "
     "30x52 (Wan2.1-1.3B, 12 heads of 128) and 45x78 patches, one thread, reading from q/k against "
     "building the maps first, with the growth exponent; and count accuracy on twelve families of "
     "synthetic DiT-like scenes (`rope`, `multi`, `crowd`, `spread`, `early`, `video`, `heldout`, `joint` and `partial` written blind to the identify code). Aim, checked (issue 16): at most 0.05 s per frame and noun at 30x52, the same layouts "
     "as from the maps."),
    ("bench_focus_clustering.py", ["--rounds", "3"], [], "Focus clustering",
     "The focus mask's DBSCAN membership computed with two grid filters (`layout.dbscan_members`, the "
     "default) against scikit-learn's DBSCAN on the same thresholded cross maps (three synthetic scene "
     "families, 30x52), one thread, order alternating per round. Aim, checked: the same pixels, at most "
     "0.5x the time."),
    ("bench_parse_counts.py", [], [], "Counts from prompts", "Exact-match rate of parse_counts on CountBench. Aim: 95%."),
    ("bench_numina.py", ["--quick"], [], "NUMINA vs plain generation",
     "Transformer calls, wall clock and peak memory of a NUMINA generation relative to the unhooked "
     "pipeline, for the match and mismatch cases, with EasyCache (tau 0.05) in both passes, in phase 1 "
     "only, and without; and the guided pass's wall clock per call relative to plain's. Aims, checked "
     "(paper: 1.48x wall clock, 1.22x with EasyCache): NUMINA + EasyCache at most 1.25x the calls in the "
     "mismatch case and 1.0x in the match case (where EasyCache skips calls of plain generation: the "
     "trained toy), peak memory within 5% of plain, guided pass at most 1.25x plain's wall clock per "
     "call. Three model sizes: the toy, a random Wan at 144 and at 576 video tokens."),
    ("bench_compile.py", ["--quick"], [], "torch.compile",
     "Graphs and graph breaks (`torch._dynamo.explain`) of a compiled tiny Wan and CogVideoX transformer: "
     "plain, attached with no plugin acting, attached with an observer, and a whole NUMINA generation; "
     "inductor forward time plain vs attached-idle. Aim, checked: attached-idle has the plain graph and "
     "break counts."),
    ("bench_easycache.py", ["--quick"], [], "EasyCache alone",
     "Speed-up and output difference (PSNR against the plain result) at several tau. Published for "
     "Wan2.1 (50 steps, warm-up 10): tau 0.05 baseline quality, 0.1 about 2x, 0.2 about 3x; 2.54x at "
     "PSNR 25.2 dB on Wan2.1-1.3B."),
]


#: the section on the GPU check, which run_all does not run (it needs a CUDA GPU)
GPU_CHECK = (
    "`bash scripts/gpu-check.sh OUTDIR` (on a machine with one CUDA GPU; not run by `run_all.py`) runs "
    "`benchmarks/gpu_check.py` and writes `OUTDIR/gpu_check.json` and `OUTDIR/gpu_check.md`; copy the latter "
    "to `benchmarks/results/gpu_check.md` for this section. It measures, in bfloat16: the max abs error of "
    "every installed LSE backend (torch flash and efficient, flash-attn, xformers, ...) against a float64 "
    "reference, next to torch SDPA's; one guided cross-attention call (sparse path, and the dense-bias path) "
    "against the unguided SDPA call at Wan2.1-1.3B size (32760 video tokens, 512 text, 12 heads of 128), on "
    "contiguous tensors and on the [B, L, H, d] views diffusers' Wan passes: time (CUDA events, median of "
    "per-round ratios, order rotated) and peak allocated memory; NUMINA (counts the random layout does not have; the "
    "JSON records that the guided phase 2 ran) against the unhooked pipeline on a randomly initialised full-size Wan2.1-1.3B "
    "transformer, 480x832, 81 frames, 5 steps: wall clock, transformer forwards, peak memory; and "
    "`torch._dynamo.explain` graph and graph-break counts of a small Wan transformer, plain and attached; and "
    "phase 1's identify reader from q/k on the GPU at 30x52 (12 heads of 128, 3 frames): seconds per frame and "
    "noun, the frame's bare q.k products there, whether its layouts equal those read on the CPU, and whether "
    "`layout_from_attention` on maps that live on the GPU gives the CPU's layout (a section added after the run "
    "below, so not in it). Each part reports its own error without stopping the others. Wheels in `.whl/` (diffusers) are "
    "installed offline first; `--quick --device cpu` is a one-minute smoke run of the same code."
)

#: the scripts next to the benchmarks that run_all does not run (one paragraph of the doc)
RESEARCH_SCRIPTS = (
    "Research scripts, not part of the installed package, live next to the benchmarks: "
    "`toy_identify_study.py` (phase 1's layout against the toy video's true objects, docs/toy.md), "
    "`study_toy_guidance.py`, `study_toy_cross_maps.py` and `eval_toy_end_to_end.py` (docs/method.md, "
    "docs/toy.md), and the synthetic attention scenes `synthetic_scenes.py`, "
    "`synthetic_shared_scenes.py`, `synthetic_feature_scenes.py`, `synthetic_rope_scenes.py`, "
    "`synthetic_multi_scenes.py`, `synthetic_crowd_scenes.py`, `synthetic_spread_scenes.py`, "
    "`synthetic_early_scenes.py`, `synthetic_video_scenes.py`, `synthetic_heldout_scenes.py`, `synthetic_joint_scenes.py` and `synthetic_partial_scenes.py` (each family described in docs/identify-evidence.md) that "
    "`bench_identify.py` and the tests use; `compare_layout_versions.py OLD_TREE NEW_TREE` times two "
    "source trees' layout stage side by side on the same frames and checks that they read the same "
    "layouts (what a speed change of the layout must show; its table follows the identify stage's); "
    "`ablate_identify.py` switches each rule of the default layout stage off in turn on fresh "
    "development seeds, the families written blind apart, and with `--settings` compares other values "
    "of the default's settings the same way (their tables follow the identify stage's too); "
    "`study_bump_self_evidence.py` measures whether the self-attention tells the noun map's clutter "
    "bumps from its objects in the frames read from the map (a study; its table follows too)."
)

#: benchmarks that exit 1 when an aim is missed
CHECKS_AIMS = ("bench_idle_overhead.py", "bench_guided_attention.py", "bench_identify.py", "bench_numina.py",
               "bench_compile.py", "bench_focus_clustering.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (minutes instead of tens of minutes)")
    parser.add_argument("--only", nargs="*", help="run only these scripts (names as in BENCHMARKS)")
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    failures, missed = [], []
    for script, quick, full, title, _ in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        if not (HERE / script).exists():
            print(f"-- {script}: not present, skipped")
            continue
        print(f"-- {title}: {script}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)], env=env)
        print(f"   {time.perf_counter() - t0:.0f} s, exit {proc.returncode}")
        if proc.returncode == 1:
            missed.append(script)
        elif proc.returncode:
            failures.append(script)
    write_doc()
    print(f"wrote {DOC}")
    if missed:
        print("aims missed: " + ", ".join(missed))
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures or missed else 0


def write_doc() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Made by `python benchmarks/run_all.py` (add `--quick` for a smoke run); each section is the",
        "markdown its benchmark wrote to `benchmarks/results/`, with the machine it ran on. Ratios are",
        "measured side by side within one run (in the benchmarks that check their aims: per round, in an",
        "order rotated each round, against the unhooked pipeline or the unguided call). CPU figures come",
        "from a shared 2-core machine: treat small differences as noise. GPU figures are in the last",
        "section (the GPU check, run by hand on a lent GPU). docs/attention.md links here for its",
        "figures rather than repeating them.",
        "",
        "Benchmarks that check their aims (exit 1 when one is missed, and `run_all.py` then exits non-zero): "
        + ", ".join(f"`{b}`" for b in CHECKS_AIMS) + ". The others report only.",
        "",
        RESEARCH_SCRIPTS,
        "",
    ]
    stems = {
        "bench_idle_overhead.py": "idle_overhead", "bench_guided_attention.py": "guided_attention",
        "bench_identify.py": "identify", "bench_focus_clustering.py": "focus_clustering",
        "bench_parse_counts.py": "parse_counts", "bench_numina.py": "numina",
        "bench_easycache.py": "easycache", "bench_compile.py": "compile",
    }
    for script, _, _, title, what in BENCHMARKS:
        md = RESULTS / f"{stems[script]}.md"
        parts += [f"## {title}", "", what, "", f"`python benchmarks/{script}`", ""]
        parts += [md.read_text().strip() if md.exists() else "_not measured yet_", ""]
        extras = [*sorted(RESULTS.glob(f"{stems[script]}_heads*.md")),  # bench_identify.py --heads N
                  *sorted(RESULTS.glob(f"{stems[script]}_sizes.md")),  # bench_identify.py --object-sizes
                  *sorted(RESULTS.glob(f"{stems[script]}_bars.md")),  # bench_identify.py --object-shapes
                  *sorted(RESULTS.glob(f"{stems[script]}_grid_*.md")),  # bench_identify.py --large-grid
                  *sorted(RESULTS.glob(f"{stems[script]}_instance_share_*.md")),  # --instance-share
                  *sorted(RESULTS.glob(f"{stems[script]}_absent.md")),  # bench_identify.py --absent
                  *sorted(RESULTS.glob(f"{stems[script]}_clutter.md")),  # bench_identify.py --clutter
                  *sorted(RESULTS.glob(f"{stems[script]}_blur_*.md")),  # bench_identify.py --blur SIGMA
                  *sorted(RESULTS.glob(f"{stems[script]}_multi_all_nouns.md")),  # --all-nouns
                  *sorted(RESULTS.glob(f"{stems[script]}_ablation.md")),  # ablate_identify.py
                  *sorted(RESULTS.glob(f"{stems[script]}_sensitivity*.md")),  # ablate_identify.py --settings
                  *sorted(RESULTS.glob(f"{stems[script]}_layout_cost*.md")),  # --layout-cost JSON (copies named by what they changed)
                  *sorted(RESULTS.glob(f"{stems[script]}_row_sums_cost.md")),  # --row-sums-cost
                  *sorted(RESULTS.glob(f"{stems[script]}_bump_self_evidence.md")),  # study_bump_self_evidence.py
                  *(sorted(RESULTS.glob("layout_versions*.md")) if script == "bench_identify.py" else [])]
        for extra in extras:
            parts += ["##" + extra.read_text().strip(), ""]
    gpu = RESULTS / "gpu_check.md"
    parts += ["## GPU check", "", GPU_CHECK, ""]
    parts += [gpu.read_text().strip() if gpu.exists() else "_not measured yet: no GPU run so far_", ""]
    DOC.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    sys.exit(main())
