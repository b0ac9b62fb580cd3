"""Phase 1 as a plugin: read the countable layout at the reference step and layer.

:class:`LayoutReader` observes (never changes) the attention of the conditional
branch at step t* and block l*. Default algorithm (``head_choice="containment"``): in the
self view it partitions every head of every frame (adaptive cut) and measures each
region's containment; in the cross view it builds each noun's focus mask per frame, chooses
the frame's head on the union of the nouns' focus masks, and keeps that head's regions on
each noun's focus as its instances. Paper preset (``NuminaConfig.paper()``): the self view
scores every head by its PCA image and turns the best head's map into proposals; the cross
view keeps the proposals each noun's focus covers. Counts are then voted over
``temporal_window`` neighbouring frames (the per-frame labels are kept as read). For Wan the
self-attention (``attn1``) of a block runs before its cross-attention (``attn2``); a
CogVideoX joint call offers the self view first.

With several blocks (``NuminaConfig.reading_layers``) the default algorithm partitions every
block's heads and keeps them all as candidates for the head choice, and each noun's
cross-attention is the mean over the blocks; the layout is built once the last block's
cross view has been seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..hookspecs import hookimpl
from .config import NuminaConfig
from .focus import FocusUnion
from .heads import score_self_attention_heads, select_cross_attention
from .layout import (Layout, _instances, _partition, _regions_to_instances, check_not_constant,
                     checked_cross_attention, checked_self_attention,
                     choose_from_partitions, cross_components, head_labels, lacks_self_evidence, noun_focus,
                     partition_options, with_unclaimed, proposals_from_self_map, self_attention_source,
                     splinter_option)
from .partition import (HeadPartitions, _as_source, concat_partitions, fill_lift, focus_regions,
                        head_instances, head_lift_threshold, link_head, link_regions, partition_from_qk,
                        temporal_vote)


@dataclass
class FrameReading:
    """What phase 1 read in one latent frame (numpy, ``[H, W]`` grids)."""

    self_head: int  # head within its block; -1 when no head had a region on any noun's focus
    head_scores: np.ndarray  # [heads]
    proposals: np.ndarray  # int32 [H, W]
    pca_rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]: the chosen head's PCA(3) colour image
    # (paper preset), or its regions in colour (default: the maps are gone by the cross view)
    partitions: Optional[HeadPartitions] = None  # every head's regions (default algorithm;
    # with several blocks read, block after block: pooled head k is head k % heads of block k // heads)
    self_layer: int = -1  # the block of ``self_head``
    pooled_head: int = -1  # index of the chosen head in ``partitions``
    from_cross: bool = False  # the nouns' instances are their cross-attention components: the
    # chosen head's instances did not stand out of its background (``self_evidence_factor``)


@dataclass
class NounReading:
    """One noun in every frame."""

    labels: list = field(default_factory=list)  # per frame int32 [H, W]
    counts: list = field(default_factory=list)  # per frame int, voted over temporal_window
    frame_counts: list = field(default_factory=list)  # per frame int, before the vote
    cross_heads: list = field(default_factory=list)  # per frame int (-1 = mean over heads)
    cross_maps: list = field(default_factory=list)  # per frame float32 [H, W] (the map read)
    focus: list = field(default_factory=list)  # per frame bool [H, W]


class LayoutReader:
    """Observe the reference step and layer; fill ``frames`` and ``nouns``.

    :param columns: noun -> text token columns (0 = first text token).
    :param step: t*, 0-based step index.
    :param layer: l*, 0-based block index, or a sequence of them (the blocks read, see
        ``NuminaConfig.resolve_layers``; several need ``head_choice="containment"``).
    """

    #: where the default algorithm reads the self view: "qk" (entries computed from the
    #: frame's q/k, no [heads, HW, HW] map) or "maps" (full maps; the older path)
    self_source = "qk"

    def __init__(self, columns: dict[str, list[int]], step: int, layer: int, config: NuminaConfig):
        self.columns = columns
        self.step = step
        self.layers = tuple(sorted({int(x) for x in layer})) if isinstance(layer, (tuple, list)) else (int(layer),)
        if not self.layers:
            raise ValueError("LayoutReader: layer is an empty sequence; expected a block index or several")
        if len(self.layers) > 1 and config.head_choice != "containment":
            raise ValueError(f"LayoutReader reads blocks {self.layers} with head_choice="
                             f"{config.head_choice!r}; several blocks need head_choice='containment'")
        self.layer = self.layers[(len(self.layers) - 1) // 2]  # l*, for messages
        self.config = config
        self.frames: list[FrameReading] = []
        self.nouns: dict[str, NounReading] = {}
        self.transformer: Optional[str] = None
        self.grid: Optional[tuple[int, int]] = None
        self.seconds = 0.0
        self._layer_parts: dict[int, list] = {}  # block -> per frame HeadPartitions
        self._layer_cross: dict[int, list] = {}  # block -> per noun [heads, F, H, W] (CPU)
        # block -> per frame the source of its self-attention entries, kept until the layout is
        # built when ``unclaimed_min_lift`` needs them (q/k on the model's device, or one map)
        self._layer_sources: dict[int, list] = {}

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
        if view.step != self.step or view.layer not in self.layers:
            return None
        rows = view.rows_of("cond")
        if not rows:
            return None
        t0 = time.perf_counter()
        with torch.no_grad():
            if view.kind == "self":
                if view.layer == self.layers[0]:  # a new reading starts
                    self._layer_parts, self._layer_cross, self._layer_sources = {}, {}, {}
                self._read_self(view, rows[0])
            elif view.kind == "cross" and view.layer in self._layer_parts:
                self._read_cross(view, rows[0])
        self.seconds += time.perf_counter() - t0
        return None

    def _read_self(self, view, row: int) -> None:
        geo = view.geometry
        cfg = self.config
        self.transformer = view.transformer
        self.grid = (geo.height, geo.width)
        if cfg.head_choice == "containment":
            read = [self._partition_frame(view, f, row) for f in range(geo.frames)]
            self._layer_parts[view.layer] = [parts for parts, _ in read]
            if cfg.unclaimed_min_lift is not None:
                self._layer_sources[view.layer] = [(source, None) for _, source in read]
            return
        self._layer_parts[view.layer] = None  # the frames below are the reading
        self.frames = []
        for f in range(geo.frames):
            # [heads, HW, HW], computed on the model's device; the layout stage runs on the CPU
            maps = view.self_attention_map(f, batch=[row])[0].cpu()
            check_not_constant(maps, f"self-attention of frame {f}")
            scores = score_self_attention_heads(
                maps, self.grid, sobel_weight=cfg.sobel_weight, block_size=cfg.block_size, stride=cfg.score_stride
            )
            head = int(scores.argmax())
            best = maps[head]
            parts = None
            if cfg.proposal_cut == "adaptive":
                source = self_attention_source(maps, cfg)
                parts = _partition(source, self.grid, cfg)
                fill_lift(parts, source, [np.full(len(x), k == head) for k, x in enumerate(parts.lift)],
                          cfg.lift_sample, cfg.min_member_lift)
                proposals = parts.regions[head]
                if cfg.unclaimed_min_lift is not None:  # the chosen head's map alone (its head 0)
                    self._layer_sources.setdefault(view.layer, []).append(
                        (self_attention_source(maps[head:head + 1].clone(), cfg), 0))
            else:
                proposals = proposals_from_self_map(best, self.grid, cfg)
            self.frames.append(
                FrameReading(
                    self_head=head,
                    head_scores=scores.numpy().astype(np.float32),
                    proposals=proposals,
                    pca_rgb=_pca_rgb(best, self.grid),
                    partitions=parts,
                    self_layer=view.layer,
                    pooled_head=head,
                )
            )

    def _partition_frame(self, view, f: int, row: int) -> HeadPartitions:
        """Every head's regions of frame ``f``, every region's lift measured (the nouns'
        focus is not known yet). ``self_source == "qk"``: from the frame's q/k on the model's
        device (one q.k pass for the softmax normalisers and the neighbour entries, region
        blocks on demand; only these small results reach the CPU); ``"maps"``: from the
        frame's ``[heads, HW, HW]`` map copied to the CPU (same regions, lifts equal to
        float32 rounding; kept for comparison)."""
        cfg = self.config
        name = f"self-attention of frame {f}"
        if self.self_source == "maps":
            maps = view.self_attention_map(f, batch=[row])[0].cpu()
            check_not_constant(maps, name)
            source = self_attention_source(maps, cfg)
            parts = _partition(source, self.grid, cfg)
        elif self.self_source == "qk":
            q, k = view.self_attention_qk(f, batch=[row])
            parts, source = partition_from_qk(q[0], k[0], view.scale, self.grid, name=name,
                                              exclude_own_key=cfg.own_key == "excluded",
                                              **partition_options(cfg))
        else:
            raise ValueError(f"LayoutReader.self_source={self.self_source!r}; expected 'qk' "
                             "(read from q/k) or 'maps' (read from full maps)")
        fill_lift(parts, source, None, cfg.lift_sample, cfg.min_member_lift,
                  null_tiles=cfg.min_lift_null_factor is not None)
        if cfg.link_ratio is not None:
            # the ratio alone here, before any focus is known: a splinter joins its object
            # once the head is chosen, among that focus's candidates (``_link_splinters``)
            link_regions(parts, source, cfg.link_ratio, cfg.min_lift, cfg.lift_sample)
        return parts, source

    def _link_splinters(self, frame, f: int, head: int, block: int, in_block: int, focus: np.ndarray) -> None:
        """Join the splinters of the chosen (pooled) ``head`` of frame ``f`` to their objects
        (``splinter_link_gap``) among its regions on ``focus`` (the union of the nouns'), as
        ``layout_from_attention`` links the chosen head's focus regions; ``in_block``: the
        head's index within its ``block``. Before the focus was known only the ratio linked
        regions (of every head, on the focus or not): a splinter rule there joined objects
        of the toy model to background regions."""
        cfg = self.config
        splinter = splinter_option(cfg)
        sources = self._layer_sources.get(block)
        if splinter is None or cfg.link_ratio is None or not sources:
            return
        source, head_in_source = sources[f]
        on_focus = focus_regions(frame.partitions, focus, cfg.focus_overlap)[head]
        threshold = head_lift_threshold(frame.partitions, head, focus, cfg.focus_overlap, cfg.min_lift,
                                        cfg.min_lift_null_factor)
        link_head(frame.partitions, head, _as_source(source),
                  in_block if head_in_source is None else head_in_source,
                  cfg.link_ratio, cfg.min_lift, cfg.lift_sample, splinter, on_focus, splinter_lift=threshold)

    def _read_cross(self, view, row: int) -> None:
        cfg = self.config
        every = view.cross_attention_maps(list(self.columns.values()), batch=[row])  # normalisers once
        every = [maps[0].cpu() for maps in every]  # per noun [heads, F, H, W]
        if cfg.head_choice == "containment":
            self._layer_cross[view.layer] = every
            if view.layer != self.layers[-1]:
                return  # the layout is built after the last block read
            read = [b for b in self.layers if b in self._layer_parts and b in self._layer_cross]
            heads = [self._layer_parts[b][0].regions.shape[0] for b in read]
            self.frames = [FrameReading(self_head=-1, head_scores=np.zeros(0, np.float32),
                                        proposals=np.zeros(self.grid, np.int32),
                                        pca_rgb=np.zeros((*self.grid, 3), np.float32),
                                        partitions=concat_partitions([self._layer_parts[b][f] for b in read]))
                           for f in range(len(self._layer_parts[read[0]]))]
            # every block's heads side by side: the mean over them is the mean over the blocks
            every = [torch.cat([self._layer_cross[b][i] for b in read], 0) for i in range(len(self.columns))]
            block_of = np.repeat(np.asarray(read), heads)
            head_in_block = np.concatenate([np.arange(h) for h in heads])
        crosses: dict[str, list] = {}
        for noun, maps in zip(self.columns, every):
            crosses[noun] = []
            for f in range(len(self.frames)):
                check_not_constant(maps[:, f], f"cross-attention of {noun!r} in frame {f}")
                cross, head = select_cross_attention(maps[:, f], cfg.cross_head)
                crosses[noun].append((cross, head, noun_focus(cross, self.grid, cfg)))
        if cfg.head_choice == "containment":
            for f, frame in enumerate(self.frames):
                union = FocusUnion([crosses[noun][f][2] for noun in crosses])
                head, _, scores = choose_from_partitions(frame.partitions, None, union, cfg)
                frame.pooled_head, frame.head_scores = head, scores
                if head >= 0:
                    self._link_splinters(frame, f, head, int(block_of[head]), int(head_in_block[head]), union)
                    frame.self_head, frame.self_layer = int(head_in_block[head]), int(block_of[head])
                    frame.proposals = frame.partitions.regions[head]
                    frame.from_cross = lacks_self_evidence(frame.partitions, head, union, cfg)
                frame.pca_rgb = _regions_rgb(frame.proposals)
        found: dict[str, list] = {noun: [] for noun in self.columns}
        for f, frame in enumerate(self.frames):
            focus = {noun: crosses[noun][f][2] for noun in self.columns}
            if frame.from_cross:
                labels = {noun: cross_components(fm, cfg) for noun, fm in focus.items()}
            elif frame.partitions is not None:
                source = source_head = None
                sources = self._layer_sources.get(frame.self_layer) if frame.pooled_head >= 0 else None
                if sources:
                    source, head_in_source = sources[f]
                    source_head = frame.self_head if head_in_source is None else head_in_source
                labels = instances_by_noun(frame.partitions, frame.pooled_head, focus, cfg, source,
                                           source_head)
            else:
                labels = {noun: _instances(frame.proposals, fm.mask, cfg.focus_overlap)
                          for noun, fm in focus.items()}
            for noun in self.columns:
                found[noun].append(labels[noun])
            if cfg.exclusive_regions and len(self.columns) > 1:
                maps = {noun: crosses[noun][f][0].reshape(self.grid).numpy() for noun in self.columns}
                exclusive_instances({noun: found[noun][f] for noun in self.columns}, maps)
        for noun in self.columns:
            reading = NounReading()
            for f, frame in enumerate(self.frames):
                cross, head, focus = crosses[noun][f]
                labels = found[noun][f]
                reading.labels.append(labels)
                reading.frame_counts.append(int(labels.max()))
                reading.cross_heads.append(head)
                reading.cross_maps.append(cross.reshape(self.grid).numpy().astype(np.float32))
                reading.focus.append(focus.mask)
            reading.counts = temporal_vote(reading.frame_counts, cfg.temporal_window)
            self.nouns[noun] = reading
        self._layer_sources = {}  # the layout is built: the q/k (or maps) kept for it go


def layouts_from_attention(self_attn, cross_attn: dict, grid: tuple[int, int],
                           config: NuminaConfig | None = None) -> dict[str, Layout]:
    """The countable layouts of several nouns of one frame, read together as phase 1 reads a
    prompt's counted nouns: one head chosen on the union of the nouns' focus masks, the
    cross-map fallback (``self_evidence_factor``) tested on that union, each noun keeping
    the head's instances on its own focus, and, with ``exclusive_regions``, one object
    counted for one noun (``exclusive_instances``). ``layout_from_attention`` reads one noun
    alone.

    Args:
        self_attn: ``[heads, HW, HW]`` self-attention of the frame (as for
            ``layout_from_attention``).
        cross_attn: noun -> ``[heads, HW]`` or ``[heads, H, W]``: each noun's
            cross-attention in this frame (summed over its token columns), the same heads
            as ``self_attn``.
        grid: (H, W) in patches.
        config: ``NuminaConfig`` (defaults if None); the containment head choice
            (``head_choice="containment"``) with the adaptive cut, the default.

    Returns:
        noun -> ``Layout`` (``self_head`` and ``head_scores`` are the frame's, shared by the
        nouns; ``from_cross`` likewise).

    Raises:
        ValueError: no noun, a config with another head choice or cut, or maps that
        ``layout_from_attention`` refuses (named by noun).
    """
    cfg = config or NuminaConfig()
    if not isinstance(cross_attn, dict) or not cross_attn:
        raise ValueError(f"cross_attn={type(cross_attn).__name__}: expected a dict noun -> [heads, HW] "
                         "cross-attention map with at least one noun (layout_from_attention reads one "
                         "map alone)")
    if cfg.head_choice != "containment" or cfg.proposal_cut != "adaptive":
        raise ValueError(f"layouts_from_attention reads the nouns together with the containment head "
                         f"choice and the adaptive cut; got head_choice={cfg.head_choice!r}, "
                         f"proposal_cut={cfg.proposal_cut!r}. Read each noun with "
                         "layout_from_attention for the paper preset")
    sa, (H, W) = checked_self_attention(self_attn, grid, "layouts_from_attention")
    maps, heads = {}, {}
    for noun, ca in cross_attn.items():
        checked = checked_cross_attention(ca, sa.shape, f"cross_attn[{noun!r}]")
        maps[noun], heads[noun] = select_cross_attention(checked, cfg.cross_head)
    focus = {noun: noun_focus(m, (H, W), cfg) for noun, m in maps.items()}
    source = self_attention_source(sa, cfg)
    parts = _partition(source, (H, W), cfg)
    union = FocusUnion(list(focus.values()))
    head, _, scores = choose_from_partitions(parts, source, union, cfg)
    from_cross = lacks_self_evidence(parts, head, union, cfg, source)
    if from_cross:
        labels = {noun: cross_components(f, cfg) for noun, f in focus.items()}
    else:
        labels = instances_by_noun(parts, head, focus, cfg, source, head)
    if cfg.exclusive_regions and len(labels) > 1:
        exclusive_instances(labels, {noun: m.reshape(H, W).numpy() for noun, m in maps.items()})
    proposals = parts.regions[head] if head >= 0 else np.zeros((H, W), np.int32)
    return {noun: Layout(labels=labels[noun], count=int(labels[noun].max()), self_head=head,
                         cross_head=heads[noun], focus=focus[noun].mask, proposals=proposals,
                         head_scores=scores, from_cross=from_cross)
            for noun in cross_attn}


def instances_by_noun(parts: HeadPartitions, head: int, focus: dict[str, np.ndarray],
                      cfg: NuminaConfig, source=None, source_head: int | None = None
                      ) -> dict[str, np.ndarray]:
    """Phase 1's rule for the nouns of one frame once the head is chosen: each noun keeps the
    instances of ``head`` (of ``parts``; -1 = none chosen: no instance) on its own focus
    (``focus``: noun -> bool [H, W] mask or ``focus.NounFocus``), and, with ``source`` (the frame's self-attention map or
    a source of its entries, whose head ``source_head`` is ``head``), the instances it finds
    in the focus those leave unclaimed (``with_unclaimed``). Returns noun -> int32 [H, W]
    labels; one object one noun (``exclusive_instances``) is the caller's next step."""
    grid = parts.regions.shape[1:]
    out = {}
    for noun, on_screen in focus.items():
        if head < 0:
            out[noun] = np.zeros(grid, dtype=np.int32)
            continue
        keep = head_instances(parts, head, on_screen, cfg.focus_overlap, cfg.min_lift,
                              cfg.min_lift_null_factor)
        labels = head_labels(parts, head, keep, cfg)
        if source is not None:
            labels = with_unclaimed(labels, on_screen, source, source_head, cfg, parts.sink_keys[head])
        out[noun] = labels
    return out


def exclusive_instances(labels: dict[str, np.ndarray], cross: dict[str, np.ndarray]) -> None:
    """Give each instance claimed by several nouns to one of them, in place.

    ``labels``: noun -> int ``[H, W]`` instances of one frame (0 = none); ``cross``: noun ->
    float ``[H, W]`` cross-attention map of the same frame. Where instances of two nouns
    overlap, the one whose noun concentrates more of its attention on the instance keeps
    it: the larger mean of ``cross`` over the instance relative to the map's mean over the
    frame (about 1 for a map spread evenly, more the more the noun singles the instance
    out; free of each map's scale). The other's is dropped and its instances are
    renumbered 1..n in raster order of their first pixel, as every layout is. One object
    is counted for one noun, never for two.
    """
    nouns = list(labels)
    score = {}
    for n in nouns:
        mean = float(cross[n].mean())
        rel = cross[n] / mean if mean > 0 else np.zeros_like(cross[n])
        score[n] = {k: float(rel[labels[n] == k].mean()) for k in range(1, int(labels[n].max()) + 1)}
    drop = {n: set() for n in nouns}
    for i, a in enumerate(nouns):
        for b in nouns[i + 1:]:
            both = (labels[a] > 0) & (labels[b] > 0)
            for ka, kb in set(zip(labels[a][both].tolist(), labels[b][both].tolist())):
                if score[a][ka] >= score[b][kb]:
                    drop[b].add(kb)
                else:
                    drop[a].add(ka)
    for n in nouns:
        if drop[n]:
            keep = np.ones(int(labels[n].max()) + 1, dtype=bool)
            keep[0] = False
            keep[list(drop[n])] = False
            labels[n][...] = _regions_to_instances(labels[n], keep)


def _regions_rgb(regions: np.ndarray) -> np.ndarray:
    """An int [H, W] region map as an ``[H, W, 3]`` image in [0, 1]: black background, one
    fixed colour per region id (golden-ratio hues)."""
    ids = regions.astype(np.float64)
    hue = (ids * 0.6180339887) % 1.0
    rgb = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hue + o)) for o in (0.0, 1 / 3, 2 / 3)], -1)
    return (rgb * (regions > 0)[..., None]).astype(np.float32)


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
