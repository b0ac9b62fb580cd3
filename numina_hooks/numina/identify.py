"""Phase 1 as a plugin: read the countable layout at the reference step and layer.

:class:`LayoutReader` observes (never changes) the attention of the conditional
branch at step t* and block l*. Default algorithm (``head_choice="containment"``): in the
self view it partitions every head of every frame (adaptive cut) and measures each
region's containment; in the cross view it builds each noun's focus mask per frame and
reads the nouns by ``read_nouns``: the head chosen on the union of the nouns' focus masks,
each noun keeping that head's regions on its own focus as its instances, one object one
noun. Paper preset (``NuminaConfig.paper()``): the self view
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

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..hookspecs import hookimpl
from .config import NuminaConfig
from .focus import FocusUnion, region_hits, shown_instances
from .heads import score_self_attention_heads, select_cross_attention
from .finer import finer_head
from .layout import (Layout, _instances, _partition, _regions_to_instances, check_not_constant,
                     checked_cross_attention, checked_self_attention,
                     choose_head_on, fallback_layout, head_labels, lacks_self_evidence, noun_focus,
                     link_chosen_head, partition_options, with_unclaimed, head_cut_regions, proposals_from_self_map, self_attention_source,
                     splinter_option, reach_option, bridge_option, head_missed_objects, map_bumps,
                     strong_components)
from .partition import (HeadPartitions, _as_source, _renumbered, concat_partitions, fill_lift, focus_regions,
                        head_instances, head_lift_threshold, head_region_lifts, link_head, link_regions,
                        partition_from_qk, temporal_vote)
from .split import split_merged_instances


@dataclass
class FrameReading:
    """What phase 1 read in one latent frame (numpy, ``[H, W]`` grids). The default algorithm
    keeps every head's regions here (``partitions``) and each noun's chosen head in its
    ``NounReading``; with the image-statistics head score (paper preset) the frame's one head,
    which every noun reads, is here too."""

    self_head: int  # paper preset: the frame's head within its block; -1 in the default algorithm
    head_scores: np.ndarray  # [heads] (paper preset)
    proposals: np.ndarray  # int32 [H, W] (paper preset: the frame's head's proposals)
    pca_rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]: the frame's head's PCA(3) colour image (paper preset)
    partitions: Optional[HeadPartitions] = None  # every head's regions (default algorithm;
    # with several blocks read, block after block: pooled head k is head k % heads of block k // heads)
    self_layer: int = -1  # the block of ``self_head``
    pooled_head: int = -1  # index of ``self_head`` in ``partitions``


@dataclass
class NounReading:
    """One noun in every frame."""

    labels: list = field(default_factory=list)  # per frame int32 [H, W]
    counts: list = field(default_factory=list)  # per frame int, voted over temporal_window
    frame_counts: list = field(default_factory=list)  # per frame int, before the vote
    self_heads: list = field(default_factory=list)  # per frame: the chosen self head within its
    # block (-1: no head had a region on the focus)
    self_layers: list = field(default_factory=list)  # per frame: that head's block (-1: none)
    from_cross: list = field(default_factory=list)  # per frame bool: the instances are read
    # from the noun's cross-attention (``fallback_layout``: the chosen head's did not stand out
    # of their background, or its cross map showed objects the head missed:
    # ``cross_fallback_excess``)
    pca_rgb: list = field(default_factory=list)  # per frame float32 [H, W, 3]: the chosen head's
    # regions in colour (default), or its PCA(3) colour image (paper preset)
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
        # block -> per frame its HeadPartitions before the ratio linked them, kept with the
        # sources when ``link_map_veto`` may undo a link of the chosen head (``_link_splinters``)
        self._layer_unlinked: dict[int, list] = {}

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
                    self._layer_unlinked = {}
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
        if self._vetoes_links():
            self._layer_unlinked.setdefault(view.layer, []).append(_copy_partitions(parts))
        if cfg.link_ratio is not None:
            # the ratio alone here, before any focus is known: a splinter joins its object
            # once the head is chosen, among that focus's candidates (``_link_splinters``)
            link_regions(parts, source, cfg.link_ratio, cfg.min_lift, cfg.lift_sample,
                         reach=reach_option(cfg))
        return parts, source

    def _vetoes_links(self) -> bool:
        """The chosen head's ratio links are made again once the focus is known: the map's
        veto (``link_map_veto``) may undo some (the sources kept, the ratio and the bridge on)."""
        cfg = self.config
        return (cfg.link_map_veto is not None and cfg.link_bridge is not None
                and cfg.link_ratio is not None and cfg.unclaimed_min_lift is not None)

    def _link_splinters(self, parts: HeadPartitions, f: int, head: int, block: int, in_block: int,
                        focus) -> None:
        """Join the splinters of the chosen (pooled) ``head`` of frame ``f`` (its regions in
        ``parts``, changed in place) to their objects (``splinter_link_gap``) among its regions
        on ``focus``, as ``layout_from_attention`` links the chosen head's focus regions;
        ``in_block``: the head's index within its ``block``. Before the focus was known only
        the ratio linked regions (of every head, on the focus or not): a splinter rule there
        joined objects of the toy model to background regions. With ``link_bridge``, pieces
        the noun's map holds in one bump join too (``layout.link_chosen_head``). With
        ``link_map_veto``, the head's regions are first put back as they were before the
        ratio linked them and linked again, the map's veto and bridge applied: a pair the
        map holds in separate bumps is not joined here either."""
        cfg = self.config
        splinter, bridge = splinter_option(cfg), bridge_option(focus, cfg)
        sources = self._layer_sources.get(block)
        if (splinter is None and bridge is None) or cfg.link_ratio is None or not sources:
            return
        source, head_in_source = sources[f]
        own = in_block if head_in_source is None else head_in_source
        if bridge is not None and bridge.veto is not None and block in self._layer_unlinked:
            _restore_head(parts, head, self._layer_unlinked[block][f], in_block)
            link_head(parts, head, _as_source(source), own, cfg.link_ratio, cfg.min_lift,
                      cfg.lift_sample, reach=reach_option(cfg), bridge=bridge)
        on_focus = focus_regions(parts, focus, cfg.focus_overlap)[head]
        threshold = head_lift_threshold(parts, head, focus, cfg.focus_overlap, cfg.min_lift,
                                        cfg.min_lift_null_factor)
        link_head(parts, head, _as_source(source), own, cfg.link_ratio, cfg.min_lift, cfg.lift_sample,
                  splinter, on_focus, splinter_lift=threshold, reach=reach_option(cfg), bridge=bridge)

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
        self.nouns = {noun: NounReading() for noun in self.columns}
        for f, frame in enumerate(self.frames):
            focus = {noun: crosses[noun][f][2] for noun in self.columns}
            # each noun's map as the mean over its token columns: one scale for the claim
            maps = {noun: crosses[noun][f][0].reshape(self.grid).numpy() / max(1, len(cols))
                    for noun, cols in self.columns.items()}
            if cfg.head_choice == "containment":
                found = self._read_frame_nouns(frame, f, focus, maps, block_of, head_in_block)
            else:
                found = self._read_frame_nouns_by_frame_head(frame, f, focus, maps)
            for noun, r in found.items():
                reading = self.nouns[noun]
                reading.labels.append(r.labels)
                reading.frame_counts.append(int(r.labels.max()))
                if cfg.head_choice == "containment":
                    head = r.head
                    reading.self_heads.append(int(head_in_block[head]) if head >= 0 else -1)
                    reading.self_layers.append(int(block_of[head]) if head >= 0 else -1)
                    reading.pca_rgb.append(_regions_rgb(r.regions))
                else:
                    reading.self_heads.append(frame.self_head)
                    reading.self_layers.append(frame.self_layer)
                    reading.pca_rgb.append(frame.pca_rgb)
                reading.from_cross.append(r.from_cross)
        for noun, reading in self.nouns.items():
            for f in range(len(self.frames)):
                cross, head, on = crosses[noun][f]
                reading.cross_heads.append(head)
                reading.cross_maps.append(cross.reshape(self.grid).numpy().astype(np.float32))
                reading.focus.append(on.mask)
            reading.counts = temporal_vote(reading.frame_counts, cfg.temporal_window)
        self._layer_sources = {}  # the layout is built: the q/k (or maps) kept for it go

    def _read_frame_nouns(self, frame, f: int, focus: dict, maps: dict, block_of: np.ndarray,
                          head_in_block: np.ndarray) -> dict:
        """The default algorithm's rule (``read_nouns``) on frame ``f``'s pooled heads: each
        block's heads linked with that block's kept source (``_link_splinters``), unclaimed
        instances read from it."""
        def link(parts: HeadPartitions, head: int, on) -> None:
            self._link_splinters(parts, f, head, int(block_of[head]), int(head_in_block[head]), on)

        def source_of(head: int):
            sources = self._layer_sources.get(int(block_of[head]))
            if not sources:
                return None, None
            source, head_in_source = sources[f]
            return source, int(head_in_block[head]) if head_in_source is None else head_in_source

        return read_nouns(frame.partitions, focus, maps, self.config, link=link, source_of=source_of)

    def _read_frame_nouns_by_frame_head(self, frame, f: int, focus: dict, maps: dict) -> dict:
        """The image-statistics head choice (paper preset): every noun reads the frame's head,
        chosen in the self view; its regions on the noun's focus are its instances."""
        cfg = self.config
        if frame.partitions is not None:
            source = source_head = None
            sources = self._layer_sources.get(frame.self_layer)
            if sources:
                source, head_in_source = sources[f]
                source_head = frame.self_head if head_in_source is None else head_in_source
            labels = instances_by_noun(frame.partitions, frame.pooled_head, focus, cfg, source, source_head)
        else:
            labels = {noun: _instances(frame.proposals, fm.mask, cfg.focus_overlap)
                      for noun, fm in focus.items()}
        if cfg.exclusive_regions and len(labels) > 1:
            exclusive_instances(labels, maps, cfg.claim_measure)
        return {noun: NounInFrame(labels=lab, head=frame.pooled_head, scores=frame.head_scores,
                                  from_cross=False, regions=frame.proposals) for noun, lab in labels.items()}


@dataclass
class NounInFrame:
    """One noun's layout in one frame as phase 1's rule reads it (``read_nouns``)."""

    labels: np.ndarray  # int32 [H, W], 0 background, 1..n instances
    head: int  # the chosen head's index in the frame's partitions; -1 = none had a region on the focus
    scores: np.ndarray  # float32 [heads]: the head scores it was chosen by
    from_cross: bool  # the labels are read from the cross map (``fallback_layout``; ``self_evidence_factor``,
    # ``cross_fallback_excess``)
    regions: np.ndarray  # int32 [H, W]: the chosen head's regions, its pieces linked (zeros: none)
    # bool [H, W]: pixels of instances that only step 5c's shape-matched null let in
    # (``unclaimed_peak_null_z``); the tests of the head's own evidence leave them out. None: none
    weak: np.ndarray | None = None

    def strict_labels(self) -> np.ndarray:
        """``labels`` without the pixels of ``weak``, renumbered 1..m (int32 [H, W])."""
        return self.labels if self.weak is None else _renumbered(np.where(self.weak, 0, self.labels))

    def layout(self, cross_head: int, focus: np.ndarray) -> Layout:
        """This reading as a ``Layout``, with the noun's ``cross_head`` and ``focus`` (bool [H, W])."""
        return Layout(labels=self.labels, count=int(self.labels.max()), self_head=self.head,
                      cross_head=cross_head, focus=focus, proposals=self.regions,
                      head_scores=self.scores, from_cross=self.from_cross)


def _component_lifts(source_and_head, cfg: NuminaConfig, grid):
    """``component_lift`` for ``layout.head_missed_objects``: the containment lift, in the
    chosen head, of each of a noun's strong cross-map components (int [H, W] ids 1..m ->
    float [m + 1]), measured as an instance's (``partition.head_region_lifts``, members
    sampled by ``lift_sample``). None without a source or a head (every strong component
    counts)."""
    source, head = source_and_head
    if source is None or head < 0 or cfg.cross_fallback_evidence is None:
        return None
    source = _as_source(source)
    return lambda strong: head_region_lifts(source, head, strong, cfg.lift_sample, grid)


def read_nouns(parts: HeadPartitions, focus: dict, maps: dict, cfg: NuminaConfig, *,
               source=None, link=None, source_of=None) -> dict[str, NounInFrame]:
    """Phase 1's rule for the counted nouns of one frame, after every head is partitioned
    (containment head choice, adaptive cut): ``LayoutReader`` and ``layouts_from_attention``
    both read through it.

    1. The head: one head is chosen on the union of the nouns' focus masks (a choice that
       pools every noun's objects); one noun alone reads the head it chooses on its focus.
    2. Each noun reads that head on its own focus, as ``layout_from_attention`` reads a noun
       alone: the head's pieces of one object linked (``link(parts, head, focus)``; None =
       ``layout.link_chosen_head`` with ``source``; with one noun, the copy the finer head's
       trial linked already when it made one: the same regions), the cross-map fallback
       (``self_evidence_factor``) tested with the other nouns' regions left out of the
       background pieces (they are objects), and the head's instances on the focus kept,
       plus those found in the focus they leave unclaimed; or, after the fallback, the
       noun's layout read from its cross map. Measuring lifts and linking change the partitions in
       place, so every choice and reading after the first works on a copy of them as they
       were given.
    3. With ``cfg.exclusive_regions``, one object one noun (``exclusive_instances`` by
       ``cfg.claim_measure``).
    4. The second fallback (``cross_fallback_excess``): a noun whose map keeps that many
       more strong components (``layout.strong_components``, given to one noun each by the
       same claim) than the instances it kept, or that many touching none of them
       (``layout.head_missed_objects``), is read from its cross map, and the claim runs
       again.
    5. Instances the map does not show (``instance_map_contrast``): each noun's instances
       read from the self-attention keep only those brighter in its map than the background
       around them (``focus.shown_instances``); a noun left with none is read from its
       cross map, and the claim runs again.

    Args:
        parts: every head's regions of the frame (the first choice or reading changes them
            in place: lifts measured, pieces linked).
        focus: noun -> ``focus.NounFocus`` (its focus mask, map and levels).
        maps: noun -> float ``[H, W]``: the cross-attention the focus was built from, every
            noun's of one kind (mean over its token columns): the "share" claim compares them.
        source: the frame's source of self-attention entries, to measure lifts not measured
            yet (None: every lift is measured).
        link: ``link(parts, head, focus)`` joins the chosen head's pieces (the reader's blocks
            have their own sources); None = ``link_chosen_head`` with ``source`` when given.
        source_of: ``source_of(head) -> (source, head within it)`` for the unclaimed
            instances (``unclaimed_min_lift``); None = ``(source, head)``; a None source
            skips them.
    """
    pristine = _copy_partitions(parts) if len(focus) > 1 else None
    used = []

    def partitions() -> HeadPartitions:
        """``parts`` for the first use (and every use with one noun), then copies of it as
        given."""
        if pristine is None or not used:
            used.append(True)
            return parts
        return _copy_partitions(pristine)

    nouns_focus = FocusUnion(list(focus.values())) if len(focus) > 1 else next(iter(focus.values()))
    chosen_on = partitions()
    head, scores, instances = choose_head_on(chosen_on, source, nouns_focus, cfg)
    linked = None  # a copy with ``head`` linked on ``nouns_focus`` (the finer head's trial)
    if cfg.finer_head_ratio is not None and (link is not None or source is not None):
        head, linked = finer_head(
            chosen_on, head, scores, instances, nouns_focus, cfg.finer_head_ratio,
            link or (lambda p, k, on: link_chosen_head(p, source, k, on, cfg)),
            lambda p, k, on: head_instances(p, k, on, cfg.focus_overlap, cfg.min_lift,
                                            cfg.min_lift_null_factor, cfg.instance_null_factor))
    grid = parts.regions.shape[1:]
    out = {}
    reuse = linked is not None and len(focus) == 1  # one noun: linked on its focus already
    for noun, on in focus.items():
        read = linked if reuse else partitions()
        if head >= 0 and not reuse:
            if source is not None and len(focus) > 1:  # the lifts the noun's own choice would
                # measure (one noun: the head was chosen on its focus, they are measured)
                choose_head_on(read, source, on, cfg, head)
            if link is not None:
                link(read, head, on)
            elif source is not None:
                link_chosen_head(read, source, head, on, cfg)
        others = [f for other, f in focus.items() if other != noun]
        others = FocusUnion(others) if others else None
        from_cross = lacks_self_evidence(read, head, on, cfg, source, others)
        only_null = None  # bool [H, W]: the instances only step 5c's null let in (None: none)
        if from_cross:
            labels = fallback_layout(on, cfg)
        else:
            src, src_head = source_of(head) if source_of is not None and head >= 0 else (source, head)
            weak = {}
            labels = instances_by_noun(read, head, {noun: on}, cfg, src, src_head, others=others,
                                       weak=weak)[noun]
            if weak.get(noun) is not None and weak[noun].any():
                only_null = weak[noun]
            if cfg.merged_split_ratio is not None and src is not None and head >= 0:
                labels = split_merged_instances(labels, map_bumps(on, cfg), on.cross, src, src_head,
                                                cfg.merged_split_ratio, sample=max(cfg.lift_sample, 16),
                                                min_size=cfg.cross_fallback_min_size)
            strict = labels if only_null is None else np.where(only_null, 0, labels)
            if not strict.any() and head >= 0 and cfg.instance_null_factor is not None and \
                    cfg.self_evidence_factor is not None and \
                    head_instances(read, head, on, cfg.focus_overlap, cfg.min_lift,
                                   cfg.min_lift_null_factor).any():
                # every instance of the head keeps no more than its background pieces: the
                # head tells nothing about this noun's objects (as step 8 decides for a frame)
                from_cross, labels = True, fallback_layout(on, cfg)
        out[noun] = NounInFrame(labels=labels, head=head, scores=scores, from_cross=from_cross,
                                regions=read.regions[head].copy() if head >= 0 else np.zeros(grid, np.int32),
                                weak=None if from_cross else only_null)
    exclusive = cfg.exclusive_regions and len(out) > 1

    def claim() -> None:
        """One object, one noun: each instance several nouns hold goes to one of them."""
        exclusive_instances({noun: r.labels for noun, r in out.items()}, maps, cfg.claim_measure, focus)

    if exclusive:
        claim()
    # objects the head missed (``cross_fallback_excess``), once every noun is read and each
    # object given to one noun: a noun counts the instances it kept (one whose instances are
    # all other nouns' objects is absent and stays at 0) against the strong bumps of its map
    # that it keeps when each is given to one noun too (a map leaks onto a similar
    # category's objects)
    if cfg.cross_fallback_excess is not None:
        strong = {noun: strong_components(f, cfg) for noun, f in focus.items()}
        if exclusive:
            exclusive_instances(strong, maps, cfg.claim_measure, focus)
        switched = False
        lifts = _component_lifts(source_of(head) if source_of is not None and head >= 0 else (source, head),
                                 cfg, grid)
        for noun, r in out.items():
            # bumps only the shape-matched null let in are no evidence that the head holds
            # every object: the test reads the head's instances without them
            if r.from_cross:
                continue
            # step 8b's floor: the bar the head's instances passed (``evidence_floor``)
            threshold = head_lift_threshold(parts, head, focus[noun], cfg.focus_overlap, cfg.min_lift,
                                            cfg.min_lift_null_factor) \
                if cfg.cross_fallback_evidence_floor == "head" and head >= 0 else None
            if head_missed_objects(r.strict_labels(), focus[noun], cfg, strong[noun], lifts, threshold):
                r.labels, r.from_cross, switched = fallback_layout(focus[noun], cfg), True, True
                r.weak = None
        if exclusive and switched:
            claim()
    # instances the noun's map does not show as a bump (``instance_map_contrast``, step 8c):
    # pieces of background on a lifted neighbourhood; a noun left with none is read from its map
    if cfg.instance_map_contrast is not None:
        switched = False
        for noun, r in out.items():
            if r.from_cross or not r.labels.any():
                continue
            r.labels = shown_instances(r.labels, focus[noun], cfg.instance_map_contrast)
            if not r.labels.any():
                r.labels, r.from_cross, switched = fallback_layout(focus[noun], cfg), True, True
                r.weak = None
        if exclusive and switched:
            claim()
    return out


def _copy_partitions(parts: HeadPartitions) -> HeadPartitions:
    """A copy of ``parts`` that measuring lifts (``fill_lift``, in place into the lift
    arrays and null lists) and linking (``_merge_regions``: a head's row of ``regions`` and
    its list entries) leave ``parts`` alone in; the arrays those never change (thresholds,
    sink keys, the regions as cut) are shared."""
    return dataclasses.replace(
        parts, regions=parts.regions.copy(), lift=[x.copy() for x in parts.lift],
        contrast=list(parts.contrast), sink=list(parts.sink),
        null_lift=None if parts.null_lift is None else [None if x is None else x.copy() for x in parts.null_lift])


def _restore_head(parts: HeadPartitions, head: int, unlinked: HeadPartitions, own: int) -> None:
    """Put head ``head`` of ``parts`` back, in place, as head ``own`` of ``unlinked`` (the
    same frame's partitions before any link: its regions, lifts, contrasts and sink flags;
    copies, so that ``unlinked`` stays as it is)."""
    parts.regions[head] = unlinked.regions[own]
    parts.lift[head] = unlinked.lift[own].copy()
    parts.contrast[head] = unlinked.contrast[own].copy()
    parts.sink[head] = unlinked.sink[own].copy()


def layouts_from_attention(self_attn, cross_attn: dict, grid: tuple[int, int],
                           config: NuminaConfig | None = None) -> dict[str, Layout]:
    """The countable layouts of several nouns of one frame, read together as phase 1 reads a
    prompt's counted nouns (``read_nouns``): the head chosen on the union of their focus
    masks, each noun read on its own focus (linked, tested for the cross-map fallback with
    the other nouns' regions left out of its background), and, with ``exclusive_regions``,
    one object counted for one noun (``claim_measure``). With one noun it gives what
    ``layout_from_attention`` gives.

    Args:
        self_attn: ``[heads, HW, HW]`` self-attention of the frame (as for
            ``layout_from_attention``).
        cross_attn: noun -> ``[heads, HW]`` or ``[heads, H, W]``: each noun's
            cross-attention in this frame, the same heads as ``self_attn`` (or one map for
            the noun: ``[HW]``, ``[H, W]`` or ``[1, HW]``), every noun's of
            one kind: the mean over its token columns, as phase 1 reads it (the claim of
            ``exclusive_regions`` compares the nouns' maps directly).
        grid: (H, W) in patches.
        config: ``NuminaConfig`` (defaults if None); the containment head choice
            (``head_choice="containment"``) with the adaptive cut, the default.

    Returns:
        noun -> ``Layout`` (``self_head`` and ``head_scores`` are the frame's, shared by the
        nouns; ``proposals`` the head's regions as linked on the noun's focus; ``from_cross``
        the noun's).

    Raises:
        ValueError: no noun, a config with another head choice or cut, or maps that
        ``layout_from_attention`` refuses (named by noun).
    """
    cfg = NuminaConfig.given(config, "layouts_from_attention")
    if not isinstance(cross_attn, dict) or not cross_attn:
        raise ValueError(f"cross_attn={type(cross_attn).__name__}: expected a dict noun -> [heads, HW] "
                         "cross-attention map with at least one noun (layout_from_attention reads one "
                         "map alone)")
    if cfg.head_choice != "containment" or cfg.proposal_cut != "adaptive":
        raise ValueError(f"layouts_from_attention reads the nouns together with the containment head "
                         f"choice and the adaptive cut; got head_choice={cfg.head_choice!r}, "
                         f"proposal_cut={cfg.proposal_cut!r}. Read each noun with "
                         "layout_from_attention for the paper preset")
    sa, (H, W) = checked_self_attention(self_attn, grid, "layouts_from_attention", entries_only=True)
    maps, heads = {}, {}
    for noun, ca in cross_attn.items():
        checked = checked_cross_attention(ca, sa.shape, f"cross_attn[{noun!r}]")
        maps[noun], heads[noun] = select_cross_attention(checked, cfg.cross_head)
    focus = {noun: noun_focus(m, (H, W), cfg) for noun, m in maps.items()}
    source = self_attention_source(sa, cfg)
    parts = _partition(source, (H, W), cfg)
    read = read_nouns(parts, focus, {noun: m.reshape(H, W).numpy() for noun, m in maps.items()}, cfg,
                      source=source)
    return {noun: r.layout(heads[noun], focus[noun].mask) for noun, r in read.items()}


def instances_by_noun(parts: HeadPartitions, head: int, focus: dict[str, np.ndarray],
                      cfg: NuminaConfig, source=None, source_head: int | None = None,
                      others=None, weak: dict | None = None) -> dict[str, np.ndarray]:
    """Phase 1's rule for the nouns of one frame once the head is chosen: each noun keeps the
    instances of ``head`` (of ``parts``; -1 = none chosen: no instance) on its own focus
    (``focus``: noun -> bool [H, W] mask or ``focus.NounFocus``), and, with ``source`` (the frame's self-attention map or
    a source of its entries, whose head ``source_head`` is ``head``), the instances it finds
    in the focus those leave unclaimed (``with_unclaimed``). The regions on the other nouns'
    focus (those of ``focus`` and ``others``: a mask, ``NounFocus`` or ``FocusUnion`` of nouns
    read apart; None: none) are objects, not background pieces, and stay out of each noun's
    null (``cfg.instance_null_factor``). Returns noun -> int32 [H, W] labels; one object one
    noun (``exclusive_instances``) is the caller's next step. ``weak``: a dict filled with noun
    -> bool [H, W], the pixels of instances only step 5c's shape-matched null let in."""
    grid = parts.regions.shape[1:]
    out = {}
    for noun, on_screen in focus.items():
        if head < 0:
            out[noun] = np.zeros(grid, dtype=np.int32)
            continue
        rest = [f for other, f in focus.items() if other != noun] + ([] if others is None else [others])
        elsewhere = region_hits(parts.regions[head], FocusUnion(rest), cfg.focus_overlap) if rest else None
        keep = head_instances(parts, head, on_screen, cfg.focus_overlap, cfg.min_lift,
                              cfg.min_lift_null_factor, cfg.instance_null_factor, elsewhere)
        labels = head_labels(parts, head, keep, cfg)
        if source is not None:
            labels, only_null = with_unclaimed(labels, on_screen, source, source_head, cfg,
                                               parts.sink_keys[head], head_cut_regions(parts, head),
                                               weak=True)
            if weak is not None:
                weak[noun] = only_null
        out[noun] = labels
    return out


def exclusive_instances(labels: dict[str, np.ndarray], cross: dict[str, np.ndarray],
                        measure: str = "median", focus: dict | None = None) -> None:
    """Give each instance claimed by several nouns to one of them, in place.

    ``labels``: noun -> int ``[H, W]`` instances of one frame (0 = none); ``cross``: noun ->
    float ``[H, W]`` cross-attention map of the same frame, every noun's of one kind (the
    mean, or the sum, over its token columns). Where instances of two nouns overlap, the
    noun that scores higher on its instance keeps it; ``measure``
    (``NuminaConfig.claim_measure``):

    - "median": the mean over the instance divided by the noun's background level, the
      median of its map over the frame (the floor its focus was cut from: ``focus``: noun
      -> ``focus.NounFocus``; without it, the map's median): free of each map's scale, and,
      as long as a noun's objects cover less than half the frame, of how many it has;
    - "share": the mean of ``cross`` over the instance (the nouns' maps are columns of one
      text softmax: the noun given more of the patches' attention);
    - "relative": that mean divided by the map's mean over the frame (free of each map's
      scale, but a noun with few objects of its own scores high on any).

    The other's instance is dropped and its instances are renumbered 1..n in raster order
    of their first pixel, as every layout is. One object is counted for one noun, never for
    two.
    """
    if measure not in ("median", "share", "relative"):
        raise ValueError(f"measure={measure!r}: expected 'median', 'share' or 'relative' "
                         "(NuminaConfig.claim_measure)")
    nouns = list(labels)
    score = {}
    for n in nouns:
        rel = np.asarray(cross[n], dtype=np.float64)
        if measure == "relative":
            mean = float(rel.mean())
            rel = rel / mean if mean > 0 else np.zeros_like(rel)
        elif measure == "median":
            if focus is not None:
                rel, floor = focus[n].cross, focus[n].floor
            else:
                floor = float(np.median(rel))
            rel = rel / floor if floor > 0 else np.zeros_like(rel)
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
