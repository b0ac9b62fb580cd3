"""Noun -> token columns, with the pipeline's own (fast) tokenizer.

The columns are 0-based positions in the token sequence exactly as the pipeline encodes the
prompt (T5 / UMT5 style: no BOS, pieces of the text, then EOS, then padding), so they index
the key axis of the cross-attention directly.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from .counts import _SINGLE_WORDS, NUMBER_WORDS, is_number_word

__all__ = ["noun_token_columns", "phrase_token_columns", "find_noun_spans", "find_phrase_spans"]


def find_noun_spans(prompt: str, noun: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of ``noun`` in ``prompt``: case-insensitive, whole words.

    A word boundary is any character that is not a letter or digit, so "balloons" is found
    in "air-balloons" but "cat" is not found in "cats".
    """
    noun = noun.strip()
    if not noun:
        raise ValueError("noun_token_columns: got an empty noun; expected a word of the prompt")
    pattern = re.compile(r"(?<![0-9A-Za-z])" + re.escape(noun) + r"(?![0-9A-Za-z])", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(prompt)]


#: Words that may open a counted phrase ("three red cats", "a small dog", "a single cup"):
#: the number words and single-object words parse_counts reads, and the articles.
_COUNT_OPENERS = set(NUMBER_WORDS) | _SINGLE_WORDS | {"a", "an"}
#: Words that end a phrase when walking left from its noun.
_PHRASE_BREAKS = {"and", "or", "with", "of", "near", "beside", "behind", "next", "to", "on", "in", "under",
                  "over", "while", "than", "the"}
_WORD = re.compile(r"[0-9A-Za-z'-]+")


def find_phrase_spans(prompt: str, noun: str, max_words: int = 4) -> list[tuple[int, int]]:
    """Character spans [start, end) of each counted phrase ending in ``noun``.

    From each occurrence of the noun (as :func:`find_noun_spans`), walks left over at most
    ``max_words`` words that are not separated by punctuation or a joining word ("and",
    "with", ...), and opens the phrase at the nearest count word met ("three", "a", a
    number): "three red discs" in "three red discs and a blue square". Where no count
    word is found, the span is the noun alone.
    """
    spans = []
    for start, end in find_noun_spans(prompt, noun):
        open_at = start
        words = list(_WORD.finditer(prompt[:start]))[::-1]
        gap_end = start
        for k, w in enumerate(words[:max_words]):
            gap = prompt[w.end():gap_end]
            if gap.strip():  # punctuation between the words ends the phrase
                break
            word = w.group().lower()
            if word in _PHRASE_BREAKS:
                break
            if _is_count_word(word):
                open_at = w.start()
                # a compound number opens at its first word: "two dozen", "one hundred"
                for before, after in zip(words[k + 1:], words[k:]):
                    if prompt[before.end():after.start()].strip() or not is_number_word(before.group().lower()):
                        break
                    open_at = before.start()
                break
            gap_end = w.start()
        spans.append((open_at, end))
    return spans


def _is_count_word(word: str) -> bool:
    return word in _COUNT_OPENERS or is_number_word(word)


def phrase_token_columns(tokenizer: Any, prompt: str, nouns: Iterable[str],
                         max_length: int | None = None) -> dict[str, list[int]]:
    """Token columns of each noun's counted phrase (count word, modifiers and the noun).

    Same conventions and errors as :func:`noun_token_columns`; the noun's own columns are
    always included.
    """
    return _token_columns(tokenizer, prompt, nouns, max_length, widen=find_phrase_spans)


def noun_token_columns(tokenizer: Any, prompt: str, nouns: Iterable[str],
                       max_length: int | None = None) -> dict[str, list[int]]:
    """Token columns of each noun in ``prompt`` as the pipeline tokenizes it.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (``T5TokenizerFast`` for CogVideoX, the
            UMT5 tokenizer of Wan); it must support ``return_offsets_mapping``.
        prompt: the prompt, exactly as passed to the pipeline.
        nouns: nouns as written in the prompt (the keys of ``parse_counts``); one noun may
            be a plain string.
        max_length: the pipeline's text length (512 for Wan, 226 for CogVideoX). When given,
            the prompt is truncated as the pipeline truncates it, and a noun that falls past
            the end is an error.

    Returns:
        {noun: sorted 0-based token positions}. A noun split into several pieces gives
        several columns; a noun written twice gives the columns of both occurrences. Special
        tokens (EOS, padding) are never returned. Matching is case-insensitive on whole words.

    Raises:
        ValueError: a noun is not in the prompt (or was truncated away); the message names
            the noun and shows the tokenized prompt.
        TypeError: the tokenizer cannot give offsets (a slow tokenizer).
    """
    return _token_columns(tokenizer, prompt, nouns, max_length)


def _token_columns(tokenizer: Any, prompt: str, nouns: Iterable[str], max_length: int | None,
                   widen: Callable[[str, str], list] | None = None) -> dict[str, list[int]]:
    """The columns under each noun's spans, and under ``widen(prompt, noun)``'s spans too
    when given; one tokenization for all nouns. Errors as :func:`noun_token_columns`. One
    noun may be given as a plain string ("cats" is ["cats"], not its letters)."""
    if isinstance(nouns, str):
        nouns = [nouns]
    kwargs: dict[str, Any] = {"add_special_tokens": True, "return_offsets_mapping": True}
    if max_length is not None:
        kwargs.update(max_length=int(max_length), truncation=True)
    try:
        encoding = tokenizer(prompt, **kwargs)
    except NotImplementedError as err:  # slow tokenizers refuse offsets
        raise TypeError(
            f"noun_token_columns needs a fast tokenizer with offset mapping; "
            f"{type(tokenizer).__name__} cannot return offsets ({err}). "
            "Load it with use_fast=True.") from err
    offsets = encoding["offset_mapping"]
    ids = encoding["input_ids"]
    if len(offsets) and isinstance(offsets[0][0], (list, tuple)):
        offsets, ids = offsets[0], ids[0]  # a batch of one

    def under(spans) -> set[int]:
        return {k for k, (s, e) in enumerate(offsets)
                if e > s and any(s < span_end and e > span_start for span_start, span_end in spans)}

    columns: dict[str, list[int]] = {}
    for noun in nouns:
        spans = find_noun_spans(prompt, noun)
        cols = under(spans)
        if not cols:
            pieces = tokenizer.convert_ids_to_tokens(list(ids))
            where = "is not in the prompt" if not spans else "was truncated away (max_length)"
            raise ValueError(
                f"noun {noun!r} {where}; prompt {prompt!r} tokenizes to "
                f"{list(enumerate(pieces))}. Pass nouns exactly as written in the prompt "
                "(the keys of parse_counts), or pass counts= with such nouns.")
        if widen is not None:
            cols |= under(widen(prompt, noun))
        columns[noun] = sorted(cols)
    return columns
