"""benchmarks/eval_toy_end_to_end.py: a summary is labelled only with the run its rows came from."""

import json

import pytest

import eval_toy_end_to_end as e2e  # benchmarks/ (on sys.path via conftest.py)
from numina_hooks.toy import model as toy_model


def _run_json(out, **fields):
    out.mkdir(parents=True, exist_ok=True)
    identity = {"seed": 0, "search": 3,
                "weights_sha256": e2e._sha256(toy_model.WEIGHTS_DIR / "model.safetensors")} | fields
    (out / "run.json").write_text(json.dumps(identity))


def test_summarize_refuses_rows_of_other_weights_or_pairs(tmp_path):
    """Rows made with fine-tuned weights, summarised without --weights, would be labelled
    with the shipped weights' step: refused, saying what to pass."""
    other = tmp_path / "other"
    _run_json(other, weights_sha256="0" * 64)
    with pytest.raises(SystemExit, match="pass the --weights the rows were made with"):
        e2e.main(["--summarize", "--out", str(other)])
    seed1 = tmp_path / "seed1"
    _run_json(seed1, seed=1)
    with pytest.raises(SystemExit, match=r"--seed 1 \(not 0\)"):
        e2e.main(["--summarize", "--out", str(seed1)])
    from dataclasses import asdict

    from numina_hooks.numina.config import NuminaConfig

    other_config = tmp_path / "config"  # the table would say "config default"
    _run_json(other_config, config=asdict(NuminaConfig(link_ratio=0.75)))
    with pytest.raises(SystemExit, match="pass the --config the rows were made with"):
        e2e.main(["--summarize", "--out", str(other_config)])
    e2e.main(["--summarize", "--out", str(other_config), "--config", '{"link_ratio": 0.75}'])
    same = tmp_path / "same"
    _run_json(same)
    identity = json.loads((same / "run.json").read_text())
    e2e.check_summary_run(same, identity, toy_model.WEIGHTS_DIR)  # the run's own settings pass
    assert e2e.main(["--summarize", "--out", str(same)]) == {}  # no rows yet: nothing to label
