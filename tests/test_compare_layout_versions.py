"""benchmarks/compare_layout_versions.py: two source trees timed side by side on the same
frames, and a layout that changed between them is counted and fails the run."""

import json
import shutil
from pathlib import Path

import compare_layout_versions as C

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--families", "project", "--grids", "15x26", "--scenes", "1", "--frames", "1", "--reps", "1"]


def _run(old, new, out):
    code = C.main([str(old), str(new), *ARGS, "--out", str(out), "--name", "check"])
    return code, json.loads((out / "check.json").read_text())


def test_a_tree_against_itself_reads_the_same_layouts(tmp_path):
    code, result = _run(REPO, REPO, tmp_path)
    assert code == 0
    (cell,) = result["cells"]
    assert (cell["family"], cell["grid"], cell["frames"], cell["layouts_differ"]) == ("project", [15, 26], 8, 0)
    assert cell["old_s"] > 0 and cell["new_s"] > 0
    assert "| project | 15x26 | 8 |" in (tmp_path / "check.md").read_text()


def test_a_changed_layout_is_counted_and_fails_the_run(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(REPO / "numina_hooks", old / "numina_hooks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = old / "numina_hooks" / "numina" / "config.py"
    text = config.read_text()
    assert "    focus_overlap: float = 0.2\n" in text
    # an instance must lie almost wholly on the noun's focus: fewer instances in most frames
    config.write_text(text.replace("    focus_overlap: float = 0.2\n", "    focus_overlap: float = 0.95\n"))
    code, result = _run(old, REPO, tmp_path)
    assert code == 1
    assert result["cells"][0]["layouts_differ"] >= 1


def test_a_folder_that_is_not_a_tree_is_refused(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="not a source tree of numina-hooks"):
        C.main([str(tmp_path), str(REPO), *ARGS, "--out", str(tmp_path)])
