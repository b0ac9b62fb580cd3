"""``numina eval`` end to end on the shipped toy model with its exact counter: every
strategy, interrupted right after the first result is written, resumed, then the saved
videos scored again with ``--videos``."""

import json

import pytest
import torch

from numina_hooks import cli
from numina_hooks.eval import benchmark, model_loading, run

STRATEGIES = ["plain", "seed-search", "numina", "numina+seed-search", "layout-seeds"]
ARGS = ["eval", "--model", "toy", "--limit", "2", "--steps", "4", "--seeds", "1..2",
        "--strategies", ",".join(STRATEGIES)]


class Interrupt(KeyboardInterrupt):
    pass


def _results(out):
    return {(p.parent.name, p.name): json.loads(p.read_text()) for p in (out / "results").glob("*/*.json")}


@pytest.mark.slow  # 3-10 s on one CPU thread (measured)
def test_eval_toy_all_strategies_interrupted_resumed_and_rescored(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "eval"
    args = ARGS + ["--out", str(out)]

    # 1. Ctrl-C right after the first result is on disk
    real_write = run.atomic_write_json
    writes = []

    def write_then_interrupt(path, data):
        real_write(path, data)
        if "results" in str(path):
            writes.append(path)
            raise Interrupt()

    monkeypatch.setattr(run, "atomic_write_json", write_then_interrupt)
    assert cli.main(args) == 130  # no traceback: a message, and what was done stays
    assert "interrupted; 1 result(s) kept in" in capsys.readouterr().out
    monkeypatch.setattr(run, "atomic_write_json", real_write)
    first = _results(out)
    assert list(first) == [("plain", "0000.json")]
    assert not list(out.rglob("*.tmp*"))  # nothing half-written
    kept = (out / "results" / "plain" / "0000.json").read_text()

    # 2. the rerun skips it and does the rest
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "1 result(s) already in" in text
    assert (out / "results" / "plain" / "0000.json").read_text() == kept
    results = _results(out)
    assert sorted(results) == sorted((s, f"{i:04d}.json") for s in STRATEGIES for i in (0, 1))
    for (strategy, _), r in results.items():
        assert "error" not in r, r
        assert r["strategy"] == strategy and set(r["counts_found"]) == set(r["counts"])
        assert all(len(v) == r["frames"] == 4 for v in r["counts_found"].values())
        assert 0 <= r["count_acc"] <= 1 and 0 <= r["tc"] <= 1
        assert r["counter"]["kind"] == "toy"
        assert (out / r["video"]).exists()
    for i in (0, 1):
        plain = results[("plain", f"{i:04d}.json")]
        search = results[("seed-search", f"{i:04d}.json")]
        layout = results[("layout-seeds", f"{i:04d}.json")]
        # the run-1 plain video is seed-search's seed-1 candidate, regenerated in run 2: same counts
        assert search["candidates"][0]["seed"] == 1 and search["candidates"][0]["counts"] == plain["counts_found"]
        assert search["count_acc"] == max(c["count_acc"] for c in search["candidates"])
        edits = [c["edits_needed"] for c in layout["candidates"]]
        assert layout["seed"] == layout["seeds"][edits.index(min(edits))]
        assert results[("numina", f"{i:04d}.json")]["numina"]["counts_asked"] == plain["counts"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["common_items"] == 2 and list(summary["strategies"]) == STRATEGIES
    table = (out / "table.md").read_text()
    assert "| plain |" in table and "| + layout-seeds |" in table
    assert (out / "accuracy_by_count.png").stat().st_size > 1000
    settings = json.loads((out / "settings.json").read_text())
    assert settings["identity"]["counter"]["kind"] == "toy" and settings["identity"]["seeds"] == [1, 2]
    assert settings["identity"]["call"]["num_inference_steps"] == 4

    # 3. a third run has nothing left to do; other settings into the same folder are refused
    assert cli.main(args) == 0
    assert "10 result(s) already in" in capsys.readouterr().out
    assert cli.main(ARGS[:-4] + ["--seeds", "1..3", "--out", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err

    # 4. the saved videos, scored again from disk, give the same counts
    rescored = tmp_path / "rescored"
    assert cli.main(["eval", "--videos", str(out / "videos"), "--prompts", str(out / "benchmark" / "prompts.txt"),
                     "--counts", str(out / "benchmark" / "noun_counts.jsonl"), "--detector", "toy",
                     "--out", str(rescored)]) == 0
    again = _results(rescored)
    assert sorted(again) == sorted(results)
    for key, r in again.items():
        assert r["counts_found"] == results[key]["counts_found"], key


def test_eval_real_pipeline_folder_with_tiny_grounding_dino(tmp_path):
    """The real-model path offline: a (tiny, random) Wan pipeline saved to a folder and loaded
    by ``load_model`` through ``DiffusionPipeline.from_pretrained``, counted by a (tiny,
    random) GroundingDINO: plumbing, not accuracy."""
    from test_eval_detectors import build_tiny_grounding_dino

    from numina_hooks import testing
    from numina_hooks.eval.detectors import ZeroShotDetector

    torch.set_num_threads(1)
    testing.tiny_wan_pipeline().save_pretrained(tmp_path / "wan")
    model = model_loading.load_model(str(tmp_path / "wan"), steps=4, height=64, width=64, num_frames=9, dtype="fp32",
                              device="cpu")
    model.call["max_sequence_length"] = 24
    gd_model, processor = build_tiny_grounding_dino()
    detector = ZeroShotDetector("grounding-dino", model=gd_model, processor=processor, box_threshold=0.0,
                                text_threshold=0.0, nms_iou=1.0, device="cpu")
    items = [benchmark.EvalItem(0, "two cats chasing a dog", {"cats": 2, "dog": 1})]
    out = tmp_path / "eval"
    try:
        summary = run.run_eval(items, model, detector, out, strategies=["plain", "numina", "layout-seeds"],
                                  seeds=[1, 2], save_videos=None, echo=lambda *_: None)
    finally:
        model.handle.detach()
    assert summary["common_items"] == 1
    for strategy in ("plain", "numina", "layout-seeds"):
        r = json.loads((out / "results" / strategy / "0000.json").read_text())
        assert "error" not in r, r.get("traceback")
        # 9 decoded frames, every one of the 12 queries a box (threshold 0, NMS off)
        assert r["frames"] == 9 and r["counts_found"] == {"cats": [12] * 9, "dog": [12] * 9}
        assert r["count_acc"] == 0.0 and r["tc"] == 1.0
        assert r["counter"]["box_threshold"] == 0.0 and r["counter"]["kind"] == "grounding-dino"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["identity"]["model"] == str(tmp_path / "wan")
    assert settings["identity"]["call"]["num_frames"] == 9


def test_threads_option_is_checked_and_applied(tmp_path, capsys, monkeypatch):
    assert cli.main(["eval", "--model", "toy", "--limit", "1", "--threads", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--threads 0" in capsys.readouterr().err
    before = torch.get_num_threads()
    try:
        # --threads is applied once the arguments are checked, before anything loads
        monkeypatch.setattr(model_loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert cli.main(["eval", "--model", "toy", "--limit", "1", "--threads", "2",
                         "--out", str(tmp_path / "b")]) == 130
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
