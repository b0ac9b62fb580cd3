"""``NuminaConfig``: every knob of the method, grouped by phase, defaults from the paper
except the identify stage's algorithm (identify v2; ``NuminaConfig.paper()`` is the paper's).

The reference step and layer can be fractions so that one config works for 50-step Wan2.1-1.3B
(30 blocks), Wan 14B (40 blocks) and CogVideoX-5B (42 blocks). Invalid values fail at
construction with a message that names the field, the value and what is expected.
See docs/method.md for what each field does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Literal, Mapping

from ..deprecation import rename_keywords, renamed_attribute, warn_deprecated

__all__ = ["NuminaConfig"]

# Old field names (the paper's symbols) -> the names that say what the field is. The old
# names keep working as keywords, attributes, in dataclasses.replace and in JSON configs,
# with a DeprecationWarning naming the new one.
RENAMED_FIELDS = {
    "tau": "focus_overlap",
    "gamma": "sobel_weight",
    "lam": "temporal_weight",
    "delta_floor": "guidance_floor",
    "boost_k": "boost_bias",
}

# Fields that never had an effect: accepted with a DeprecationWarning that says so.
_INERT_FIELDS = {
    "suppress_bias": ("suppression always removes the guided columns from the softmax of the "
                      "suppressed rows (a bias of -inf); the value given was never used"),
}

_CHOICES = {
    "cross_head": ("max", "mean"),
    "focus_clustering": ("dbscan", "hdbscan"),
    "proposal_cut": ("adaptive", "correlation"),
    "head_choice": ("containment", "image_score"),
    "guidance": ("sparse", "dense"),
    "target_mode": ("per_head", "shared", "boost"),
    "boost_mode": ("mass", "logit_spread", "absolute"),
    "guide_tokens": ("noun", "phrase"),
    "read_tokens": ("noun", "phrase"),
    "own_key": ("excluded", "kept"),
    "claim_measure": ("median", "share", "relative"),
    "unclaimed_peak_null_area": ("background", "off_bumps", "off_objects"),
}


#: fields that are a finite number in an interval: (low, low included, high, high included,
#: None allowed, what the value means, quoted in the error)
_INTERVALS = {
    "edge_reference_quantile": (0, True, 1, True, True, ""),
    "sink_mass": (0, False, 1, True, False, ""),
    "min_lift": (0, True, 1, False, False, ""),
    "min_member_lift": (0, True, 1, False, True, " (no check)"),
    "min_lift_null_factor": (0, False, math.inf, False, True, " (min_lift alone)"),
    "instance_null_factor": (0, False, math.inf, False, True, " (the head's threshold alone)"),
    "link_ratio": (0, False, 1, True, True, " (never join regions)"),
    "splinter_fraction": (0, False, 1, True, False, ""),
    "link_reach": (0, True, math.inf, False, True, " (join at any distance)"),
    "link_reach_factor": (0, True, math.inf, False, False, " (0 = link_reach at any size)"),
    "link_reach_grid_share": (0, True, math.inf, False, False, " (0 = link_reach on every grid)"),
    "splinter_link_gap": (0, True, math.inf, False, True, " (the ratio alone)"),
    "link_bridge": (0, False, 1, True, True, " (the reach alone)"),
    "link_map_veto": (0, False, 1, True, True, " (no veto)"),
    "core_quantile": (0, True, 1, False, True, " (plain components)"),
    "peak_gap": (0, True, math.inf, False, True, " (regions as cut)"),
    "focus_floor_quantile": (0, True, 1, False, False, " (0.5 = the median)"),
    "head_margin": (0, True, 1, False, False, ""),
    "finer_head_ratio": (0, False, 1, True, True, " (the best-scoring head alone)"),
    "unclaimed_min_lift": (0, True, 1, False, True, " (no instances from the left-over focus)"),
    "unclaimed_peak_null_z": (0, False, math.inf, False, True, " (unclaimed_min_lift alone)"),
    "placement_attention": (0, True, math.inf, False, False, " (0 = the paper's placement cost)"),
    "focus_contrast": (0, True, 1, True, True, " (the overlap test alone)"),
    "self_evidence_factor": (0, False, math.inf, False, True, " (never fall back to the cross map)"),
    "self_evidence_null_factor": (0, False, math.inf, False, True, " (the size-matched comparison alone)"),
    "cross_fallback_ratio": (0, False, 1, False, False, ""),
    "cross_fallback_peak": (0, False, 1, True, False, ""),
    "cross_fallback_evidence": (0, True, math.inf, False, True, " (every strong component counts)"),
    "instance_map_contrast": (-1, True, 1, True, True, " (no such test)"),
    "merged_split_ratio": (0, False, 1, True, True, " (never split an instance)"),
    "cross_peak_prominence": (0, False, 1, False, True, " (the plain components)"),
    "cross_peak_base": (0, True, 1, False, False, ""),
    "cross_peak_sigma": (0, True, math.inf, False, False, " (0 = no smoothing)"),
}


def _number_between(v, lo: float, lo_in: bool, hi: float, hi_in: bool) -> bool:
    """``v`` is a finite int or float (not a bool) in the interval from ``lo`` to ``hi``,
    each end included when its flag says so."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi)


def _fail(name: str, value: object, expected: str) -> None:
    raise ValueError(f"NuminaConfig.{name}={value!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class NuminaConfig:
    """Configuration of NUMINA (paper defaults except identify v2; ``NuminaConfig.paper()``
    for the paper's identify algorithm). Immutable; use ``dataclasses.replace``."""

    # --- identify (phase 1): where to read attention --------------------------------------
    reference_step: float | int = 0.4
    """t*: float in (0, 1) = fraction of the inference steps (0.4 -> step 20 of 50, the
    paper's t* = 20); int = absolute 0-based step index."""
    reference_layer: float | int = 0.5
    """l*: float in (0, 1) = fraction of the depth (0.5 -> block 15 of 30); int = absolute
    0-based block index."""
    reading_layers: int = 1
    """How many consecutive blocks phase 1 reads at t*, centred on l* and moved inward at
    the ends of the model (3 around block 15 -> blocks 14, 15, 16). Every head of every
    block read competes in the containment head choice, and each noun's cross-attention is
    the mean over the blocks. 1 = l* alone. Phase 1's layout cost grows with it (one
    partition of every block's heads per frame). Needs ``head_choice="containment"``."""

    # --- identify: self-attention head score S = std + block + gamma * sobel -------------
    sobel_weight: float = 1.0
    """gamma of the paper: weight of the edge-clarity (mean Sobel magnitude) term; each term
    is normalised across heads first (see heads.py), so 1.0 weighs the three terms alike."""
    block_size: int = 3
    """Side of the square blocks (in patches) of the structural-richness term."""
    score_stride: int = 2
    """Queries and keys are subsampled by this stride along both grid axes for the
    head-scoring PCA (the score is computed on an H/2 x W/2 gray image). 1 = exact, slower."""

    # --- identify: cross-attention and countable layout ----------------------------------
    cross_head: Literal["max", "mean"] = "mean"
    """'mean': mean over heads (reference code; counts better in benchmarks/bench_identify.py,
    because one attention-sink head with a sharp spike wins 'max'); 'max': the head with the
    highest peak (paper)."""
    peak_ratio: float = 0.1
    """The focus is the cross-attention pixels at or above ``floor + peak_ratio * (peak -
    floor)`` of the frame's map, ``floor`` its ``focus_floor_quantile`` (the rest are dropped
    before density clustering)."""
    focus_floor_quantile: float = 0.5
    """The quantile of the frame's cross-attention map taken as its background level (0.5:
    the median). A crowd covering more than half the frame raises the median to the level
    of its weaker objects, which then drop out of the focus; 0.25 keeps them (+3 to +6
    points on crowded 15x26 scenes) but widens the focus into the halo around objects,
    where background regions then pass as instances."""
    focus_overlap: float = 0.2
    """tau of the paper: a proposal is an instance when |proposal ∩ focus| / |proposal| >=
    focus_overlap."""
    proposal_affinity: float = 0.5
    """Neighbouring pixels join one proposal when the correlation of their (centred)
    self-attention rows is at least this."""
    proposal_rank: int = 16
    """Rows are compared after projection on the map's top proposal_rank principal
    components (denoising); keep it above the largest count you expect."""
    min_region: int = 4
    """Proposals smaller than this many patches are noise, never instances."""
    max_region_fraction: float = 0.5
    """Proposals larger than this fraction of the frame are background, never instances."""
    focus_specks: bool = True
    """True (default): a self-attention region's overlap with the focus counts the map's
    bright pixels before density clustering too (``focus_overlap`` still applies): a small object's bump
    that reaches the threshold in one or two pixels, which the clustering drops as noise,
    counts where a region of the chosen head confirms it (``focus.py``). False: the
    clustered focus alone (paper)."""
    focus_contrast: float | None = 0.05
    """A self-attention region also lies on the noun's focus when its mean cross-attention
    exceeds the mean over its ring (the pixels 4-adjacent to it) by this share of the map's
    range (peak - floor): an object brighter than its surroundings, even where the
    frame-wide threshold leaves it out (crowded frames at small grids, where the floor,
    the map's median, rises to the weaker objects' level).
    None = the overlap test alone (paper)."""
    focus_clustering: Literal["dbscan", "hdbscan"] = "dbscan"
    """Density clustering of the focus pixels."""
    focus_eps: float = 1.5
    """DBSCAN neighbourhood radius in patches (1.5 = the 8 neighbours)."""
    focus_min_samples: int = 3
    """DBSCAN/HDBSCAN min_samples; HDBSCAN also uses it as min_cluster_size."""

    # --- identify v2: adaptive cut, containment head choice, temporal vote ---------------
    # (``NuminaConfig.paper()`` switches all of these back to the paper's algorithm)
    proposal_cut: Literal["adaptive", "correlation"] = "adaptive"
    """'adaptive': 4-neighbours weighed by their log symmetric affinity, cut at each map's
    Otsu threshold (see partition.py); 'correlation': the paper's fixed cut on the
    correlation of denoised rows (``proposal_affinity``, ``proposal_rank``)."""
    head_choice: Literal["containment", "image_score"] = "containment"
    """'containment': the head whose focus regions keep the most attention inside
    themselves (beyond what the average head keeps), weighed by their edge contrast;
    'image_score': the paper's S = std + block + sobel_weight * sobel of the PCA image."""
    edge_band: int = 1
    """Half-width (patches, along the seam) of the bundle of pairs averaged into one edge
    weight: 0 = the pair alone, 1 = 3 x 3 pairs across each seam (per-entry noise)."""
    edge_reference_quantile: float | None = 0.25
    """Each edge weight is taken relative to this quantile over the heads of the same
    pair's weight (the shared positional part and border effects cancel); None = absolute."""
    own_key: Literal["excluded", "kept"] = "excluded"
    """'excluded': the partition reads each self-attention row without the token's entry on
    its own key, the rest of the row renormalised (``attention_entries``): a head whose
    queries and keys share a per-token component (texture, noise) spends much of every row
    on its own key, which shrinks and blurs each row's affinities to its neighbours.
    'kept': the rows as the softmax gives them."""
    sink_mass: float = 0.05
    """A key receiving at least this share of the average row is an attention sink: a
    region holding it is never an instance."""
    lift_sample: int = 64
    """Containment of a region larger than this is measured on this many evenly spaced
    members (bounds the cost per region)."""
    min_lift: float = 0.05
    """A focus region is an instance only when its pixels keep more than this share of
    their attention inside it beyond what the average head keeps (0 = any surplus):
    background specks and splinters of a larger object keep little."""
    min_lift_null_factor: float | None = 2.0
    """A focus region is also an instance, under ``min_lift``, when its lift exceeds this
    factor times the 90th percentile of the head's null lifts: those of its regions off the
    focus (at least 3), else of up to 16 square tiles cut out of its background, as large as
    its regions (``partition.lift_threshold``). ``min_lift`` is a share of a row: heads whose
    rows spread over the whole frame (diffuse heads, strong rotary position terms) keep
    shares far below it on their objects, and less still on their background; this
    threshold is in the head's own units. A region under ``min_lift`` joins another only by
    the splinter test or by ``link_ratio`` to a region over ``min_lift`` (never to another
    weak one). None = ``min_lift`` alone (the rule before 2026-12-03)."""
    instance_null_factor: float | None = 1.0
    """Each of the chosen head's instances must also keep more than this factor times the
    90th percentile of what the head's own pieces off the focus keep, among those of at most
    twice the instance's size (at least 3, else together with the head's background tiles;
    the prompt's other nouns' regions left out: they are objects, not background). The head's
    threshold (``min_lift``, or lower with ``min_lift_null_factor``) is one number for the
    head; a head with a local part keeps ``min_lift`` and more on any compact piece of
    background, and where the noun's focus is broad (weak cross heads, clutter) such pieces
    on the focus counted as objects. The same null as ``self_evidence_null_factor``, applied
    to each instance instead of deciding for the whole frame
    (``partition.head_instances``); also in the finer head's trial. When it leaves a noun
    none of the head's instances on its focus, the head tells nothing about that noun's
    objects and (with ``self_evidence_factor`` set) the noun is read from its cross map, as
    step 8 reads a frame (``Layout.from_cross``). None = the head's threshold alone (the rule
    before 2026-12-06)."""
    min_member_lift: float | None = None
    """A focus region is also no instance when its lift without each row's own entry (what
    its pixels keep on its *other* pixels beyond a moved copy) is at most this share of a
    row: a head whose queries and keys share a per-token component spikes every row on its
    own key, and a splinter of a few patches of a large object, or a background speck, then
    shows as much lift as a whole object. None = no such check (the default: a share of a
    row too, it removes a diffuse head's objects; with ``min_lift_null_factor`` None, 0.005
    was the default)."""
    core_quantile: float | None = 0.5
    """Touching objects kept apart: the regions grow from cores (components of the edges
    above this quantile of a head's joined edge weights, at least ``min_region`` patches)
    and two cores are never joined (one bridging edge no longer merges two objects); an
    object split into several cores is joined again by ``link_ratio``. None = plain
    components of the joined edges."""
    peak_gap: float | None = 0.69
    """Small objects trimmed out of the background they were cut with: a region whose inside
    edge weights split (their own Otsu cut) into two classes whose means differ by at least
    this (natural log; 0.69 = log 2: the upper class's neighbours attend to each other twice
    as densely) is replaced by the components of its upper class, when those hold at most
    ``partition.PEAK_SHARE`` of it (``partition.peak_regions``). A head's cut is set by the
    whole frame; with objects of a few patches it falls inside the background's spread and
    an object's region grows to several times its size. None = regions as cut."""
    peak_rim: int = 1
    """Rings of patches a trimmed peak is grown back by, inside the region it was cut from,
    once instances are decided (``partition.rim_grown``): the count comes from the peaks, the
    masks that refinement and guidance use also hold the object's blurred rim. 0 = the peaks
    as they are; no effect with ``peak_gap`` None."""
    link_ratio: float | None = 0.5
    """Two regions of a head become one (the pieces of an object cut apart by an occluder
    or the frame's edge, by ``core_quantile``, or a large object split by the cut at high
    noise) when their mutual affinity reaches this
    share of their own, in log units above a uniform map (``partition.link_regions``);
    None = never join."""
    splinter_link_gap: float | None = 1.0
    """A region at most ``splinter_fraction`` of another's size also joins it when their
    mutual affinity is at most this far (natural log) below the smaller of their own: the
    splinter's rows and the object's attend to each other at least exp(-gap) as densely as
    the object's rows attend among themselves. A large object's own affinity is low (its
    rows spread over many keys) and a compact splinter's high, so ``link_ratio`` alone
    leaves splinters cut off at a large object's rim counted as objects. Used only with
    ``link_ratio``; None = the ratio alone."""
    link_reach: float | None = 2.0
    """Two regions join by ``link_ratio`` only when they lie within reach of each other: at
    most ``max(link_reach, link_reach_grid_share * min(H, W), link_reach_factor * d)``
    patches apart (shortest distance between their patches; 1 = side by side), ``d`` the
    diameter of a disc as large as the two together (``partition.within_reach``). The
    pieces of one occluded object lie a few patches apart, on either side of the occluder;
    two objects that the chosen head cannot tell apart (identical animals; a head that gives
    a few objects one identity) may stand anywhere in the frame, and linking them
    undercounts. None = any distance (the rule before 2026-12-05's fifth session)."""
    link_reach_factor: float = 0.5
    """How ``link_reach`` grows with the pieces' size: the share of the diameter of a disc as
    large as the two pieces together (0 = ``link_reach`` patches at any size)."""
    link_reach_grid_share: float = 0.1
    """How the reach's floor grows with the grid: this share of the grid's shorter side, in
    patches (3 at Wan2.1's 30x52, 4.5 at 45x80; ``link_reach`` where that is more: 2 at
    15x26). An occluder spans more patches on a finer grid, so the pieces of one object lie
    farther apart (0 = ``link_reach`` patches on every grid)."""
    link_bridge: float | None = 0.9
    """Pieces that the noun's cross-attention holds in one bump join by ``link_ratio`` where
    the rules above would leave them apart, when the map's pixels at or above ``floor +
    link_bridge * (lower - floor)`` connect the two (8-neighbours; ``lower`` the smaller of
    the two regions' highest values, ``floor`` the map's ``focus_floor_quantile``;
    ``partition.map_bridged``): two regions farther apart than ``link_reach``, and two weak
    regions (lift at most ``min_lift``, over the head's own threshold), which otherwise join
    by the splinter test alone. A head cuts a large object into pieces several patches
    apart, many of them weak, all inside the object's one bump; two objects the head cannot
    tell apart have a bump each, the map falling towards its background between them.
    Applied once the noun is known (the chosen head's linking, the finer head's trial, the
    unclaimed instances). None = the reach and the splinter test alone."""
    link_map_veto: float | None = 0.5
    """Pieces that the noun's cross-attention holds in separate bumps do not join, whatever
    their affinity: a pair whose pixels at or above ``floor + link_map_veto * (lower -
    floor)`` of the map do not connect them (the test of ``link_bridge``, read the other way;
    ``partition.map_bridged``) stays apart, except a splinter that touches its region
    (``splinter_fraction``). A class-level or saliency head gives two nearby objects a high
    mutual affinity, and the ratio joins them; the map dips between two objects, not between
    the pieces of one. An object an occluder cuts in two, the map at its floor between the
    pieces, stays two. Used with ``link_bridge`` (the same maps); None = no veto (the rule
    before 2026-12-07's nineteenth session)."""
    splinter_fraction: float = 0.25
    """Largest size of a splinter relative to the region it may join (see
    ``splinter_link_gap``): regions of comparable size join by ``link_ratio`` alone."""
    unclaimed_min_lift: float | None = 0.05
    """Objects too large for the edge cut: the focus left at least one patch away from the
    chosen head's instances splits into components; one of at least ``unclaimed_min_size``
    patches whose containment lift exceeds this becomes an instance (or joins the instance
    it is linked to by ``link_ratio``: the rest of that object). A large object spreads its
    rows over many keys, its neighbour affinities sit near the background's and the cut
    breaks it into splinters that are no instance (``partition.unclaimed_instances``).
    None = off (the instances are the regions alone)."""
    unclaimed_min_size: int = 48
    """Smallest component of the left-over focus that ``unclaimed_min_lift`` considers
    (patches; smaller left-overs are halo around the instances)."""
    unclaimed_peaks: bool = True
    """Objects too small for the edge cut (with ``unclaimed_min_lift`` set): each bump of the
    noun's map (``layout.cross_peaks``) that no instance of the chosen head touches, less
    the ring of pixels next to the instances, becomes an instance (or joins the one it is
    linked to) when at least ``cross_fallback_min_size`` patches remain and its containment
    lift in the head exceeds ``unclaimed_min_lift``; only when the head has at least one
    instance (an absent noun's map still has bumps). An object of a few patches gives the
    cut too few edges of its own and no region holds it, while the map shows its bump;
    clutter in the map keeps no more than its moved copy (``partition.unclaimed_peaks``).
    False = the left-over focus components alone (the rule before 2026-12-05's sixth
    session)."""
    unclaimed_peak_null_z: float | None = 3.0
    """A bump of ``unclaimed_peaks`` whose lift stays under ``unclaimed_min_lift`` is an
    instance too when the lift stands this many standard deviations above the median lift
    of copies of the bump's own shape laid off the map's bumps, the instances and the sink
    keys (``unclaimed_peak_null_area`` says where else; at least
    ``partition.SHAPE_NULL_MIN_COPIES`` copies that fit, and a lift of at least
    ``partition.SHAPE_NULL_FLOOR``). An object of a few patches keeps 0.001-0.03 of its rows
    inside itself beyond its moved copy, under the fixed threshold, while pieces of
    background of its shape keep about nothing: the comparison is made with what the same
    head gives the same shape by chance (``partition.shape_null_lifts``). Bumps only the null
    lets in are no evidence that the head holds every object: step 8b's test for missed
    objects reads the instances without them (``identify.NounInFrame.weak``). None = the
    fixed threshold alone (the rule before 2026-12-07's fourteenth session)."""
    unclaimed_peak_null_area: Literal["background", "off_bumps", "off_objects"] = "off_objects"
    """Where the copies of ``unclaimed_peak_null_z``'s null may lie, always off the map's
    bumps, the instances with their ring of pixels, and the sink keys: "off_objects" = also
    off the head's regions (as cut) whose containment lift reaches ``min_lift``, the objects
    of any noun (``layout.null_area``; a copy on another noun's object measures an object,
    not chance); "off_bumps" = anywhere else in the frame; "background" = only the head's
    pixels in no region of its partition (the rule of 2026-12-07's fourteenth and fifteenth
    sessions)."""
    head_margin: float = 0.0
    """Heads scoring at least (1 - head_margin) of the best compete on instance count (the
    most wins): a remedy for class-level heads whose regions hold several instances."""
    finer_head_ratio: float | None = 0.35
    """A head scoring at least this share of the chosen one replaces it when its instances,
    its pieces of one object linked (``link_ratio``), outnumber the chosen head's and lie
    inside them, two or more in one (``finer.finer_head``): a class-level head whose region
    holds a herd wins the containment score over the head that tells the animals apart.
    None = the best-scoring head."""
    self_evidence_factor: float | None = 2.0
    """When the chosen head's instances keep, at the median, no more than this factor times
    what its pieces of their size off the focus keep (their upper quartile;
    ``partition.instance_evidence``), its regions are pieces of a positional or textured
    partition that happen to lie under the focus, not objects: the self-attention does not
    tell this noun's objects apart in this frame, and the layout is taken from the
    cross-attention instead (``layout.fallback_layout``: the map's peaks,
    ``cross_peak_prominence``; ``Layout.from_cross``, ``NuminaReport.from_cross``).
    No fallback when no head has an instance on the focus (nothing to compare: a noun absent
    from the frame); when fewer than 5 background pieces of an instance's size exist, this
    comparison is silent and ``self_evidence_null_factor``'s decides. The
    default is ``min_lift_null_factor``'s factor. None = always the self-attention's
    instances (the paper)."""
    self_evidence_null_factor: float | None = 1.0
    """The evidence test's second comparison (with ``self_evidence_factor`` set): each of the
    chosen head's instances against the 90th percentile of what the head's pieces off the
    focus of at most twice its size keep (at least 3, else together with the head's
    background tiles: the null of ``min_lift_null_factor``; ``partition.null_evidence``).
    When the median ratio is at most this factor (the instances keep no more than the
    head's background pieces keep), the layout is taken from the cross-attention as well. It
    speaks where the size-matched comparison has too few pieces: on small grids (15x26) a
    head that tiles the frame by position has most of its pieces under the focus. None = the
    size-matched comparison alone (the rule before 2026-12-05)."""
    cross_fallback_ratio: float = 0.5
    """The noun map's components (``layout.cross_components``): its pixels at or above
    ``floor + cross_fallback_ratio * (peak - floor)`` (``floor``: ``focus_floor_quantile``),
    split into 4-connected components of at least ``cross_fallback_min_size`` patches. The
    strong components of ``cross_fallback_excess`` are among them; with
    ``cross_peak_prominence=None`` they are also the fallback's layout."""
    cross_fallback_min_size: int = 2
    """Smallest instance of the fallback's layout, and smallest noun-map component (patches)."""
    cross_peak_prominence: float | None = 0.2
    """The fallback's layout split at the saddles of the noun's map (``layout.cross_peaks``):
    a bump is an instance of its own when its peak rises at least this share of the map's
    range (``peak - floor``) above the saddle joining it to a higher bump. None = the plain
    components at ``cross_fallback_ratio`` (``layout.cross_components``). Blurred objects
    whose bumps merge above that cut stay apart; a ripple on one bump does not split it."""
    cross_fallback_half_peak: bool = True
    """The fallback's layout (``layout.fallback_layout``) read a second way as well: the
    map's 8-connected components at or above half its peak (``layout.half_peak_components``,
    the naive counter's cut), and the reading with more instances is the layout. Where the
    map's floor lies well above 0, half the peak lies under the level a lone bump needs in
    the saddle split (half of the range above the floor): far or faint objects peak between
    the two and only the half-peak cut counts them; both readings of a blurred map undercount
    far more often than they overcount. False = the saddle split alone (the rule before
    2026-12-05's tenth session)."""
    cross_peak_base: float = 0.3
    """The lowest level the fallback's peaks are flooded to (``cross_peak_prominence``):
    ``floor + cross_peak_base * (peak - floor)``."""
    cross_peak_sigma: float = 1 / 60
    """Before its peaks are flooded (``cross_peak_prominence``) the noun's map is smoothed by
    a Gaussian of this share of the grid's shorter side (half a patch at Wan2.1-1.3B's 30
    rows, a quarter at 15; a portrait frame, taller than wide, by its width, so that it is
    read as its landscape transpose): per-patch noise ripples a bump by as much whatever the
    grid, while an object covers more patches on a larger grid. 0 = no smoothing."""
    cross_fallback_excess: int | None = 2
    """The second reason to read the layout from the cross map (``fallback_layout``): the
    chosen head missed objects. When the noun's map holds at least this many more strong
    components (``cross_fallback_peak``) than the head has instances on its focus, or at
    least this many strong components that touch none of its instances, and the head has at
    least one, the layout is the cross map's (``layout.head_missed_objects``;
    ``Layout.from_cross``). Under per-entry noise or a class-level head the self-attention
    merges or drops objects that the cross map still shows apart; a head that splits objects
    into parts, or whose instances sit on another category's objects, leaves the noun's
    objects untouched; one extra bump may be clutter or one object in two bumps, so one is
    not enough. A head with no instance
    keeps the noun at 0 (an absent noun's map still has bumps). None = off (the paper)."""
    cross_fallback_peak: float = 0.7
    """A cross-map component is strong (``cross_fallback_excess``) when its peak reaches
    ``floor + cross_fallback_peak * (peak - floor)`` of the noun's map: 1.0 keeps only the
    component holding the map's peak."""
    cross_fallback_evidence: float | None = 0.1
    """A strong component that none of the chosen head's instances touches counts as an
    object the head missed (``cross_fallback_excess``) only when the self-attention shows
    something there: the head's containment lift on the component (the pixels the map's
    component covers, measured as an instance's) reaches this share of the median lift it
    keeps on the strong components its instances do touch. The test applies only where that
    median exceeds ``min_lift`` (the head shows the map's objects it found); otherwise the
    map is trusted as before: a head that tells nothing about the noun (a positional head,
    rows too diffuse to keep their objects) cannot speak against the map either. Clutter in
    the noun's map (bumps as strong as the objects where the self-attention holds no
    object) then no longer replaces a right head's instances. None = every strong component
    counts (the rule before 2026-12-06's seventh session)."""
    cross_fallback_evidence_floor: float | str | None = "head"
    """The median lift the chosen head must keep on the strong components its instances
    touch for ``cross_fallback_evidence`` to apply (the head shows the objects it found):
    "head" (default) = the head's own instance threshold (``partition.head_lift_threshold``:
    ``min_lift``, or lower where its background pieces keep less, ``min_lift_null_factor``),
    the bar its instances passed; a number = that lift; None = ``min_lift`` (the rule before
    2026-12-07's seventeenth session). A head at high noise keeps 0.01-0.04 on the objects it
    found, under ``min_lift``, and nothing on clutter bumps: with the fixed floor the map was
    trusted there and its clutter counted (docs/method.md step 8b)."""
    instance_map_contrast: float | None = 0.0
    """Each instance read from the self-attention must show in its noun's map as a bump: its
    mean cross-attention must exceed the mean over its ring (the pixels 4-adjacent to it
    that lie in no instance of the noun) by more than this share of the map's range (``peak -
    floor``); an instance whose map is no higher than the background around it is a piece of
    background that the weak cross heads or the map's blur lifted onto the focus (it passed
    the focus test because the whole neighbourhood is lifted). An instance with no such ring
    (walled in by other instances) is kept. When none of a noun's instances is left, the noun
    is read from its cross map (``Layout.from_cross``). Applied after the claim between nouns
    and the second fallback (step 8c, ``focus.shown_instances``). None = no such test (the
    rule before 2026-12-06's ninth session)."""
    merged_split_ratio: float | None = None
    """Step 5d (``split.split_merged_instances``): an instance read from the self-attention
    that holds the peaks of two or more of the noun map's bumps (``layout.map_bumps``) is
    cut along the bumps, and the parts stay apart when the chosen head's affinity between
    them lies under this share of the smaller of their own (both positive): touching objects
    the cut joined, which the map still shows apart. Parts that attend to each other as one
    object are joined again. None (default) = no such step: measured on development sets
    37000/38000 at 0.5 it counted +0.006 [+0.001, +0.011] more frames right on the plain
    scenes, +0.000 on the cluttered ones (clutter bumps inside large instances split them)
    and turned 3 of 284 right toy-model counts wrong (docs/method.md, "What failed")."""
    exclusive_regions: bool = True
    """True (default): an instance claimed by several nouns in a frame goes to one of them
    (``claim_measure``): one object is counted for one noun. False (paper): every noun keeps
    it. On the toy model with instance heads (docs/toy.md) False let 43% of one noun's
    instances sit on another noun's objects."""
    claim_measure: str = "median"
    """Which noun keeps an instance several nouns claim (``exclusive_regions``; the measures
    in ``identify.exclusive_instances``). "median" (default): the larger mean cross-attention
    over the instance relative to the noun's background level (its map's median over the
    frame, the floor its focus was cut from). "share": the larger mean over the instance,
    the maps compared as they are. "relative" (before 2026-12-04): the larger mean over the
    instance relative to the map's mean over the frame, which favours a noun with few
    objects of its own."""
    temporal_window: int = 1
    """Counts are the median of the per-frame counts over 2w + 1 consecutive frames around
    each frame (moved inward at the ends; the per-frame layouts are kept for guidance);
    0 = per-frame counts."""

    # --- refine: layout refinement -------------------------------------------------------
    borrow_layouts: bool = True
    """True (default): before refinement, a frame whose layout count differs from its
    temporal vote (``temporal_window``) starts from the layout of the nearest frame whose own
    count equals that vote (instances persist across frames; a one-frame misreading is then
    not drawn into the video as an extra or missing object in that frame only). False
    (paper): every frame is refined from its own layout."""
    circle_radius: float = 3.0
    """Radius in patches of the circle template when no instance exists to copy."""
    temporal_weight: float = 8.0
    """lambda of the paper: weight of the temporal term of the placement cost (distance to
    the same added instance's centre in the previous frame)."""
    placement_stride: int = 1
    """Spacing in patches of the grid of candidate centres."""
    placement_attention: float = 0.0
    """Weight of an attention term in the placement cost of an addition: ``1 - `` the mean,
    under the placed template, of the noun's cross-attention map of that frame scaled to
    [0, 1] (an addition goes where the model already attends to the noun). 0: the paper's
    cost (centroid and temporal terms only)."""

    # --- guide (phase 2): layout-guided regeneration -------------------------------------
    guidance: Literal["sparse", "dense"] = "sparse"
    """'sparse': bias only the noun columns on the affected rows (LSE correction);
    'dense': materialise the bias (reference path, for tests)."""
    boost_mode: Literal["mass", "logit_spread", "absolute"] = "mass"
    """How strong the boost of circle additions is, in terms that mean the same on every
    model: 'mass': the noun's columns get at least a share boost_mass * delta(t) of the
    softmax of each added row and head (bias solved per row from its log-sum-exp);
    'logit_spread': bias boost_spread * delta(t) * (std of the row's logits over all keys);
    'absolute': bias boost_bias * delta(t), the paper's setting (its strength depends on the
    model's score scale). Default 'mass' with boost_mass 0.95: the strength that moved counts
    most with the true layout on the toy model (docs/method.md, "Guide")."""
    boost_bias: float = 0.8
    """k of the paper, for boost_mode='absolute': circle additions get the pre-softmax bias
    boost_bias * delta(t) (paper Table 10)."""
    boost_mass: float = 0.95
    """Target share in (0, 1) of boost_mode='mass' at delta = 1. 0.95 over 0.8 with the true
    layout on the toy model: +6.8 [+4.7, +9.2] CountAcc (120 pairs, docs/method.md)."""
    boost_spread: float = 2.0
    """Bias of boost_mode='logit_spread' in row logit standard deviations at delta = 1."""
    guidance_floor: float = 0.5
    """Guidance is active while its intensity delta(t) >= guidance_floor (0.5: the first half
    of the steps with the linear schedule). Suppression has no strength to set: the guided
    columns are removed from the softmax of suppressed rows (a bias of -inf)."""
    target_mode: Literal["per_head", "shared", "boost"] = "boost"
    """What a template-copy addition gets: "boost" (default), the boost of a circle addition
    (``boost_mode``), so that every added instance is drawn with the same strength;
    "per_head" (paper), the noun's scores set to the reference instance's mean score per
    head; "shared", that mean over all heads. On the toy model the reference's score, read
    where the model had not committed to the object yet, was too weak to draw copies in
    crowds (docs/toy.md)."""
    guide_tokens: Literal["noun", "phrase"] = "phrase"
    """Text columns phase 2 edits: the noun's whole counted phrase ("three red discs":
    count word, modifiers and noun; default), or the noun's tokens alone ('noun', the
    paper). Phase 1 reads the columns of ``read_tokens``."""
    read_tokens: Literal["noun", "phrase"] = "phrase"
    """Text columns whose cross-attention phase 1 reads as the noun's focus: the noun's
    whole counted phrase ('phrase', default: the sum of the count word's, the modifiers'
    and the noun's maps, the columns phase 2 guides) or the noun's tokens alone ('noun', the
    paper). On the toy model the phrase's maps localise the objects better than the noun's
    (AUC 0.92 against 0.67 at the reading point) and NUMINA's CountAcc rose by +7.9 and +4.2
    points on two sources of 60 pairs (docs/toy.md)."""
    suppress_outside: bool | Literal["edited"] = True
    """True (default): the guided columns are suppressed on every video row of a frame
    outside the noun's refined layout (its kept and added instances), so the noun cannot
    appear where the layout has none of it. "edited": the same, but only in the frames where
    refinement added or removed an instance of the noun (a frame whose layout already had
    the asked count is left alone). False (paper): only inside removed regions.
    With the true layout on the toy model, phrase + outside moved CountAcc +17.4 points
    where the paper's noun-only, removed-only guidance moved -0.9 (docs/method.md)."""

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                _fail(name, getattr(self, name), f"one of {choices}")
        for name in ("reference_step", "reference_layer"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                _fail(name, v, "a float in (0, 1) (fraction) or an int >= 0 (index)")
            if isinstance(v, float) and not (0.0 < v < 1.0):
                _fail(name, v, "a fraction strictly between 0 and 1, or an int index")
            if isinstance(v, int) and v < 0:
                _fail(name, v, "a non-negative 0-based index")
        positive = ("sobel_weight", "temporal_weight", "circle_radius", "focus_eps")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                _fail(name, v, "a finite number > 0")
        v = self.reading_layers
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _fail("reading_layers", v, "an int >= 1 (1 = the reference layer alone)")
        if v > 1 and self.head_choice != "containment":
            _fail("reading_layers", v, '1 with head_choice="image_score" (the paper\'s head score '
                  'reads one block); use head_choice="containment" to read several')
        v = self.cross_fallback_excess
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            _fail("cross_fallback_excess", v, "an int >= 1, or None (no fallback for missed objects)")
        v = self.cross_fallback_evidence_floor
        if not (v is None or v == "head" or _number_between(v, 0, True, 1, False)):
            _fail("cross_fallback_evidence_floor", v, 'a number in [0, 1), "head" (the chosen head\'s own '
                  'instance threshold) or None (min_lift)')
        for name in ("edge_band", "temporal_window", "peak_rim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                _fail(name, v, "an int >= 0")
        for name in ("exclusive_regions", "borrow_layouts", "focus_specks", "unclaimed_peaks",
                     "cross_fallback_half_peak"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "True or False")
        if not isinstance(self.suppress_outside, bool) and self.suppress_outside != "edited":
            _fail("suppress_outside", self.suppress_outside, 'True, False or "edited"')
        v = self.lift_sample
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            _fail("lift_sample", v, "an int >= 2")
        for name, (lo, lo_in, hi, hi_in, none_ok, note) in _INTERVALS.items():
            v = getattr(self, name)
            if not (v is None and none_ok) and not _number_between(v, lo, lo_in, hi, hi_in):
                _fail(name, v, f"a number in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
                      f"{' or None' if none_ok else ''}{note}")
        for name in ("block_size", "score_stride", "proposal_rank", "min_region", "focus_min_samples",
                     "placement_stride", "unclaimed_min_size",
                     "cross_fallback_min_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _fail(name, v, "an int >= 1")
        unit = {"peak_ratio": (0.0, 1.0, False), "focus_overlap": (0.0, 1.0, True),
                "max_region_fraction": (0.0, 1.0, True), "guidance_floor": (0.0, 1.0, True),
                "proposal_affinity": (-1.0, 1.0, True)}
        for name, (lo, hi, hi_ok) in unit.items():
            v = getattr(self, name)
            if not _number_between(v, lo, False, hi, hi_ok):
                _fail(name, v, f"a number in ({lo}, {hi}{']' if hi_ok else ')'}")
        v = self.boost_mass
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < 1):
            _fail("boost_mass", v, "a softmax share strictly between 0 and 1 (e.g. 0.5); "
                  "for a fixed bias use boost_mode='absolute' with boost_bias")
        for name in ("boost_bias", "boost_spread"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                _fail(name, v, "a finite number >= 0")

    @classmethod
    def paper(cls, **overrides) -> "NuminaConfig":
        """The paper's algorithm: its identify stage (fixed correlation cut, image-statistics
        head score, per-frame counts) and its guidance (absolute strength ``boost_bias *
        delta(t)`` on the noun's columns, suppression in removed regions only), every other
        field at its default; ``overrides`` as keywords."""
        settings = dict(proposal_cut="correlation", head_choice="image_score", temporal_window=0,
                        boost_mode="absolute", guide_tokens="noun", read_tokens="noun", suppress_outside=False,
                        exclusive_regions=False, link_ratio=None, splinter_link_gap=None, link_reach=None, link_bridge=None, link_map_veto=None, core_quantile=None, peak_gap=None,
                        borrow_layouts=False, target_mode="per_head", unclaimed_min_lift=None, unclaimed_peak_null_z=None,
                        self_evidence_factor=None, self_evidence_null_factor=None, instance_null_factor=None, cross_fallback_excess=None, cross_fallback_half_peak=False, cross_fallback_evidence=None, instance_map_contrast=None,
                        finer_head_ratio=None, own_key="kept", focus_specks=False, focus_contrast=None)
        settings.update(overrides)
        return cls(**settings)

    # --- resolving fractions ---------------------------------------------------------------
    @classmethod
    def given(cls, config: "NuminaConfig | None", where: str) -> "NuminaConfig":
        """``config`` itself, or the defaults for None; ``TypeError`` naming ``where`` (the
        function or class it was passed to) for anything else, e.g. a dict of settings
        (``NuminaConfig(**settings)`` builds one)."""
        if config is None:
            return cls()
        if not isinstance(config, cls):
            hint = (f": build one with NuminaConfig(**{config!r})" if isinstance(config, dict)
                    else "")
            raise TypeError(f"{where}: config={config!r}: expected a numina_hooks.NuminaConfig "
                            f"(or None for the defaults){hint}")
        return config

    @staticmethod
    def _resolve(name: str, value: float | int, total: int, unit: str) -> int:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ValueError(f"number of {unit}s must be an int >= 1, got {total!r}")
        index = int(round(value * total)) if isinstance(value, float) else value
        index = min(index, total - 1) if isinstance(value, float) else index
        if not 0 <= index < total:
            raise ValueError(
                f"NuminaConfig.{name}={value!r} gives {unit} {index}, outside 0..{total - 1} "
                f"for {total} {unit}s: use a smaller index or a fraction such as 0.4")
        return index

    def resolve_step(self, num_steps: int) -> int:
        """0-based denoising step index of t* (``0.4`` of 50 steps -> 20)."""
        return self._resolve("reference_step", self.reference_step, num_steps, "step")

    def resolve_layer(self, num_layers: int) -> int:
        """0-based block index of l* (``0.5`` of 30 blocks -> 15, of 40 -> 20)."""
        return self._resolve("reference_layer", self.reference_layer, num_layers, "layer")

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        """The 0-based blocks phase 1 reads: ``reading_layers`` consecutive blocks centred on
        ``resolve_layer``, moved inward at the ends (all blocks when there are fewer)."""
        centre = self.resolve_layer(num_layers)
        n = min(self.reading_layers, num_layers)
        first = min(max(0, centre - (n - 1) // 2), num_layers - n)
        return tuple(range(first, first + n))

    # --- guidance schedule -----------------------------------------------------------------
    def delta(self, step: int, num_steps: int, sigma: float | None = None) -> float:
        """Guidance intensity delta(t) in [0, 1], non-increasing over the steps.

        With ``sigma`` (the flow-matching noise level of the step, 1 = pure noise) delta is
        sigma clipped to [0, 1]: guidance follows how much layout is still undecided.
        Otherwise delta = 1 - step / num_steps (1 at the first step, 1/num_steps at the
        last)."""
        if sigma is not None:
            if not math.isfinite(sigma):
                raise ValueError(f"delta: sigma must be finite, got {sigma!r}")
            return float(min(max(sigma, 0.0), 1.0))
        if num_steps < 1 or not 0 <= step < num_steps:
            raise ValueError(f"delta: step {step!r} outside 0..{num_steps - 1} "
                             f"for num_steps={num_steps!r}")
        return 1.0 - step / num_steps

    def guidance_active(self, step: int, num_steps: int, sigma: float | None = None) -> bool:
        """Whether phase-2 guidance applies at this step (delta >= guidance_floor)."""
        return self.delta(step, num_steps, sigma) >= self.guidance_floor

    def as_dict(self) -> dict[str, object]:
        """Every field by its current name (``NuminaConfig.from_dict`` reads it back)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "NuminaConfig":
        """A config from a mapping of field names (e.g. parsed JSON); deprecated names warn
        and map to their new names, unknown names raise ``TypeError`` listing the valid ones."""
        if not isinstance(values, Mapping):
            raise TypeError(f"NuminaConfig.from_dict: expected a mapping of field names, "
                            f"got {type(values).__name__}")
        return cls(**dict(values))

    @property
    def suppress_bias(self) -> float:
        """Deprecated, never used: suppression is always -inf (reading it warns)."""
        warn_deprecated(f"NuminaConfig.suppress_bias is deprecated and has no effect: "
                        f"{_INERT_FIELDS['suppress_bias']}")
        return float("-inf")


for _old, _new in RENAMED_FIELDS.items():
    setattr(NuminaConfig, _old, renamed_attribute("NuminaConfig", _old, _new))
NuminaConfig.RENAMED_FIELDS = RENAMED_FIELDS
NuminaConfig.DEPRECATED_FIELDS = frozenset(RENAMED_FIELDS) | frozenset(_INERT_FIELDS)


def _accepting_old_names(generated_init):
    """The dataclass ``__init__`` wrapped so that deprecated field names keep working and
    unknown names fail with the list of valid ones."""
    names = tuple(f.name for f in fields(NuminaConfig))

    @functools.wraps(generated_init)
    def __init__(self, *args, **kwargs):
        unknown = [k for k in kwargs if k not in names and k not in NuminaConfig.DEPRECATED_FIELDS]
        if unknown:
            raise TypeError(f"NuminaConfig: unknown field {unknown[0]!r}; valid fields: {', '.join(names)}")
        for old, why in _INERT_FIELDS.items():
            if old in kwargs:
                kwargs.pop(old)
                warn_deprecated(f"NuminaConfig: {old!r} is deprecated and has no effect: {why}")
        # dataclasses.replace(cfg, tau=x) passes every field plus the old name: there the
        # new name holds a copy of the current value and the old name is the change
        from_replace = all(n in kwargs for n in names)
        kwargs, used = rename_keywords("NuminaConfig", RENAMED_FIELDS, kwargs, old_wins=from_replace)
        try:
            generated_init(self, *args, **kwargs)
        except ValueError as err:
            message = str(err)
            for new, old in used.items():
                prefix = f"NuminaConfig.{new}="
                if message.startswith(prefix):
                    raise ValueError(f"NuminaConfig.{old}={message[len(prefix):]} "
                                     f"({old!r} is the deprecated name of {new!r})") from None
            raise

    return __init__


NuminaConfig.__init__ = _accepting_old_names(NuminaConfig.__init__)
