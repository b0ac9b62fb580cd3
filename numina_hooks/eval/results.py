"""The output folder of an evaluation: result files, the recorded settings, resuming.

::

    OUT/settings.json                       what was run (model, sizes, seeds, counter, ...)
    OUT/results/<strategy>/<index>.json     one result per (prompt, strategy), written
                                            atomically as soon as it is done

``<index>`` is zero-padded to four digits. A result is done when its file exists and holds
no ``"error"``; a rerun skips done results and retries failed ones. Results made with
other settings (model, steps, size, seeds, counter, NUMINA config) never share a folder:
:func:`check_settings` refuses them with :class:`SettingsMismatch`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SettingsMismatch", "atomic_write_json", "result_path", "is_done", "check_settings", "count_results",
           "strategies_on_disk"]


class SettingsMismatch(ValueError):
    """The output folder holds results made with other settings."""


def atomic_write_json(path, data) -> None:
    """Write JSON so that ``path`` is either absent or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=_jsonable)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def result_path(out_dir, strategy: str, index: int) -> Path:
    """``OUT/results/<strategy>/<index:04d>.json``."""
    return Path(out_dir) / "results" / strategy / f"{index:04d}.json"


def is_done(path: Path) -> bool:
    """A result file that exists, reads as JSON and holds no ``"error"``."""
    if not path.exists():
        return False
    try:
        return "error" not in json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return False


def check_settings(out_dir: Path, settings: dict) -> None:
    """Refuse to mix results made with different settings in one folder; record ``settings``.

    ``settings`` is ``{"identity": {...}, "strategies": [...], "mode": ...}``; the
    identities must agree with what ``OUT/settings.json`` holds (the strategies add up).
    """
    file = out_dir / "settings.json"
    if file.exists():
        old = json.loads(file.read_text(encoding="utf-8"))
        keys = sorted(k for k in set(old["identity"]) | set(settings["identity"])
                      if old["identity"].get(k) != settings["identity"].get(k))
        if keys:
            diff = ", ".join(f"{k}: {old['identity'].get(k)!r} -> {settings['identity'].get(k)!r}" for k in keys)
            raise SettingsMismatch(f"{out_dir} holds results made with other settings ({diff}); "
                                   "use another --out folder, or delete that one to start over")
        settings = {**settings, "strategies": list(dict.fromkeys(old.get("strategies", []) + settings["strategies"]))}
    atomic_write_json(file, settings)


def count_results(out_dir: Path) -> tuple[int, int]:
    """(results scored, results that failed) in ``OUT/results``."""
    ok = failed = 0
    for f in (out_dir / "results").glob("*/*.json"):
        try:
            failed_one = "error" in json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            continue
        failed += failed_one
        ok += not failed_one
    return ok, failed


def strategies_on_disk(out_dir: Path, first: Sequence[str]) -> list[str]:
    """The strategy folders under ``OUT/results``: those of ``first`` in its order, then the others."""
    found = sorted(p.name for p in (out_dir / "results").glob("*") if p.is_dir())
    return list(dict.fromkeys([s for s in first if s in found] + found))
