"""benchmarks/gpu_check.py in its CPU smoke mode (``--quick --device cpu``): the JSON has
every field the GPU run's table is built from, and the errors against float64 are small."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import gpu_check  # noqa: E402

FAST = ["lse_backends", "guided_attention", "numina_vs_plain", "identify_reader"]  # compile_graphs: dynamo tracing, ~10 s


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gc")
    code = gpu_check.main(["--quick", "--device", "cpu", "--out", str(out), "--sections", *FAST])
    return code, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_lse_backends_are_all_listed_and_the_installed_ones_are_close_to_float64(quick_run):
    code, res, md = quick_run
    assert code == 0
    lse = res["sections"]["lse_backends"]
    assert set(lse["backends"]) == set(gpu_check.BACKENDS)
    ran = 0
    for name, row in lse["backends"].items():
        for shape in ("cross", "self"):
            r = row[shape]
            if name not in lse["installed"]:
                assert r["status"].startswith("not installed")
            elif r["status"] == "ok":
                ran += 1
                assert r["lse_shape_ok"] and r["lse_dtype"] == "float32"
                assert r["max_abs_error_out"] < 2e-2 and r["max_abs_error_lse"] < 1e-3
            else:
                assert r["status"].startswith("does not run"), r
    assert ran >= 4  # torch-cpu-flash and math, on both shapes
    assert all(s["unguided_sdpa_max_abs_error_out"] < 2e-2 for s in lse["shapes"].values())
    assert "torch-cpu-flash" in md and "not installed" in md


def test_guided_attention_has_ratios_and_small_errors_on_both_layouts(quick_run):
    _, res, _ = quick_run
    ga = res["sections"]["guided_attention"]
    assert set(ga["layouts"]) == {"contiguous", "wan-views"}
    views = ga["layouts"]["wan-views"]
    assert views["q_stride"][1] < views["q_stride"][2]  # heads interleaved: a view of [B, L, H, d]
    for run in ga["layouts"].values():
        assert set(run["time_ratio"]) == set(run["memory_ratio"]) == {"sparse/mixed", "sparse/share", "dense/mixed"}
        assert all(len(r) == ga["rounds"] for r in run["time_ratio_per_round"].values())
        assert all(x > 0 for x in run["time_ratio"].values())
        for errs in run["max_abs_error_vs_float64"].values():
            assert errs["sparse"] < 3e-2 and errs["dense"] < 3e-2 and errs["unguided_sdpa_no_edits"] < 2e-2


def test_numina_vs_plain_really_guides_and_counts_forwards(quick_run):
    _, res, md = quick_run
    nv = res["sections"]["numina_vs_plain"]
    assert nv["phase2_guided"] and nv["reports"][-1]["guided_steps"]
    plain, numina = nv["cases"]["plain"], nv["cases"]["numina"]
    steps = nv["config"]["steps"]
    assert plain["transformer_forwards"] == 2 * steps  # cond + uncond per step, no hooks
    assert numina["transformer_forwards"] == sum(nv["reports"][-1]["model_calls"].values()) > plain["transformer_forwards"]
    assert plain["output_finite"] and numina["output_finite"]
    assert nv["numina_forwards_ratio"] > 1 and "NUMINA / plain" in md


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(device, sz):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(gpu_check.SECTIONS, "guided_attention", broken)
    code = gpu_check.main(["--quick", "--device", "cpu", "--out", str(tmp_path),
                           "--sections", "guided_attention", "lse_backends"])
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 1
    assert res["sections"]["guided_attention"]["error"] == "RuntimeError: kernel exploded"
    assert "ok" in json.dumps(res["sections"]["lse_backends"])
    assert "failed: RuntimeError: kernel exploded" in (tmp_path / "gpu_check.md").read_text()


def test_asking_for_cuda_without_a_gpu_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--out", str(tmp_path)])


def test_identify_reader_is_timed_and_reads_the_cpu_layouts(quick_run):
    _, res, md = quick_run
    ir = res["sections"]["identify_reader"]
    assert "error" not in ir, ir.get("error")
    assert ir["grid"] == [15, 26] and ir["heads"] == 12 and len(ir["counts"]) == ir["frames"] == 2
    assert ir["seconds_per_frame_and_noun"] > 0 and ir["products_seconds_per_frame"] > 0
    assert ir["same_layouts_as_cpu"] and ir["max_lift_difference_vs_cpu"] < 1e-5
    assert ir["layout_from_attention_on_device_same"]
    assert "**Identify reader**" in md and "ms per frame and noun" in md
