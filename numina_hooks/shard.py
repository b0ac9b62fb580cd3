"""Context parallelism: which part of the token sequence an attention call holds.

With diffusers' context parallelism (``transformer.enable_parallelism(config=
ContextParallelConfig(ulysses_degree=N))``, or ring), every rank runs each attention layer
on a slice of the video tokens: the kernel receives q/k/v of that slice, and the Ulysses
all-to-all or the ring exchange happens inside the kernel. A view of such a call holds the
local slice (:class:`SequenceShard` says which one) while its geometry stays global.

What reads attention maps gathers the slices (``AttentionView`` does it on request, so
every rank must ask for the same maps at the same call, as plugins running the same code
on every rank do); what replaces the kernel's output works on the local rows alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = ["SequenceShard", "shard_from_parallel_config"]


@dataclass(frozen=True)
class SequenceShard:
    """The slice ``[offset, offset + length)`` of a ``total``-token sequence that this rank
    holds, among ``world`` ranks of ``group`` (a torch.distributed process group)."""

    rank: int
    world: int
    offset: int
    length: int
    total: int
    group: Any = None

    def gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """The whole sequence: every rank's slice of ``t`` along ``dim``, concatenated in rank
        order (a collective: every rank of the group must call it)."""
        import torch.distributed as dist

        if t.shape[dim] != self.length:
            raise ValueError(f"SequenceShard.gather: the tensor has {t.shape[dim]} tokens along dim {dim}; "
                             f"this rank holds {self.length}")
        sizes = [split_of(self.total, self.world, r, self.length)[1] for r in range(self.world)]
        biggest = max(sizes)
        t = t.contiguous()
        if self.length < biggest:  # all_gather needs equal shapes: pad, then cut
            pad = list(t.shape)
            pad[dim] = biggest - self.length
            t = torch.cat([t, t.new_zeros(pad)], dim)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t, group=self.group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim)

    def local_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global token indices ``rows`` ``[R]`` -> (bool ``[R]``: held here, local indices of
        those held)."""
        held = (rows >= self.offset) & (rows < self.offset + self.length)
        return held, rows[held] - self.offset


def split_of(total: int, world: int, rank: int, length: int) -> tuple[int, int]:
    """(offset, length) of ``rank``'s slice of ``total`` tokens: ``tensor.chunk`` (diffusers'
    default split: ceil(total / world) each, the last ones shorter) or ``tensor_split`` (its
    "anything" split: the first ``total % world`` ranks one longer), whichever gives this
    rank ``length`` tokens. ValueError when neither does."""
    c = math.ceil(total / world)
    chunk = (min(rank * c, total), max(0, min((rank + 1) * c, total) - rank * c))
    q, r = divmod(total, world)
    split = (rank * q + min(rank, r), q + (1 if rank < r else 0))
    for offset, n in (chunk, split):
        if n == length:
            return offset, n
    raise ValueError(f"rank {rank} of {world} holds {length} of {total} tokens: neither an even chunk "
                     f"({chunk[1]}) nor a tensor_split ({split[1]}) slice; numina-hooks cannot tell which "
                     "tokens these are")


def shard_from_parallel_config(parallel_config: Any, local: int, total: int) -> Optional[SequenceShard]:
    """The shard of a kernel call that received ``parallel_config`` (diffusers'
    ``ParallelConfig``) and ``local`` of ``total`` video tokens; None without context
    parallelism (or with one rank)."""
    cp = getattr(parallel_config, "context_parallel_config", None)
    world = getattr(cp, "_world_size", None) or 1
    if cp is None or world <= 1:
        return None
    mesh = getattr(cp, "_flattened_mesh", None)
    group = mesh.get_group() if mesh is not None else None
    import torch.distributed as dist

    rank = dist.get_rank(group)
    if local == total:
        raise ValueError(f"context parallelism over {world} ranks, but this attention call holds all {total} "
                         "video tokens: numina-hooks cannot tell how the sequence is split here")
    offset, length = split_of(total, world, rank, local)
    return SequenceShard(rank=rank, world=world, offset=offset, length=length, total=total, group=group)
