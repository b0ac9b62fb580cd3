"""NUMINA over a batch of videos: one layout, count and plan per item.

A pipeline call makes ``B`` videos (a list of prompts, ``num_videos_per_prompt``, or
a string prompt with ``B``-row ``latents``). Each attention call then carries the ``B``
cond rows in item order (``view.rows_of("cond")``; for CogVideoX after the ``B`` uncond
rows). Item ``i`` belongs to prompt ``i // (B // P)`` for ``P`` prompts, the order
diffusers repeats prompt embeddings in.

* :class:`BatchLayoutReader` runs one :class:`~numina_hooks.numina.identify.LayoutReader`
  per item, each seeing the call through :func:`item_view` (its own cond row);
* :class:`BatchGuidance` applies the guidance plan of every item that needs one, on that
  item's cond row only; items whose layout matched are regenerated unguided.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..attention import guided_attention
from ..hookspecs import hookimpl
from .config import NuminaConfig
from .identify import LayoutReader


class _ItemView:
    """An attention view seen by one item: ``rows_of("cond")`` is that item's cond row
    (the other branch has no row); everything else is the view's."""

    __slots__ = ("_view", "_row")

    def __init__(self, view, row: int):
        self._view = view
        self._row = row

    def rows_of(self, branch: str) -> list[int]:
        return [self._row] if branch == "cond" else []

    def __getattr__(self, name):
        return getattr(self._view, name)


def broadcast_keys(view):
    """``view`` with keys and values repeated (no copy) to the query batch when the model
    broadcasts one text row over several video rows (diffusers Wan with a string prompt
    and multi-row ``latents``); otherwise ``view`` itself."""
    q, k, v = view._q, view._k, view._v
    b = q.shape[0]
    if k.shape[0] == b or k.shape[0] != 1:
        return view
    return type(view)(
        site=view.site, kind=view.kind, context=view.context, q=q, k=k.expand(b, *k.shape[1:]),
        v=v.expand(b, *v.shape[1:]), layout=view._layout, scale=view.scale, video_queries=view.video_queries,
        text_keys=view.text_keys, video_keys=view.video_keys, shard=getattr(view, "shard", None),
    )


def item_view(view, row: int) -> _ItemView:
    """What item ``row`` of a batched call sees (keys broadcast to the batch first)."""
    return _ItemView(broadcast_keys(view), row)


def prompt_of_item(item: int, items: int, prompts: int) -> int:
    """The prompt index of batch item ``item`` (items are grouped per prompt)."""
    if items % prompts:
        raise ValueError(
            f"the pipeline made {items} video(s) for {prompts} prompts, which is not a whole number per prompt; "
            "NUMINA cannot tell which prompt each video belongs to. Pass one prompt per video."
        )
    return item // (items // prompts)


class BatchLayoutReader:
    """One :class:`LayoutReader` per batch item, created at the first view of the
    reference call, when the number of items is known.

    :param columns: per prompt, noun -> text token columns, or ``None`` when that prompt
        has nothing to count (its items get no reader).
    :param layer: the block read, or a sequence of blocks (``NuminaConfig.resolve_layers``).
    """

    def __init__(self, columns: list[Optional[dict]], step: int, layer, config: NuminaConfig):
        self.columns = columns
        self.step = step
        self.layer = layer  # a block index, or the sequence of blocks read
        self.layers = tuple(layer) if isinstance(layer, (tuple, list)) else (int(layer),)
        self.config = config
        #: per item: its prompt index and its reader (None: nothing to count)
        self.items: Optional[list[tuple[int, Optional[LayoutReader]]]] = None

    @property
    def done(self) -> bool:
        return self.items is not None and all(r is None or r.done for _, r in self.items)

    def matches(self, counts: list[Optional[dict]]) -> bool:
        """Every item's layout has every asked count in every frame."""
        return self.done and all(r is None or r.matches(counts[p]) for p, r in self.items)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for _, r in self.items or () if r is not None)

    @hookimpl
    def on_attention(self, view):
        if view.step != self.step or view.layer not in self.layers:
            return None
        rows = view.rows_of("cond")
        if not rows:
            return None
        if self.items is None:
            self.items = []
            for item in range(len(rows)):
                p = prompt_of_item(item, len(rows), len(self.columns))
                cols = self.columns[p]
                self.items.append((p, None if cols is None else LayoutReader(cols, self.step, self.layer, self.config)))
        elif len(rows) != len(self.items):
            raise RuntimeError(
                f"NUMINA: the reference call has {len(rows)} cond rows where an earlier one had {len(self.items)}; "
                "the batch changed size inside one generation"
            )
        for row, (_, reader) in zip(rows, self.items):
            if reader is not None:
                reader.on_attention(view=item_view(view, row))
        return None


class BatchGuidance:
    """Phase 2 for a batch: each guided item's plan on its own cond row.

    :param guidances: item index -> its :class:`~numina_hooks.numina.guidance.LayoutGuidance`.
    With one guided item its own ``on_attention`` runs on that item's view; with several,
    their edits go to one guided attention call.
    """

    def __init__(self, guidances: dict, config: NuminaConfig):
        self.guidances = guidances
        self.config = config

    @hookimpl
    def on_attention(self, view):
        if view.kind != "cross" or not self.guidances:
            return None
        rows = view.rows_of("cond")
        if len(self.guidances) == 1:
            (item, guidance), = self.guidances.items()
            if item >= len(rows):
                return None
            return guidance.on_attention(view=item_view(view, rows[item]))
        view = broadcast_keys(view)
        edits, guided = [], []
        for item, guidance in self.guidances.items():
            if item < len(rows):
                mine = guidance.edits_for(_ItemView(view, rows[item]))
                if mine:
                    edits.extend(mine)
                    guided.append(guidance)
        if not edits and not (getattr(view, "shard", None) is not None and any(g.active(view) for g in self.guidances.values())):
            return None  # (under context parallelism every rank answers an active step itself)
        for guidance in guided:
            guidance.guided_calls += 1
            guidance.guided_steps.add(view.step)
        return guided_attention(view.q, view.k, view.v, edits, scale=view.scale, method=self.config.guidance)


def batch_rows(out) -> Optional[int]:
    """Videos in a diffusers pipeline output (``.frames`` or the tuple's first item), if it says."""
    frames = getattr(out, "frames", None)
    if frames is None and isinstance(out, tuple) and out:
        frames = out[0]
    if isinstance(frames, (torch.Tensor, list, tuple)) or hasattr(frames, "shape"):
        try:
            return len(frames)
        except TypeError:  # pragma: no cover
            return None
    return None
