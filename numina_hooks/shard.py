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
    """Rank ``rank``'s slice ``[offset, offset + length)`` of a ``total``-token sequence split
    among ``world`` ranks of ``group`` (a torch.distributed process group) in slices of
    ``sizes`` tokens, in rank order."""

    rank: int
    sizes: tuple
    group: Any = None

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def length(self) -> int:
        return self.sizes[self.rank]

    def gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """The whole sequence: every rank's slice of ``t`` along ``dim``, concatenated in rank
        order (a collective: every rank of the group must call it)."""
        import torch.distributed as dist

        if t.shape[dim] != self.length:
            raise ValueError(f"SequenceShard.gather: the tensor has {t.shape[dim]} tokens along dim {dim}; "
                             f"this rank holds {self.length}")
        biggest = max(self.sizes)
        t = t.contiguous()
        if self.length < biggest:  # all_gather needs equal shapes: pad, then cut
            pad = list(t.shape)
            pad[dim] = biggest - self.length
            t = torch.cat([t, t.new_zeros(pad)], dim)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t, group=self.group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, self.sizes)], dim)

    def local_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global token indices ``rows`` ``[R]`` -> (bool ``[R]``: held here, local indices of
        those held)."""
        held = (rows >= self.offset) & (rows < self.offset + self.length)
        return held, rows[held] - self.offset


def slice_sizes(total: int, world: int, anything: bool = False) -> tuple:
    """Every rank's number of tokens when ``total`` tokens are split among ``world`` ranks as
    diffusers splits them: ``tensor.chunk`` (ceil(total / world) each, the last ones shorter),
    or with ``anything`` (its ``ulysses_anything`` / ``ring_anything`` configs) ``tensor_split``
    (the first ``total % world`` ranks one longer)."""
    if anything:
        q, extra = divmod(total, world)
        return tuple(q + (1 if r < extra else 0) for r in range(world))
    c = math.ceil(total / world)
    return tuple(max(0, min((r + 1) * c, total) - r * c) for r in range(world))


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
    anything = bool(getattr(cp, "ulysses_anything", False) or getattr(cp, "ring_anything", False))
    sizes = slice_sizes(total, world, anything)
    if sizes[rank] != local:
        raise ValueError(f"rank {rank} of {world} holds {local} of {total} video tokens; diffusers' "
                         f"{'tensor_split' if anything else 'chunk'} split gives it {sizes[rank]}: numina-hooks "
                         "cannot tell which tokens these are")
    return SequenceShard(rank=rank, sizes=sizes, group=group)
