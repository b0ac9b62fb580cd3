"""Scores of hand-made count sequences, strategy choices with a scripted model, inputs, and
the summary table with known deltas."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from numina_hooks.eval.report import markdown_table, summarize_results
from numina_hooks.eval.benchmark import EvalItem, load_benchmark
from numina_hooks.eval.results import atomic_write_json, result_path
from numina_hooks.eval.scoring import find_videos
from numina_hooks.media import read_video
from numina_hooks.options import parse_seeds
from numina_hooks.eval.strategies import EvalModel, PromptSession, run_strategy, score_counts, split_strategy


# ---------------------------------------------------------------------------- metrics on known sequences
def test_score_counts_known_answers():
    target = {"cats": 3, "dogs": 2}
    counts = {"cats": [3, 3, 2, 3], "dogs": [2, 1, 1, 2]}
    # frames: (1 + 1)/2, (1 + 0)/2, (0 + 0)/2, (1 + 1)/2 -> 2.5 / 4
    # pairs: cats same, dogs changed | cats changed, dogs same | cats changed, dogs changed -> 2 / 6
    assert score_counts(counts, target) == {"count_acc": pytest.approx(0.625), "tc": pytest.approx(1 / 3)}
    assert score_counts({"cats": [3]}, {"cats": 3}) == {"count_acc": 1.0, "tc": None}
    assert score_counts({"cats": [0, 0, 0]}, {"cats": 1}) == {"count_acc": 0.0, "tc": 1.0}


# ---------------------------------------------------------------------------- strategies, scripted
class ScriptedCounter:
    """Frames encode counts: frame value v means v objects of every noun."""

    settings = {"kind": "scripted"}

    def count(self, frames, nouns):
        return {n: [int(f[0, 0, 0]) for f in frames] for n in nouns}


class ScriptedHandle:
    """A handle whose video for seed s has ``plain[s]`` (or ``numina[s]``) objects per frame,
    and whose layout for seed s needs ``edits[s]`` edits."""

    def __init__(self, plain, numina, edits):
        self.plain, self.numina, self.edits = plain, numina, edits
        self.calls = []

    @staticmethod
    def _video(per_frame):
        return SimpleNamespace(frames=np.array(per_frame, dtype=np.uint8)[:, None, None, None].repeat(3, -1))

    def run_pipeline(self, prompt, generator, **kw):
        seed = generator.initial_seed()
        self.calls.append(("plain", seed, prompt))
        return self._video(self.plain[seed])

    def __call__(self, prompt, counts, generator, **kw):
        seed = generator.initial_seed()
        self.calls.append(("numina", seed, prompt))
        out = self._video(self.numina[seed])
        out.numina = SimpleNamespace(summary=lambda: {"phase2_ran": True, "counts_found": {}})
        return out

    def read_layout(self, prompt, counts, generator, **kw):
        seed = generator.initial_seed()
        self.calls.append(("layout", seed, prompt))
        noun = next(iter(counts))
        found = [counts[noun] + self.edits[seed]] + [counts[noun]] * 3
        return SimpleNamespace(counts_asked=dict(counts), counts_found={noun: found})


def _session(handle, enhance=None):
    model = EvalModel(handle, {}, lambda out: out.frames)
    return PromptSession(model, ScriptedCounter(), "two cats", {"cats": 2}, enhance=enhance)


def test_strategies_choose_as_specified_and_share_generations():
    handle = ScriptedHandle(
        plain={1: [1, 1, 1, 1], 2: [2, 2, 1, 1], 3: [2, 2, 2, 2]},
        numina={1: [2, 2, 2, 1], 2: [2, 2, 2, 2], 3: [2, 2, 2, 2]},
        edits={1: 3, 2: 1, 3: 1},
    )
    s = _session(handle)
    seeds = [1, 2, 3]
    assert run_strategy("plain", s, seeds).video.seed == 1
    best = run_strategy("seed-search", s, seeds)
    assert best.video.seed == 3 and [c.seed for c in best.candidates] == [1, 2, 3]
    assert run_strategy("numina", s, seeds).video.scores["count_acc"] == 0.75
    assert run_strategy("numina+seed-search", s, seeds).video.seed == 2  # 2 and 3 tie: the earlier seed
    lay = run_strategy("layout-seeds", s, seeds)
    assert lay.video.seed == 2 and lay.video.kind == "numina"  # fewest edits, tie -> earlier seed
    assert [c.edits_needed for c in lay.candidates] == [3, 1, 1]
    # every generation ran once although strategies share them
    assert sorted(handle.calls) == sorted(
        [("plain", k, "two cats") for k in seeds] + [("numina", k, "two cats") for k in seeds]
        + [("layout", k, "two cats") for k in seeds])
    # cost counts what the strategy needed, as if alone
    assert best.cost_seconds == pytest.approx(sum(c.seconds for c in best.candidates))


def test_enhance_generates_from_the_rewrite_and_scores_the_original():
    handle = ScriptedHandle(plain={1: [2, 2]}, numina={1: [2, 2]}, edits={1: 0})
    s = _session(handle, enhance=lambda p: p + ", two fluffy cats")
    out = run_strategy("plain+enhance", s, [1])
    assert out.generation_prompt == "two cats, two fluffy cats"
    assert handle.calls == [("plain", 1, "two cats, two fluffy cats")]
    assert out.video.scores["count_acc"] == 1.0
    with pytest.raises(ValueError, match="enhance callable"):
        run_strategy("plain+enhance", _session(handle), [1])
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        split_strategy("best")


# ---------------------------------------------------------------------------- inputs
def test_countbench_files_load_line_for_line():
    # the copy that ships with the package (an installed package has it too: package data)
    from numina_hooks.eval import countbench_files

    items = load_benchmark(*countbench_files())
    assert len(items) == 210 and items[0] == EvalItem(0, "A lone astronaut floating in space.", {"astronaut": 1})
    assert all(1 <= n <= 8 for it in items for n in it.counts.values())
    assert len(load_benchmark(*countbench_files(), limit=3)) == 3


def test_benchmark_errors_name_the_line(tmp_path):
    (tmp_path / "p.txt").write_text("two cats\nthree dogs\n")
    (tmp_path / "c.jsonl").write_text('{"cats": 2}\n')
    with pytest.raises(ValueError, match="2 prompts but .* 1 count"):
        load_benchmark(tmp_path / "p.txt", tmp_path / "c.jsonl")
    (tmp_path / "c.jsonl").write_text('{"cats": 2}\n{"dogs": 0}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_benchmark(tmp_path / "p.txt", tmp_path / "c.jsonl")


def test_parse_seeds():
    assert parse_seeds("1..5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1,4,7") == [1, 4, 7]
    assert parse_seeds("0..1,9") == [0, 1, 9]
    for bad in ("", "5..1", "1,1", "a"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_find_and_read_videos(tmp_path):
    from PIL import Image

    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    frames[1, 2:4, 2:4] = (220, 50, 50)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "0003_two_cats.gif", save_all=True, append_images=images[1:])
    (tmp_path / "0001").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "0001" / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "7.json").write_text("{}")  # not a video
    found = find_videos(tmp_path)
    assert sorted(found) == [1, 3]
    assert np.array_equal(read_video(found[1]), frames)
    assert np.array_equal(read_video(found[3]), frames)
    assert sorted(find_videos(tmp_path, index_base=1)) == [0, 2]
    Image.fromarray(frames[0]).save(tmp_path / "3.png")
    (tmp_path / "3.gif").write_bytes((tmp_path / "0003_two_cats.gif").read_bytes())
    with pytest.raises(ValueError, match="two videos for item 3"):
        find_videos(tmp_path)


# ---------------------------------------------------------------------------- summary and table
def _result(index, strategy, counts, found, **kw):
    r = {"index": index, "prompt": f"p{index}", "counts": counts, "strategy": strategy, "counts_found": found,
         **score_counts(found, counts), "clip": kw.get("clip"), "cost_seconds": kw.get("cost", 1.0)}
    return r


def test_summary_compares_on_common_items_with_deltas(tmp_path):
    rows = [
        _result(0, "plain", {"cats": 2}, {"cats": [2, 2, 1, 1]}, clip=30.0),        # acc .5, tc 2/3
        _result(1, "plain", {"cats": 3}, {"cats": [1, 1, 1, 1]}, clip=32.0),        # acc 0, tc 1
        _result(0, "numina", {"cats": 2}, {"cats": [2, 2, 2, 2]}, clip=31.0, cost=2.0),  # acc 1, tc 1
        _result(1, "numina", {"cats": 3}, {"cats": [3, 3, 1, 1]}, clip=33.0, cost=2.0),  # acc .5, tc 2/3
        _result(2, "plain", {"cats": 1}, {"cats": [1, 1, 1, 1]}),                    # not common: numina lacks 2
    ]
    for r in rows:
        atomic_write_json(result_path(tmp_path, r["strategy"], r["index"]), r)
    atomic_write_json(result_path(tmp_path, "numina", 2), {"index": 2, "counts": {"cats": 1}, "error": "boom"})
    s = summarize_results(tmp_path)
    assert s["common_items"] == 2
    plain, numina = s["strategies"]["plain"], s["strategies"]["numina"]
    assert plain["count_acc"] == pytest.approx(0.25) and numina["count_acc"] == pytest.approx(0.75)
    assert numina["delta_vs_plain"]["count_acc"] == pytest.approx(0.5)
    assert numina["delta_vs_plain"]["clip"] == pytest.approx(1.0)
    assert plain["own"]["videos"] == 3 and numina["errors"] == {2: "boom"}
    # by requested count: cells of (frame, noun); count 2 -> plain 2/4, numina 4/4; count 3 -> 0/4, 2/4
    assert plain["by_requested"] == {2: {"frames": 4, "acc": 0.5}, 3: {"frames": 4, "acc": 0.0}}
    assert numina["by_requested"][3]["acc"] == 0.5
    table = markdown_table(s)
    assert "| plain | 25.0 | 83.3 | 31.0 | 1.0 | 2 |" in table
    assert "| + numina | 75.0 (+50.0) | 83.3 (+0.0) | 32.0 (+1.0) | 2.0 | 2 |" in table
    assert "| 3 | 0.0 | 50.0 |" in table and "numina 1" in table
    json.dumps(s)


def test_numina_eval_without_prompt_files_runs_countbench(tmp_path):
    # a real model without --prompts/--counts: the CountBench copy of the package, --limit applied
    from types import SimpleNamespace

    from numina_hooks.eval.command import eval_items

    said = []
    args = SimpleNamespace(prompts=None, counts=None, limit=None, model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                           videos=None, out=str(tmp_path))
    items = eval_items(args, "grounding-dino", said.append)
    assert len(items) == 210 and items[0].prompt == "A lone astronaut floating in space."
    assert said and said[0].startswith("CountBench: 210 prompts")
    args.limit = 5
    assert [it.index for it in eval_items(args, "grounding-dino", said.append)] == [0, 1, 2, 3, 4]
    args.model = "toy"  # the toy model keeps its held-out toy prompts
    assert len(eval_items(args, "toy", said.append)) == 5 and said[-1].startswith("5 held-out toy prompts")
