"""Summaries of an evaluation folder: ``summary.json``, ``table.md`` (like the paper's
Table 1) and ``accuracy_by_count.png``.

Strategies are compared on the *common* items only: the prompt lines every strategy in the
table has a result for (errors excluded), so a half-finished strategy cannot look better
or worse by having run on easier prompts. Each strategy's figures over all its own results
are kept too (``own``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["load_results", "summarize_results", "markdown_table", "plot_accuracy_by_count", "write_reports"]

BASELINE = "plain"


def load_results(out_dir, strategies: Optional[Sequence[str]] = None) -> dict[str, dict[int, dict]]:
    """``{strategy: {index: result}}`` from ``OUT/results`` (errors included)."""
    root = Path(out_dir) / "results"
    names = strategies if strategies is not None else sorted(p.name for p in root.glob("*") if p.is_dir())
    out: dict[str, dict[int, dict]] = {}
    for name in names:
        rows = {}
        for f in sorted((root / name).glob("*.json")):
            try:
                r = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue  # cannot happen with atomic writes; a hand-edited file is skipped
            rows[int(r["index"])] = r
        out[name] = rows
    return out


def _figures(results: Sequence[dict]) -> dict:
    """Mean CountAcc / TC / CLIP / cost and accuracy by requested count of ``results``."""
    n = len(results)
    if n == 0:
        return {"videos": 0, "count_acc": None, "tc": None, "clip": None, "cost_seconds": None,
                "by_requested": {}}
    tcs = [r["tc"] for r in results if r.get("tc") is not None]
    clips = [r["clip"] for r in results if r.get("clip") is not None]
    costs = [r["cost_seconds"] for r in results if r.get("cost_seconds") is not None]
    hits: dict[int, list[int]] = defaultdict(list)
    for r in results:
        for noun, asked in r["counts"].items():
            hits[int(asked)].extend(int(c == asked) for c in r["counts_found"][noun])
    return {
        "videos": n,
        "count_acc": sum(r["count_acc"] for r in results) / n,
        "tc": sum(tcs) / len(tcs) if tcs else None,
        "clip": sum(clips) / len(clips) if clips else None,
        "cost_seconds": sum(costs) / len(costs) if costs else None,
        # fraction of (frame, noun) cells counted right, per requested count (metrics.summarize's definition)
        "by_requested": {k: {"frames": len(v), "acc": sum(v) / len(v)} for k, v in sorted(hits.items())},
    }


def summarize_results(out_dir, strategies: Optional[Sequence[str]] = None, items: Optional[int] = None) -> dict:
    """The summary of an evaluation folder (what ``summary.json`` holds)."""
    out_dir = Path(out_dir)
    settings_file = out_dir / "settings.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else None
    if strategies is None:  # the run's order (plain first as given), then any other folder
        on_disk = sorted(p.name for p in (out_dir / "results").glob("*") if p.is_dir())
        ran = (settings or {}).get("strategies", [])
        strategies = [s for s in ran if s in on_disk] + [s for s in on_disk if s not in ran]
    loaded = load_results(out_dir, strategies)
    ok = {s: {i: r for i, r in rows.items() if "error" not in r} for s, rows in loaded.items()}
    names = [s for s in loaded if ok[s]]
    common = sorted(set.intersection(*(set(ok[s]) for s in names))) if names else []
    summary = {
        "settings": settings,
        "items": items,
        "common_items": len(common),
        "strategies": {},
    }
    for s in loaded:
        rows = ok[s]
        entry = _figures([rows[i] for i in common])
        entry["own"] = {k: v for k, v in _figures(list(rows.values())).items() if k != "by_requested"}
        entry["errors"] = {i: r["error"] for i, r in sorted(loaded[s].items()) if "error" in r}
        summary["strategies"][s] = entry
    base = summary["strategies"].get(BASELINE)
    for s, entry in summary["strategies"].items():
        entry["delta_vs_plain"] = None
        if base is not None and base["videos"] and entry["videos"]:
            entry["delta_vs_plain"] = {m: (entry[m] - base[m]) if entry[m] is not None and base[m] is not None
                                       else None for m in ("count_acc", "tc", "clip")}
    return summary


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _cell(value, delta, scale: float, show_delta: bool) -> str:
    if value is None:
        return "–"
    text = f"{scale * value:.1f}"
    if show_delta and delta is not None:
        text += f" ({scale * delta:+.1f})"
    return text


def markdown_table(summary: dict) -> str:
    """Table 1 of the paper for this folder: CountAcc, TC, CLIP per strategy with deltas vs
    plain, plus the mean seconds each strategy spent per video, then accuracy by requested
    count."""
    strategies = summary["strategies"]
    order = ([BASELINE] if BASELINE in strategies else []) + [s for s in strategies if s != BASELINE]
    lines = [
        f"Compared on the {summary['common_items']} prompt(s) every strategy below has a result for.",
        "",
        "| Strategy | CountAcc (%) | TC (%) | CLIP Score | Seconds / video | Videos |",
        "|---|---|---|---|---|---|",
    ]
    for s in order:
        e = strategies[s]
        d = e.get("delta_vs_plain") or {}
        show = s != BASELINE
        label = s if s == BASELINE else f"+ {s}"
        cost = "–" if e["cost_seconds"] is None else f"{e['cost_seconds']:.1f}"
        lines.append(f"| {label} | {_cell(e['count_acc'], d.get('count_acc'), 100, show)} | "
                     f"{_cell(e['tc'], d.get('tc'), 100, show)} | {_cell(e['clip'], d.get('clip'), 1, show)} | "
                     f"{cost} | {e['videos']} |")
    counts = sorted({int(k) for e in strategies.values() for k in e["by_requested"]})
    if counts:
        lines += ["", "Accuracy (%) of (frame, noun) cells by requested count:", "",
                  "| Requested | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
        for k in counts:
            cells = []
            for s in order:
                cell = strategies[s]["by_requested"].get(k) or strategies[s]["by_requested"].get(str(k))
                cells.append(_pct(cell["acc"]) if cell else "–")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    errors = {s: len(e["errors"]) for s, e in strategies.items() if e["errors"]}
    if errors:
        lines += ["", "Failed items (see their result files): "
                  + ", ".join(f"{s} {n}" for s, n in errors.items())]
    return "\n".join(lines) + "\n"


def plot_accuracy_by_count(summary: dict, path) -> Path:
    """Line plot of accuracy by requested count, one line per strategy (PNG)."""
    path = Path(path)
    accuracy_figure(summary).savefig(path)
    return path


def accuracy_figure(summary: dict):
    """The matplotlib ``Figure`` of :func:`plot_accuracy_by_count`: integer ticks on the
    count axis, and a gap (no line) across a count the benchmark did not ask for."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for s, e in summary["strategies"].items():
        acc = {int(k): 100 * v["acc"] for k, v in e["by_requested"].items()}
        if acc:
            # every integer count between the smallest and largest; a missing count is a gap
            # (NaN), so no line is drawn across counts the benchmark did not ask for
            xs = list(range(min(acc), max(acc) + 1))
            ax.plot(xs, [acc.get(k, float("nan")) for k in xs], marker="o", label=s)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("requested count")
    ax.set_ylabel("frames counted right (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Counting accuracy by requested count ({summary['common_items']} prompts)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8)
    return fig


def write_reports(out_dir, strategies: Optional[Sequence[str]] = None, items: Optional[int] = None) -> dict:
    """Write ``summary.json``, ``table.md`` and ``accuracy_by_count.png``; return the summary."""
    from .results import atomic_write_json

    out_dir = Path(out_dir)
    summary = summarize_results(out_dir, strategies, items)
    atomic_write_json(out_dir / "summary.json", summary)
    (out_dir / "table.md").write_text(markdown_table(summary), encoding="utf-8")
    plot_accuracy_by_count(summary, out_dir / "accuracy_by_count.png")
    return summary
