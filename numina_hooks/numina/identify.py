"""Phase 1 as a plugin: read the countable layout at the reference step and layer.

:class:`LayoutReader` observes (never changes) the attention of the conditional
branch at step t* and block l*: in the self view it scores every head per frame
and turns the best head's map into spatial proposals; in the cross view it
builds each noun's focus mask per frame and keeps the proposals it covers as
instances. For Wan the self-attention (``attn1``) of a block runs before its
cross-attention (``attn2``); a CogVideoX joint call offers the self view first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..hookspecs import hookimpl
from .config import NuminaConfig
from .heads import score_self_attention_heads, select_cross_attention
from .layout import _instances, focus_mask, proposals_from_self_map


@dataclass
class FrameReading:
    """What phase 1 read in one latent frame (numpy, ``[H, W]`` grids)."""

    self_head: int
    head_scores: np.ndarray  # [heads]
    proposals: np.ndarray  # int32 [H, W]
    pca_rgb: np.ndarray  # float32 [H, W, 3] in [0, 1], the chosen head's PCA(3) colour image


@dataclass
class NounReading:
    """One noun in every frame."""

    labels: list = field(default_factory=list)  # per frame int32 [H, W]
    counts: list = field(default_factory=list)  # per frame int
    cross_heads: list = field(default_factory=list)  # per frame int (-1 = mean over heads)
    cross_maps: list = field(default_factory=list)  # per frame float32 [H, W] (the map read)
    focus: list = field(default_factory=list)  # per frame bool [H, W]


class LayoutReader:
    """Observe the reference step and layer; fill ``frames`` and ``nouns``.

    :param columns: noun -> text token columns (0 = first text token).
    :param step: t*, 0-based step index.
    :param layer: l*, 0-based block index.
    """

    def __init__(self, columns: dict[str, list[int]], step: int, layer: int, config: NuminaConfig):
        self.columns = columns
        self.step = step
        self.layer = layer
        self.config = config
        self.frames: list[FrameReading] = []
        self.nouns: dict[str, NounReading] = {}
        self.transformer: Optional[str] = None
        self.grid: Optional[tuple[int, int]] = None
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        return bool(self.nouns) and len(self.nouns) == len(self.columns)

    def counts_found(self) -> dict[str, list[int]]:
        return {noun: list(r.counts) for noun, r in self.nouns.items()}

    def matches(self, counts: dict[str, int]) -> bool:
        """Every noun has its asked count in every frame."""
        return self.done and all(all(c == counts[n] for c in self.nouns[n].counts) for n in counts)

    @hookimpl
    def on_attention(self, view):
        if view.step != self.step or view.layer != self.layer:
            return None
        rows = view.rows_of("cond")
        if not rows:
            return None
        t0 = time.perf_counter()
        with torch.no_grad():
            if view.kind == "self":
                self._read_self(view, rows[0])
            elif view.kind == "cross" and self.frames:
                self._read_cross(view, rows[0])
        self.seconds += time.perf_counter() - t0
        return None

    def _read_self(self, view, row: int) -> None:
        geo = view.geometry
        cfg = self.config
        self.transformer = view.transformer
        self.grid = (geo.height, geo.width)
        self.frames = []
        for f in range(geo.frames):
            maps = view.self_attention_map(f, batch=[row])[0]  # [heads, HW, HW]
            scores = score_self_attention_heads(
                maps, self.grid, gamma=cfg.gamma, block_size=cfg.block_size, stride=cfg.score_stride
            )
            head = int(scores.argmax())
            best = maps[head]
            self.frames.append(
                FrameReading(
                    self_head=head,
                    head_scores=scores.numpy().astype(np.float32),
                    proposals=proposals_from_self_map(best, self.grid, cfg),
                    pca_rgb=_pca_rgb(best, self.grid),
                )
            )

    def _read_cross(self, view, row: int) -> None:
        cfg = self.config
        for noun, cols in self.columns.items():
            maps = view.cross_attention_map(cols, batch=[row])[0]  # [heads, F, H, W]
            reading = NounReading()
            for f, frame in enumerate(self.frames):
                cross, head = select_cross_attention(maps[:, f], cfg.cross_head)
                focus = focus_mask(cross, self.grid, cfg)
                labels = _instances(frame.proposals, focus, cfg.tau)
                reading.labels.append(labels)
                reading.counts.append(int(labels.max()))
                reading.cross_heads.append(head)
                reading.cross_maps.append(cross.reshape(self.grid).numpy().astype(np.float32))
                reading.focus.append(focus)
            self.nouns[noun] = reading


def _pca_rgb(self_map: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """PCA(3) of the rows of a ``[HW, HW]`` map as an ``[H, W, 3]`` image in [0, 1]."""
    x = self_map.float() - self_map.float().mean(0, keepdim=True)
    q = min(3, x.shape[0], x.shape[1])
    generator_state = torch.random.get_rng_state()  # svd_lowrank draws random numbers
    try:
        u, s, _ = torch.svd_lowrank(x, q=min(q + 4, min(x.shape)), niter=2)
    finally:
        torch.random.set_rng_state(generator_state)
    comps = (u[:, :q] * s[:q]).reshape(grid[0], grid[1], q)
    if q < 3:
        comps = torch.cat([comps, torch.zeros(grid[0], grid[1], 3 - q)], dim=-1)
    lo = comps.amin(dim=(0, 1), keepdim=True)
    hi = comps.amax(dim=(0, 1), keepdim=True)
    return ((comps - lo) / (hi - lo).clamp_min(1e-12)).numpy().astype(np.float32)
