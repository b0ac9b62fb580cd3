"""Benchmark items: CountBench's two files, and held-out toy prompts in the same shape.

CountBench is ``prompts.txt`` (one prompt a line) and ``noun_counts.jsonl`` (one JSON
object ``{noun: count}`` a line); line i of one matches line i of the other, and an item's
``index`` is its 0-based line number. The paper's 210 prompts ship with the package
(:func:`countbench_files`; MIT licence, ``countbench/LICENSE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["EvalItem", "countbench_files", "load_benchmark", "write_benchmark", "toy_benchmark",
           "toy_noun_as_written"]

#: the folder of the CountBench files that ship with the package
COUNTBENCH_DIR = Path(__file__).resolve().parent / "countbench"


def countbench_files() -> tuple[Path, Path]:
    """The paths of the CountBench files that ship with the package: ``(prompts.txt,
    noun_counts.jsonl)`` (the 210 prompts of the NUMINA paper; ``load_benchmark(*countbench_files())``)."""
    return COUNTBENCH_DIR / "prompts.txt", COUNTBENCH_DIR / "noun_counts.jsonl"


@dataclass(frozen=True)
class EvalItem:
    """One benchmark line: its 0-based index, the prompt and the counts it asks for."""

    index: int
    prompt: str
    counts: dict


def load_benchmark(prompts_file, counts_file, limit: Optional[int] = None) -> list[EvalItem]:
    """Read a CountBench-format pair of files; line i of one matches line i of the other.

    Blank lines are items too (and fail), so that indices always equal line numbers.
    """
    prompts = Path(prompts_file).read_text(encoding="utf-8").splitlines()
    lines = Path(counts_file).read_text(encoding="utf-8").splitlines()
    while prompts and not prompts[-1].strip():
        prompts.pop()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(prompts) != len(lines):
        raise ValueError(f"{prompts_file} has {len(prompts)} prompts but {counts_file} has {len(lines)} count "
                         "lines: line i of one must match line i of the other")
    items = []
    for i, (prompt, line) in enumerate(zip(prompts, lines)):
        try:
            counts = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{counts_file} line {i + 1}: {line!r} is not JSON ({err}); expected "
                             '{"noun": count, ...}') from None
        if not prompt.strip():
            raise ValueError(f"{prompts_file} line {i + 1} is empty")
        if (not isinstance(counts, dict) or not counts
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts.values())):
            raise ValueError(f"{counts_file} line {i + 1}: {line!r}: expected a non-empty object noun -> int >= 1")
        items.append(EvalItem(i, prompt.strip(), {str(k): int(v) for k, v in counts.items()}))
    return items[:limit] if limit is not None else items


def write_benchmark(items: Sequence[EvalItem], folder) -> tuple[Path, Path]:
    """Write ``prompts.txt`` and ``noun_counts.jsonl`` for ``items``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prompts, counts = folder / "prompts.txt", folder / "noun_counts.jsonl"
    prompts.write_text("".join(it.prompt + "\n" for it in items), encoding="utf-8")
    counts.write_text("".join(json.dumps(it.counts) + "\n" for it in items), encoding="utf-8")
    return prompts, counts


def toy_noun_as_written(prompt: str, category: str) -> str:
    """The toy category's noun as the prompt writes it (singular or plural)."""
    from ..numina.tokens import find_noun_spans
    from ..toy.world import CATEGORY_BY_NAME

    cat = CATEGORY_BY_NAME[category]
    for word in (cat.plural, cat.noun):
        if find_noun_spans(prompt, word):
            return word
    raise ValueError(f"toy prompt {prompt!r} does not name {category!r}")


def toy_benchmark(n: int, seed: int = 0, counts_in: str | None = None) -> list[EvalItem]:
    """``n`` held-out toy prompts (``toy.world.held_out_prompts``) as benchmark items, with
    nouns as the prompt writes them (``{"discs": 3}``), as CountBench annotates.
    ``counts_in``: the count range (``toy.world.COUNT_RANGES``); None = the one the shipped
    weights were trained on."""
    from ..toy.world import held_out_prompts

    if counts_in is None:
        from ..toy.model import weights_count_range

        counts_in = weights_count_range()
    return [EvalItem(i, p.text, {toy_noun_as_written(p.text, c): k for c, k in p.counts.items()})
            for i, p in enumerate(held_out_prompts(n, seed=seed, counts_in=counts_in))]
