"""Instance heads for the toy model: an auxiliary training loss on chosen self-attention heads.

NUMINA's phase 1 relies on a property of large video DiTs: some self-attention heads at the
reading step attend within object instances, so partitioning such a head's map separates the
objects (the paper finds them in Wan2.1). A 1.3M-parameter toy trained on 3x3-patch objects
one patch apart does not grow one at its middle blocks (docs/toy.md, "Where phase 1 loses the
layout"), so the toy could not test the rest of the chain. This module gives the toy that
property on purpose, for named (block, head) pairs, and nothing else of the method: the
other heads, the cross-attention and the counts the model draws are left to the flow loss.

The loss, for one head of one block and one clip noised to ``sigma <= max_sigma``: every
object patch's row of the head's softmax attention (over all ``F * h * w`` video tokens of
the clip) is pulled towards the uniform distribution over the patches of its own object in
its own frame (phase 1 partitions each frame's map), by cross-entropy
``-mean_{j in object(i), frame(j) = frame(i)} log P[i, j]``, averaged over object rows.
The background of a frame counts as one more object (its rows are pulled towards the
frame's background patches), as in the instance heads of real models, where the background
is a segment of its own: without it the background rows attended to the objects next to
them and every object's region bled into its border. Queries and keys are recomputed from the block's
``attn1`` input with the layer's own projections, norms and RoPE (the same recipe as the
probe in :mod:`numina_hooks.toy.evaluate`), with gradients, so the processors stay untouched.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterable, Sequence

import numpy as np
import torch


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """``"2:2,3:3"`` -> ``[(2, 2), (3, 3)]`` (block, head) pairs."""
    pairs = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            block, head = (int(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"instance head {part!r}: expected BLOCK:HEAD with two integers, "
                             "for example '3:3'") from None
        pairs.append((block, head))
    return pairs


def patch_instances(instances: np.ndarray, patch: int = 2) -> torch.Tensor:
    """Object id per video token: ``instances`` int [B, F, H, W] (0 = background) ->
    long [B, F * (H // patch) * (W // patch)], in the transformer's token order (frame, row,
    column). A patch takes the largest id among its pixels (toy-world objects sit on the patch
    grid and never share a patch, so this is the object whose box holds the patch)."""
    b, f, h, w = instances.shape
    x = torch.as_tensor(np.ascontiguousarray(instances).astype(np.int64))
    x = x.reshape(b, f, h // patch, patch, w // patch, patch).amax(dim=(3, 5))
    return x.reshape(b, -1)


@contextlib.contextmanager
def block_inputs(transformer, blocks: Iterable[int], layer: str, read):
    """Forward pre-hooks on ``blocks[b].<layer>`` for the duration of the ``with``: yields a
    dict, filled by each forward, ``block -> read(module, bound arguments)`` (the processors
    are left untouched)."""
    captured: dict = {}

    def grabber(block: int):
        def grab(module, args, kwargs):
            captured[block] = read(module, inspect.signature(module.forward).bind(*args, **kwargs).arguments)
        return grab

    handles = [getattr(transformer.blocks[b], layer).register_forward_pre_hook(grabber(b), with_kwargs=True)
               for b in sorted(set(blocks))]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def attn1_inputs(transformer, blocks: Iterable[int]):
    """:func:`block_inputs` of ``attn1``: ``block -> (attn, hidden_states, rotary_emb)``
    (Wan's block calls ``attn1(hidden, None, None, rotary_emb)``)."""
    return block_inputs(transformer, blocks, "attn1",
                        lambda m, a: (m, a["hidden_states"], a.get("rotary_emb")))


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on ``x`` [B, L, heads, d] (interleaved pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


def self_queries_keys(attn, hidden: torch.Tensor, rotary) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys [B, L, heads, d] of a Wan ``attn1`` for its input ``hidden``
    [B, L, dim], made as the layer makes them (projection, RMS norm, RoPE); ``rotary`` is the
    block's (cos, sin) or None."""
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
    k = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
    if rotary is not None:
        q, k = rope(q, *rotary), rope(k, *rotary)
    return q, k


def head_logits(attn, hidden: torch.Tensor, rotary, head: int) -> torch.Tensor:
    """Scaled self-attention logits [B, L, L] of one head of a Wan ``attn1`` for its input
    ``hidden`` [B, L, dim] (``rotary``: the block's (cos, sin) or None)."""
    q, k = self_queries_keys(attn, hidden, rotary)
    q, k = q[:, :, head], k[:, :, head]  # [B, L, d]
    return q @ k.transpose(1, 2) / q.shape[-1] ** 0.5


def instance_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           tokens_per_frame: int | None = None, background: bool = False) -> torch.Tensor:
    """Mean over object rows of ``-mean_{j in object(i)} log softmax(logits[i])[j]``.

    ``logits`` [B, L, L]; ``labels`` long [B, L] (0 = background). With ``tokens_per_frame``
    the target keeps only the object's patches in the row's own frame (tokens in frame order,
    ``tokens_per_frame`` each). With ``background`` the background (label 0) is one more
    object. Returns a scalar (0 with no row to score)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    same = labels[:, :, None] == labels[:, None, :]
    if not background:
        same = same & (labels[:, :, None] > 0)
    if tokens_per_frame is not None:
        frame = torch.arange(labels.shape[1], device=labels.device) // tokens_per_frame
        same = same & (frame[:, None] == frame[None, :])
    size = same.sum(-1)
    rows = size > 0
    if not bool(rows.any()):
        return logits.sum() * 0.0
    per_row = -(logp * same).sum(-1)[rows] / size[rows]
    return per_row.mean()


class InstanceHeadLoss:
    """Captures the ``attn1`` inputs of the chosen blocks during a forward (a context manager)
    and turns them into the auxiliary loss.

    >>> with InstanceHeadLoss(pipe.transformer, [(3, 3)]) as aux:
    ...     pred = pipe.transformer(...)
    ...     extra = aux.loss(labels, sigma, max_sigma=0.8)
    """

    def __init__(self, transformer, heads: Sequence[tuple[int, int]], tokens_per_frame: int | None = None,
                 background: bool = True):
        n_blocks = len(transformer.blocks)
        n_heads = transformer.config.num_attention_heads
        for block, head in heads:
            if not (0 <= block < n_blocks and 0 <= head < n_heads):
                raise ValueError(f"instance head {block}:{head} is outside the model "
                                 f"({n_blocks} blocks of {n_heads} heads); pick BLOCK in "
                                 f"0..{n_blocks - 1} and HEAD in 0..{n_heads - 1}")
        self.transformer = transformer
        self.heads = list(heads)
        #: video tokens per latent frame (the target stays in the row's frame); None: whole clip
        self.tokens_per_frame = tokens_per_frame
        #: the background is one more object (its rows attend to the frame's background)
        self.background = background
        self._captured: dict = {}
        self._hooks: contextlib.ExitStack | None = None

    def __enter__(self) -> "InstanceHeadLoss":
        self._hooks = contextlib.ExitStack()
        self._captured = self._hooks.enter_context(attn1_inputs(self.transformer, (b for b, _ in self.heads)))
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.close()

    def loss(self, labels: torch.Tensor, sigma: torch.Tensor, max_sigma: float = 0.8) -> torch.Tensor:
        """The mean auxiliary loss over the chosen heads, on the clips with ``sigma <=
        max_sigma`` (``labels`` long [B, L] from :func:`patch_instances`, ``sigma`` [B]).
        Must be called after the forward, inside the ``with`` block."""
        missing = [b for b, _ in self.heads if b not in self._captured]
        if missing:
            raise RuntimeError(f"no attn1 input captured for blocks {missing}: call loss() after "
                               "the transformer's forward, inside the with block")
        keep = (sigma <= max_sigma).to(labels.device)
        total = None
        for block, head in self.heads:
            attn, hidden, rotary = self._captured[block]
            if not bool(keep.any()):
                term = hidden.sum() * 0.0
            else:
                term = instance_cross_entropy(head_logits(attn, hidden[keep], rotary, head),
                                              labels.to(hidden.device)[keep], self.tokens_per_frame,
                                              self.background)
            total = term if total is None else total + term
        self._captured.clear()
        return total / len(self.heads)
