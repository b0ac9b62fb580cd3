"""Noun maps for the toy model: an auxiliary training loss on one block's cross-attention.

NUMINA's phase 1 finds a noun's objects through the noun's columns of the cross-attention at
the reading step and block: in Wan2.1 those maps are sharp. The toy's are not (head-mean AUC
about 0.56 at its reading step, docs/toy.md), so the focus that picks a noun's regions reads
little of the noun. This module gives the toy that property on purpose, for named blocks, and
nothing else of the method; the self-attention heads phase 1 partitions, and the counts the
model draws, are left to the other losses.

The loss, for one block and one clip noised to ``sigma <= max_sigma``: take the head-mean
softmax cross-attention ``P`` [L, T] of the block (video tokens over text tokens, as NUMINA's
``cross_head="mean"`` reads it) and split each video token's row into the mass on each
counted noun's token columns and the rest. A patch of an object of category c is pulled
towards the mass on c's noun, every other patch (background, or an object whose category the
caption does not name) towards the rest, by ``-log`` of that share, averaged over the patches
of each target and then over the targets, so that a large background does not outweigh the
objects. Queries and keys are recomputed from the block's ``attn2`` inputs with the layer's
own projections and norms, with gradients; the processors stay untouched.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch


def parse_blocks(spec: str) -> list[int]:
    """``"3"`` or ``"2,3"`` -> block indices."""
    blocks = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            blocks.append(int(part))
        except ValueError:
            raise ValueError(f"noun-map block {part!r}: expected a block index, for example '3'") from None
    return blocks


def token_categories(labels: torch.Tensor, categories: Sequence[Sequence[str]], names: Sequence[str]
                     ) -> torch.Tensor:
    """Category per video token from object ids: ``labels`` long [B, L] (0 = background, k =
    object k of clip b, as ``instance_head.patch_instances`` gives them), whose category is
    ``categories[b][k - 1]`` -> long [B, L], 0 for background and ``names.index(category) + 1``
    for an object's token."""
    out = torch.zeros_like(labels)
    for b, cats in enumerate(categories):
        lookup = torch.zeros(len(cats) + 1, dtype=torch.long)
        for k, name in enumerate(cats):
            lookup[k + 1] = names.index(name) + 1
        out[b] = lookup[labels[b].cpu()].to(labels.device)
    return out


def column_masks(tokenizer, captions: Sequence[str], names: Sequence[str], max_length: int) -> torch.Tensor:
    """bool [B, len(names), max_length]: the token columns of each category's noun in each
    caption (``noun_token_columns``, the columns NUMINA reads); all False for a category the
    caption does not name (or an empty caption)."""
    from ..numina.counts import parse_counts
    from ..numina.tokens import noun_token_columns
    from .world import category_of_noun

    masks = torch.zeros(len(captions), len(names), max_length, dtype=torch.bool)
    for b, caption in enumerate(captions):
        if not caption:
            continue
        nouns = list(parse_counts(caption))
        for noun, cols in noun_token_columns(tokenizer, caption, nouns, max_length=max_length).items():
            cat = category_of_noun(noun)
            if cat in names:
                masks[b, names.index(cat), cols] = True
    return masks


def attn2_inputs(transformer, blocks: Iterable[int]):
    """Forward pre-hooks on the ``attn2`` of ``blocks`` for the duration of the ``with``:
    yields a dict, filled by each forward, ``block -> (attn, hidden_states,
    encoder_hidden_states)`` (the processors are left untouched)."""
    from .instance_head import block_inputs

    return block_inputs(transformer, blocks, "attn2",
                        lambda m, a: (m, a["hidden_states"], a["encoder_hidden_states"]))


def cross_probabilities(attn, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Softmax cross-attention [B, heads, L, T] of a Wan ``attn2`` for video ``hidden``
    [B, L, dim] and text ``text`` [B, T, dim], made as the layer makes it (projections, RMS
    norms, scale 1 / sqrt(head_dim), no mask)."""
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    k = attn.norm_k(attn.to_k(text)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    return torch.softmax((q @ k.transpose(-1, -2)).float() / q.shape[-1] ** 0.5, dim=-1)


def noun_map_cross_entropy(probs: torch.Tensor, targets: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The loss of one block (module docstring) from its head-mean probabilities.

    ``probs`` [B, L, T] (rows sum to 1); ``targets`` long [B, L]: 0 = the rest, c = the noun of
    category c (1-based, as :func:`token_categories`); ``columns`` bool [B, C, T] per category
    (:func:`column_masks`). A patch whose category has no columns in its caption counts as the
    rest. Returns a scalar (0 with nothing to score)."""
    b = probs.shape[0]
    noun_mass = torch.einsum("blt,bct->blc", probs, columns.to(probs.dtype))  # [B, L, C]
    rest = (1 - noun_mass.sum(-1, keepdim=True)).clamp_min(0)
    shares = torch.cat([rest, noun_mass], dim=-1).clamp_min(1e-8)  # [B, L, 1 + C]
    named = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=columns.device), columns.any(-1)], dim=1)
    targets = torch.where(named.gather(1, targets), targets, torch.zeros_like(targets))
    logp = -torch.log(shares.gather(-1, targets[..., None]).squeeze(-1))  # [B, L]
    terms = []
    for c in range(shares.shape[-1]):
        sel = targets == c
        if bool(sel.any()):
            terms.append(logp[sel].mean())
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


class NounMapLoss:
    """Captures the ``attn2`` inputs of the chosen blocks during a forward (a context manager)
    and turns them into the auxiliary loss.

    >>> with NounMapLoss(pipe.transformer, [3]) as aux:
    ...     pred = pipe.transformer(...)
    ...     extra = aux.loss(targets, columns, sigma, max_sigma=0.9)
    """

    def __init__(self, transformer, blocks: Sequence[int]):
        n_blocks = len(transformer.blocks)
        for block in blocks:
            if not 0 <= block < n_blocks:
                raise ValueError(f"noun-map block {block} is outside the model ({n_blocks} blocks); "
                                 f"pick blocks in 0..{n_blocks - 1}")
        if not blocks:
            raise ValueError("NounMapLoss needs at least one block, for example [3]")
        self.transformer = transformer
        self.blocks = list(blocks)
        self._captured: dict = {}
        self._hooks: contextlib.ExitStack | None = None

    def __enter__(self) -> "NounMapLoss":
        self._hooks = contextlib.ExitStack()
        self._captured = self._hooks.enter_context(attn2_inputs(self.transformer, self.blocks))
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.close()

    def loss(self, targets: torch.Tensor, columns: torch.Tensor, sigma: torch.Tensor,
             max_sigma: float = 0.9) -> torch.Tensor:
        """Mean loss over the chosen blocks, on the clips with ``sigma <= max_sigma`` and a
        caption (``targets`` [B, L] from :func:`token_categories`, ``columns`` [B, C, T] from
        :func:`column_masks`, ``sigma`` [B]). Call it after the forward, inside the ``with``."""
        missing = [b for b in self.blocks if b not in self._captured]
        if missing:
            raise RuntimeError(f"no attn2 input captured for blocks {missing}: call loss() after "
                               "the transformer's forward, inside the with block")
        keep = (sigma <= max_sigma).cpu() & columns.any(-1).any(-1).cpu()
        total = None
        for block in self.blocks:
            attn, hidden, text = self._captured[block]
            if not bool(keep.any()):
                term = hidden.sum() * 0.0
            else:
                rows = keep.to(hidden.device)
                probs = cross_probabilities(attn, hidden[rows], text[rows]).mean(1)
                term = noun_map_cross_entropy(probs, targets.to(hidden.device)[rows], columns.to(hidden.device)[rows])
            total = term if total is None else total + term
        self._captured.clear()
        return total / len(self.blocks)
