"""Countable layout of one noun in one frame (paper section 4.1, eqs. 3-4).

Two algorithms, chosen by ``NuminaConfig``: the default (``proposal_cut="adaptive"``,
``head_choice="containment"``: the adaptive cut and the containment head choice of
``partition.py``) and the paper's (``NuminaConfig.paper()``), described below.

The paper's algorithm:

1. Proposals: the chosen self-attention head's map is split into contiguous regions. Two
   4-neighbouring pixels are joined when the correlation of their attention rows (each row
   centred by the mean row) is at least ``proposal_affinity``; the connected components of
   that graph are the regions. Rows of one object attend to the same object, so they
   correlate; across the seam between two touching objects they do not. Regions smaller
   than ``min_region`` patches (noise) or larger than ``max_region_fraction`` of the frame
   (background) are dropped. Every region is 4-connected by construction.
2. Focus: the cross-attention map is thresholded at ``median + peak_ratio * (peak - median)``
   (the paper's peak ratio, measured above the map's background level) and the remaining
   pixels are density-clustered (DBSCAN or HDBSCAN on patch coordinates); the clustered
   pixels (not the density noise) form the focus mask F.
3. A proposal r is an instance when |r ∩ F| / |r| >= tau (``focus_overlap``). Instances are labelled 1..n in
   raster order of their first pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .attention_entries import MapSelfAttention, QKSelfAttention
from .config import NuminaConfig
from .focus import FocusUnion, NounFocus, region_hits
from .heads import (_check_grid, as_tensor, attention_rows, check_grid_orientation, check_not_constant,
                    check_probabilities, score_self_attention_heads, select_cross_attention)
from .partition import (HeadPartitions, MapBridge, _as_source, _components, _relabel, choose_head, fill_lift, head_region_lifts,
                        focus_regions, grid_disc, head_instances, head_lift_threshold, head_scores_from_focus,
                        instance_evidence, link_regions, null_candidates, null_evidence, partition_heads, rim_grown, temporal_vote,
                        unclaimed_instances, unclaimed_peaks)
from .partition import _regions_to_ids as _regions_to_instances
from .peaks import flood_peaks

__all__ = ["Layout", "layout_from_attention", "layout_from_maps", "proposals_from_self_map",
           "focus_mask", "noun_focus", "bright_pixels", "cross_components", "cross_peaks",
           "fallback_layout", "strong_components",
           "head_missed_objects", "dbscan_members", "naive_cross_count", "temporal_vote", "check_not_constant"]


@dataclass
class Layout:
    """The countable layout of one noun in one frame.

    labels: int32 [H, W]; 0 background, 1..count instances (each 4-connected).
    count: number of instances.
    self_head: the self-attention head used (-1 when the map was given directly, or when
        no head had a region on the noun's focus).
    cross_head: the cross-attention head used (-1 for the mean over heads or a given map).
    focus: bool [H, W], the density-clustered cross-attention foreground F.
    proposals: int32 [H, W], the contiguous regions of the self-attention map (0 = none).
    head_scores: float32 [heads] self-attention head scores (containment scores, -inf for a
        head without instances, or the paper's image score), or None.
    from_cross: True when the instances are read from the cross-attention
        (``fallback_layout``) because the chosen head's instances did not stand out of its
        background (``NuminaConfig.self_evidence_factor``), or left at least
        ``cross_fallback_excess`` of the map's strong components unaccounted for
        (``head_missed_objects``); ``self_head`` is still the head that was chosen.
    """
    labels: np.ndarray
    count: int
    self_head: int
    cross_head: int
    focus: np.ndarray
    proposals: np.ndarray
    head_scores: np.ndarray | None = None
    from_cross: bool = False

    def __repr__(self) -> str:
        """One line: the count, the grid, the heads and each instance's size in patches (the
        arrays themselves are the fields)."""
        sizes = np.bincount(np.asarray(self.labels).reshape(-1), minlength=self.count + 1)[1:]
        grid = "x".join(str(x) for x in np.shape(self.labels))
        return (f"Layout(count={self.count}, grid={grid}, self_head={self.self_head}, "
                f"cross_head={self.cross_head}, instance_patches={sizes.tolist()}, "
                f"focus_patches={int(np.count_nonzero(self.focus))}"
                + (", from_cross=True)" if self.from_cross else ")"))


def _denoised_rows(a: torch.Tensor, rank: int, power_iters: int = 2) -> torch.Tensor:
    """Rows of the centred map projected on its top ``rank`` principal components
    ``[HW, rank]`` (randomized PCA): attention noise is spread over all components, the
    object structure lives in the top few."""
    x = a - a.mean(dim=0, keepdim=True)
    k = min(rank, *x.shape)
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(x @ torch.randn(x.shape[1], k, generator=gen, dtype=x.dtype)).Q
    for _ in range(power_iters):
        q = torch.linalg.qr(x @ (x.T @ q)).Q
    b = q.T @ x  # [k, HW]
    evals, evecs = torch.linalg.eigh(b @ b.T)
    return q @ (evecs * evals.clamp_min(0).sqrt()[None, :])  # principal component scores


def proposals_from_self_map(self_map, grid: tuple[int, int],
                            config: NuminaConfig | None = None) -> np.ndarray:
    """Contiguous regions of one head's self-attention map ``[HW, HW]`` -> int32 [H, W]
    (0 = no region, 1..m regions). See the module docstring."""
    cfg = config or NuminaConfig()
    a = as_tensor(self_map, "self_map")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"self_map must be [HW, HW], got {tuple(a.shape)}")
    H, W = _check_grid(a.shape[0], grid, "proposals_from_self_map")
    n = H * W
    feats = _denoised_rows(a, cfg.proposal_rank)
    norm = feats.norm(dim=1).clamp_min(1e-12)
    ac = feats
    idx = torch.arange(n).reshape(H, W)
    pairs = []
    if W > 1:
        pairs.append((idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)))
    if H > 1:
        pairs.append((idx[:-1, :].reshape(-1), idx[1:, :].reshape(-1)))
    src_list, dst_list = [], []
    for p, q in pairs:
        corr = (ac[p] * ac[q]).sum(1) / (norm[p] * norm[q])
        keep = corr >= cfg.proposal_affinity
        src_list.append(p[keep].numpy())
        dst_list.append(q[keep].numpy())
    src = np.concatenate(src_list) if src_list else np.zeros(0, np.int64)
    dst = np.concatenate(dst_list) if dst_list else np.zeros(0, np.int64)
    comp = _components(n, src, dst)
    # kept components 1..m in raster order of their first pixel
    return _relabel(comp, (cfg.min_region, cfg.max_region_fraction * n)).reshape(H, W)


def bright_pixels(cross_map, grid: tuple[int, int], config: NuminaConfig | None = None
                  ) -> np.ndarray:
    """The pixels of one cross-attention map ``[HW]`` or ``[H, W]`` at or above the focus
    threshold ``floor + peak_ratio * (peak - floor)`` (``floor``: the map's
    ``focus_floor_quantile``), bool [H, W]: what ``focus_mask`` density-clusters. None
    for a map with no response or a flat one (nothing stands out)."""
    return _map_levels(cross_map, grid, config or NuminaConfig())[0]


def _map_levels(cross_map, grid: tuple[int, int], cfg: NuminaConfig):
    """(bright pixels or None, the map as float64 [H, W], its floor, its range peak - floor)
    of one cross-attention map (see ``bright_pixels``)."""
    c = as_tensor(cross_map, "cross_map").reshape(-1)
    H, W = _check_grid(c.numel(), grid, "focus_mask")
    c = c.reshape(H, W).double().numpy()
    peak = float(c.max())
    # the ratio is taken above the map's background level (a low quantile): a cross map
    # with a floor of clutter at 20% of its peak would otherwise be foreground everywhere
    floor = float(np.quantile(c, cfg.focus_floor_quantile))
    if peak <= 0 or float(c.min()) == peak:
        return None, c, floor, 0.0
    return c >= floor + cfg.peak_ratio * (peak - floor), c, floor, peak - floor


def noun_focus(cross_map, grid: tuple[int, int], config: NuminaConfig | None = None) -> NounFocus:
    """One cross-attention map ``[HW]`` or ``[H, W]`` as the ``focus.NounFocus`` the region
    tests read: its focus mask (``focus_mask``), its bright pixels, the map and its levels,
    with the config's ``focus_specks`` and ``focus_contrast``."""
    cfg = config or NuminaConfig()
    bright, c, floor, spread = _map_levels(cross_map, grid, cfg)
    if bright is None:  # no response, or a flat map: nothing stands out
        bright = np.zeros(c.shape, dtype=bool)
    return NounFocus(mask=_cluster(bright, cfg), bright=bright, cross=c, floor=floor,
                     spread=spread, specks=cfg.focus_specks, contrast=cfg.focus_contrast)


def cross_components(focus: NounFocus, config: NuminaConfig | None = None) -> np.ndarray:
    """A noun's instances read from its cross-attention alone: the 4-connected components of
    the map's pixels at or above ``floor + cross_fallback_ratio * (peak - floor)``, each of
    at least ``cross_fallback_min_size`` patches, as int32 [H, W] (0 = none, 1..n in raster
    order of their first pixel). ``focus``: the noun's ``NounFocus`` (``noun_focus``). The
    layout when the self-attention does not tell the noun's objects apart
    (``self_evidence_factor``); all zeros for a map with no response."""
    from scipy.ndimage import label

    cfg = config or NuminaConfig()
    if focus.spread <= 0:
        return np.zeros(focus.cross.shape, dtype=np.int32)
    lab, _ = label(focus.cross >= focus.floor + cfg.cross_fallback_ratio * focus.spread)
    return _labels_of_size(lab, cfg.cross_fallback_min_size)


def _labels_of_size(labels: np.ndarray, min_size: int) -> np.ndarray:
    """The labels of ``labels`` (int [H, W], 0 = none) with at least ``min_size`` pixels,
    renumbered 1..n in raster order of their first pixel (int32 [H, W], 0 elsewhere): the
    last step of every reading of the noun's cross map."""
    keep = np.bincount(labels.reshape(-1)) >= min_size
    keep[0] = False
    return _regions_to_instances(labels, keep)


def cross_peaks(focus: NounFocus, config: NuminaConfig | None = None) -> np.ndarray:
    """A noun's instances read from its cross-attention alone, split at the saddles between
    its peaks: int32 [H, W] (0 = none, 1..n in raster order of their first pixel).

    The map, smoothed by a Gaussian of ``cross_peak_sigma`` times the grid's shorter side
    (patches: the height of a landscape frame, the width of a portrait one), has its pixels at or above
    ``floor + cross_peak_base * (peak - floor)`` (the smoothed map's floor and range, as
    ``noun_focus`` takes them) flooded from the highest down, 8-connected. Where two flooded
    parts meet, the one with the lower peak is an instance of its own when that peak rises at
    least ``cross_peak_prominence * (peak - floor)`` above the meeting level (its saddle), and
    joins the higher one otherwise; a part that meets no higher one keeps its pixels when its
    peak rises that much above the base level. Each pixel belongs to the peak that its highest
    neighbour above it leads to (a watershed); instances under ``cross_fallback_min_size``
    patches are dropped. Two blurred objects whose bumps merge above ``cross_fallback_ratio``
    stay apart while their saddle is deep enough; a noise ripple on one bump is too shallow to
    split it. A bump alone counts when its peak reaches ``cross_peak_base +
    cross_peak_prominence`` of the range (0.5 by default, as ``cross_components``). All zeros
    for a flat map. The fallback's layout (``NuminaConfig.cross_peak_prominence``)."""
    cfg = config or NuminaConfig()
    c = np.asarray(focus.cross, dtype=np.float64)
    H, W = c.shape
    floor, spread = focus.floor, focus.spread
    if spread > 0 and cfg.cross_peak_sigma > 0:  # the levels below are the smoothed map's own
        from scipy.ndimage import gaussian_filter
        # the shorter side: a portrait frame is smoothed as its landscape transpose
        _, c, floor, spread = _map_levels(gaussian_filter(c, cfg.cross_peak_sigma * min(H, W)),
                                          (H, W), cfg)
    if spread <= 0:
        return np.zeros((H, W), dtype=np.int32)
    return _labels_of_size(flood_peaks(c, floor + cfg.cross_peak_base * spread,
                                       cfg.cross_peak_prominence * spread),
                           cfg.cross_fallback_min_size)


def map_bumps(focus: NounFocus, config: NuminaConfig | None = None) -> np.ndarray:
    """The noun map's bumps as ``config`` reads them: its peaks (``cross_peaks``), or its
    plain components (``cross_components``) with ``cross_peak_prominence=None``; int32
    [H, W] labels (0 = none). What the fallback starts from and where step 5c looks for
    objects no instance touches (``unclaimed_peaks``)."""
    cfg = config or NuminaConfig()
    return cross_components(focus, cfg) if cfg.cross_peak_prominence is None else cross_peaks(focus, cfg)


def fallback_layout(focus: NounFocus, config: NuminaConfig | None = None) -> np.ndarray:
    """The layout a noun gets from its cross-attention when the self-attention does not
    tell its objects apart (``self_evidence_factor``, ``cross_fallback_excess``): the map's
    peaks (``cross_peaks``), or its plain components (``cross_components``) with
    ``cross_peak_prominence=None``; with ``cross_fallback_half_peak``, its components at half
    its peak (``half_peak_components``) instead when they are more; int32 [H, W]."""
    cfg = config or NuminaConfig()
    labels = map_bumps(focus, cfg)
    if cfg.cross_fallback_half_peak:
        half = half_peak_components(focus, cfg)
        if half.max() > labels.max():  # the reading that finds more objects
            return half
    return labels


def half_peak_components(focus: NounFocus, config: NuminaConfig | None = None) -> np.ndarray:
    """The noun map's 8-connected components at or above half its peak (the naive counter's
    cut: relative to 0, not to the map's floor), each of at least ``cross_fallback_min_size``
    patches, as int32 [H, W] labels (0 = none, 1..n in raster order of their first pixel);
    all zeros for a map without a positive peak. ``focus``: the noun's ``NounFocus``.

    Where the map's floor lies well above 0 (a blurred map over a crowded frame), half the
    peak lies under the level a bump needs in ``cross_peaks`` (half of the range above the
    floor), and far or faint objects whose bumps peak between the two are counted here and
    not there (``NuminaConfig.cross_fallback_half_peak``)."""
    cfg = config or NuminaConfig()
    return _peak_share_components(np.asarray(focus.cross, dtype=np.float64), 0.5,
                                  cfg.cross_fallback_min_size)


def _peak_share_components(img: np.ndarray, share: float, min_size: int) -> np.ndarray:
    """The 8-connected components of ``img`` (float [H, W]) at or above ``share`` times its
    peak, each of at least ``min_size`` patches, as int32 [H, W] labels (0 = none, 1..n in
    raster order of their first pixel); all zeros when the peak is not positive. The cut of
    ``half_peak_components`` and of ``naive_cross_count``."""
    from scipy.ndimage import label

    top = float(img.max()) if img.size else 0.0
    if not top > 0:
        return np.zeros(img.shape, dtype=np.int32)
    lab, _ = label(img >= share * top, structure=np.ones((3, 3), dtype=bool))
    return _labels_of_size(lab, min_size)


def strong_components(focus, config: NuminaConfig | None = None) -> np.ndarray:
    """The noun's strong cross-map components: those of ``cross_components`` whose peak
    reaches ``floor + cross_fallback_peak * (peak - floor)`` of the map, as int32 [H, W]
    labels (0 = none, 1..n in raster order of their first pixel). ``focus``: the noun's
    ``NounFocus``; all zeros for a flat map."""
    cfg = config or NuminaConfig()
    comps = cross_components(focus, cfg)
    m = int(comps.max())
    if m == 0:
        return comps
    flat = comps.reshape(-1)
    peak = np.full(m + 1, -np.inf)
    np.maximum.at(peak, flat, np.asarray(focus.cross, dtype=np.float64).reshape(-1))
    strong = peak >= focus.floor + cfg.cross_fallback_peak * focus.spread
    strong[0] = False
    return _regions_to_instances(comps, strong)


def head_missed_objects(labels: np.ndarray, focus, config: NuminaConfig | None = None,
                        strong: np.ndarray | None = None, component_lift=None,
                        head_threshold: float | None = None) -> bool:
    """Whether the chosen head's instances of a noun (``labels``, int [H, W], 0 = none, at
    least one instance) leave ``cross_fallback_excess`` or more of its cross map's strong
    components unaccounted for: the map holds that many more strong components than the head
    has instances (the self-attention merged or dropped objects the cross map shows apart),
    or that many strong components touch none of the instances (the head's instances lie
    elsewhere: on the parts of a few objects, on another category's objects); then the
    layout is read from the cross map (``fallback_layout``). ``strong``: the strong components,
    int [H, W] labels (None: ``strong_components(focus)``; with several nouns, those the
    noun keeps once each strong component is given to one noun). False when the excess is
    None or the head has no instance (a noun the head does not find stays at 0: an absent
    noun's map still has bumps).

    ``component_lift``: None, or ``component_lift(strong) -> float [m + 1]``, the chosen
    head's containment lift on each strong component (``strong`` int [H, W], ids 1..m);
    called only when the excess is reached. With it and ``cross_fallback_evidence``, an
    untouched strong component counts only when its lift reaches that share of the median
    lift of the touched ones, provided that median exceeds the floor (``evidence_floor``,
    ``NuminaConfig.cross_fallback_evidence_floor``; ``NuminaConfig.cross_fallback_evidence``):
    clutter where the head shows no object is not a missed object. ``head_threshold``: the
    chosen head's own instance threshold (``partition.head_lift_threshold``), the floor that
    median must exceed with ``cross_fallback_evidence_floor="head"``."""
    cfg = config or NuminaConfig()
    labels = np.asarray(labels)
    count = int(labels.max()) if labels.size else 0
    if cfg.cross_fallback_excess is None or count < 1:
        return False
    strong = strong_components(focus, cfg) if strong is None else np.asarray(strong)
    m = int(strong.max()) if strong.size else 0
    touched = np.zeros(m + 1, dtype=bool)
    touched[strong[labels > 0]] = True  # strong components holding an instance's pixel
    touched[0] = False
    found = int(touched.sum())

    def reached(counted: int) -> bool:  # more components than instances, or untouched ones
        return max(counted - count, counted - found) >= cfg.cross_fallback_excess

    if not reached(m):
        return False
    if component_lift is None or cfg.cross_fallback_evidence is None:
        return True
    return reached(_shown_components(strong, touched, component_lift, cfg, head_threshold))


def evidence_floor(cfg: NuminaConfig, head_threshold: float | None = None) -> float:
    """The median lift the chosen head must keep on the strong components its instances touch
    for ``cross_fallback_evidence`` to apply (``cfg.cross_fallback_evidence_floor``): None =
    ``min_lift``; "head" = the head's own instance threshold ``head_threshold`` (``min_lift``
    when not given); a number = itself."""
    floor = cfg.cross_fallback_evidence_floor
    if floor is None:
        return cfg.min_lift
    if floor == "head":
        return cfg.min_lift if head_threshold is None else float(head_threshold)
    return float(floor)


def _shown_components(strong: np.ndarray, touched: np.ndarray, component_lift, cfg: NuminaConfig,
                      head_threshold: float | None = None) -> int:
    """How many of the ``m`` strong components (int [H, W] ids, ``touched`` bool [m + 1]:
    those holding an instance) count as objects for ``head_missed_objects``: every touched
    one, and each untouched one whose lift (``component_lift(strong)``, float [m + 1]) reaches
    ``cross_fallback_evidence`` times the touched ones' median lift; all ``m`` when no
    component is touched or that median is at most the floor (``evidence_floor``)."""
    m = len(touched) - 1
    if not touched.any():
        return m
    lift = np.asarray(component_lift(strong), dtype=np.float64)
    if lift.shape != (m + 1,):
        raise ValueError(f"component_lift gave shape {lift.shape}; expected ({m + 1},): one lift per "
                         "strong component id 0..m")
    reference = float(np.median(lift[touched]))
    # the head does not show the objects it found (NaN too): the map is trusted
    if not reference > evidence_floor(cfg, head_threshold):
        return m
    shown = ~touched & (lift >= cfg.cross_fallback_evidence * reference)
    shown[0] = False
    return int(touched.sum() + shown.sum())


def lacks_self_evidence(parts: HeadPartitions, head: int, focus, cfg: NuminaConfig,
                        self_attn=None, others=None) -> bool:
    """Whether ``head``'s instances on ``focus`` stand out of its background by no more than
    ``cfg.self_evidence_factor`` against its pieces of their size
    (``partition.instance_evidence``), or by no more than ``cfg.self_evidence_null_factor``
    against its background pieces no larger than twice their size
    (``partition.null_evidence``): then the layout is the
    cross-attention's (``fallback_layout``). ``self_attn``: the frame's source of entries
    (``self_attention_source``), to measure the head's regions off the focus that are not
    measured yet (the head choice measures a dozen); None = every region is measured (phase
    1). ``others``: the focus of the prompt's other nouns (a mask, ``NounFocus`` or
    ``FocusUnion``), whose regions are their objects, not background pieces: left out of the
    comparison (None: none). False when the factor is None, no head was chosen, or nothing
    could be compared."""
    if cfg.self_evidence_factor is None or head < 0:
        return False
    regions = parts.regions[head]
    elsewhere = None if others is None else region_hits(regions, others, cfg.focus_overlap)
    if self_attn is not None:
        off = ~region_hits(regions, focus, cfg.focus_overlap)
        if elsewhere is not None:
            off &= ~elsewhere
        fill_lift(parts, self_attn, [off if k == head else np.zeros(len(x), dtype=bool)
                                     for k, x in enumerate(parts.lift)],
                  cfg.lift_sample, cfg.min_member_lift)
    evidence = instance_evidence(parts, head, focus, cfg.focus_overlap, cfg.min_lift,
                                 cfg.min_lift_null_factor, not_background=elsewhere)
    if evidence <= cfg.self_evidence_factor:  # NaN: False
        return True
    if cfg.self_evidence_null_factor is None:
        return False
    above_null = null_evidence(parts, head, focus, cfg.focus_overlap, cfg.min_lift,
                               cfg.min_lift_null_factor, not_background=elsewhere)
    return bool(above_null <= cfg.self_evidence_null_factor)  # NaN: False


def focus_mask(cross_map, grid: tuple[int, int], config: NuminaConfig | None = None
               ) -> np.ndarray:
    """The focus mask F (bool [H, W]) of one cross-attention map ``[HW]`` or ``[H, W]``."""
    return noun_focus(cross_map, grid, config).mask


def _cluster(bright: np.ndarray, cfg: NuminaConfig) -> np.ndarray:
    """The density-clustered pixels of ``bright`` (bool [H, W]), bool [H, W]."""
    if int(bright.sum()) < cfg.focus_min_samples:
        return np.zeros(bright.shape, dtype=bool)
    if cfg.focus_clustering == "dbscan":
        return dbscan_members(bright, cfg.focus_eps, cfg.focus_min_samples)
    else:
        fg = np.argwhere(bright)
        try:
            import hdbscan
        except ImportError as err:  # the optional extra numina-hooks[hdbscan]
            raise ImportError("NuminaConfig(focus_clustering='hdbscan') needs the hdbscan package, "
                              "which is not installed: pip install 'numina-hooks[hdbscan]', "
                              "or use focus_clustering='dbscan' (the default)") from err
        size = max(2, cfg.focus_min_samples)
        lab = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=cfg.focus_min_samples,
                              allow_single_cluster=True).fit_predict(fg.astype(np.float64))
    keep = fg[lab >= 0]
    out = np.zeros_like(bright)
    out[keep[:, 0], keep[:, 1]] = True
    return out


def dbscan_members(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """The pixels of ``points`` (bool [H, W]) that DBSCAN on their patch coordinates puts in
    a cluster, bool [H, W]: core pixels (at least ``min_samples`` pixels of ``points``, the
    pixel itself included, within distance ``eps``) and pixels within ``eps`` of a core
    pixel; the rest is DBSCAN's noise. The same membership as scikit-learn's
    ``DBSCAN(eps, min_samples).fit_predict(coords) >= 0`` (the cluster ids are not needed:
    the focus mask is their union), computed with two grid filters in a fraction of a
    millisecond instead of a neighbour search."""
    from scipy.ndimage import binary_dilation, correlate
    disc = grid_disc(eps)
    near = correlate(points.astype(np.int32), disc.astype(np.int32), mode="constant", cval=0)
    core = points & (near >= min_samples)
    return points & binary_dilation(core, structure=disc)


def _instances(proposals: np.ndarray, focus: np.ndarray, min_overlap: float) -> np.ndarray:
    m = int(proposals.max())
    if m == 0:
        return np.zeros_like(proposals, dtype=np.int32)
    size = np.bincount(proposals.ravel(), minlength=m + 1)
    hit = np.bincount(proposals.ravel(), weights=focus.ravel().astype(np.float64),
                      minlength=m + 1)
    keep = np.zeros(m + 1, dtype=bool)
    keep[1:] = hit[1:] >= min_overlap * size[1:]
    new = np.zeros(m + 1, dtype=np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new[proposals]


def partition_options(cfg: NuminaConfig) -> dict:
    """The keyword arguments of ``partition_heads`` (and ``partition_from_qk``) that
    ``cfg`` sets."""
    return dict(band=cfg.edge_band, min_region=cfg.min_region,
                max_region_fraction=cfg.max_region_fraction,
                reference_quantile=cfg.edge_reference_quantile, sink_mass=cfg.sink_mass,
                core_quantile=cfg.core_quantile, peak_gap=cfg.peak_gap)


def reach_option(cfg: NuminaConfig) -> tuple[float, float, float] | None:
    """The ``reach`` argument of ``link_regions`` and ``unclaimed_instances`` that ``cfg``
    sets: ``(link_reach, link_reach_factor, link_reach_grid_share)``, or None when
    ``link_reach`` is None."""
    if cfg.link_reach is None:
        return None
    return (cfg.link_reach, cfg.link_reach_factor, cfg.link_reach_grid_share)


def bridge_option(focus, cfg: NuminaConfig) -> MapBridge | None:
    """The ``bridge`` argument of ``link_regions`` and ``unclaimed_instances`` that ``cfg``
    sets for ``focus`` (a ``focus.NounFocus``, a ``FocusUnion`` of them, or a bool mask): a
    ``partition.MapBridge`` of the ``(map, floor)`` of each noun that responds, at
    ``link_bridge``, with ``link_map_veto``; or None (``link_bridge`` None, or no map: a
    bare mask)."""
    if cfg.link_bridge is None:
        return None
    members = focus.members if isinstance(focus, FocusUnion) else [focus]
    maps = [(f.cross, f.floor) for f in members if isinstance(f, NounFocus) and f.spread > 0]
    if not maps:
        return None
    return MapBridge(maps, cfg.link_bridge, cfg.link_map_veto)


def splinter_option(cfg: NuminaConfig) -> tuple[float, float] | None:
    """The ``splinter`` argument of ``link_regions`` and ``unclaimed_instances`` that ``cfg``
    sets: ``(splinter_fraction, splinter_link_gap)``, or None when the gap is None."""
    if cfg.splinter_link_gap is None:
        return None
    return (cfg.splinter_fraction, cfg.splinter_link_gap)


def self_attention_source(self_attn, cfg: NuminaConfig):
    """The frame's self-attention as the partition reads it: a ``[heads, N, N]`` map as a
    ``MapSelfAttention`` with ``cfg.own_key``; a source of entries (``attention_entries``)
    as it is. Made once per frame, so that every step reads the same rows."""
    # a tensor as it is (its callers checked it; a second check would read the whole map again)
    if not isinstance(self_attn, (torch.Tensor, MapSelfAttention, QKSelfAttention)):
        self_attn = as_tensor(self_attn, "self_attn")
    return _as_source(self_attn, exclude_own_key=cfg.own_key == "excluded")


def _partition(sa, grid: tuple[int, int], cfg: NuminaConfig) -> HeadPartitions:
    """``partition_heads`` of ``sa`` (a map or ``self_attention_source``) with ``cfg``."""
    return partition_heads(self_attention_source(sa, cfg), grid, **partition_options(cfg))


def choose_head_on(parts: HeadPartitions, self_attn, focus, cfg: NuminaConfig,
                   self_head: int | None = None) -> tuple[int, np.ndarray, list]:
    """The containment head choice for one focus (a bool [H, W] mask, or a
    ``focus.NounFocus`` / ``FocusUnion`` with the config's local region tests), before any
    linking: the lifts it needs are measured from ``self_attn`` (the frame's map, a source of
    its entries, or None: measured already). Returns (head or -1, scores float32 [heads],
    per head its instances: bool [m_k + 1] over its regions). ``self_head`` forces the head."""
    if self_attn is not None:
        self_attn = self_attention_source(self_attn, cfg)
    wanted = focus_regions(parts, focus, cfg.focus_overlap)
    tiles = False
    if cfg.min_lift_null_factor is not None:  # the head's own threshold: its null measured too
        null, tiles = null_candidates(wanted, parts.sink)
        # only where the head has a region on the focus: a head without one has no instance
        # whatever its threshold (a quarter to a third of the blocks read, on the project's scenes)
        candidate = np.array([bool((on[1:] & ~sk[1:]).any()) for on, sk in zip(wanted, parts.sink)])
        wanted = [on | (off & c) for on, off, c in zip(wanted, null, candidate)]
        tiles = tiles & candidate
    fill_lift(parts, self_attn, wanted, cfg.lift_sample, cfg.min_member_lift, null_tiles=tiles)
    scores, counts, instances = head_scores_from_focus(parts, focus, cfg.focus_overlap, cfg.min_lift,
                                                       cfg.min_lift_null_factor)
    head = choose_head(scores, counts, cfg.head_margin) if self_head is None else int(self_head)
    return head, scores.astype(np.float32), instances


def link_chosen_head(parts: HeadPartitions, self_attn, head: int, focus, cfg: NuminaConfig) -> None:
    """Join the pieces of one object among the regions of the chosen ``head``, in place
    (``cfg.link_ratio``; regions under ``min_lift`` but over the head's own threshold on
    ``focus`` join by the splinter test only: by the ratio, a diffuse head's weak regions join
    distinct objects). Joined regions keep their pieces' mean lift and contrast, so the
    choice stands. ``self_attn``: the frame's source of entries (``self_attention_source``).
    With ``link_bridge``, pieces the noun's map holds in one bump join out of reach, and
    weak ones by the ratio too (``partition.map_bridged``)."""
    if head < 0 or cfg.link_ratio is None:
        return
    threshold = head_lift_threshold(parts, head, focus, cfg.focus_overlap, cfg.min_lift,
                                    cfg.min_lift_null_factor)
    link_regions(parts, self_attn, cfg.link_ratio, cfg.min_lift, cfg.lift_sample, [head],
                 splinter_option(cfg), splinter_lift=threshold, reach=reach_option(cfg),
                 bridge=bridge_option(focus, cfg))


def choose_from_partitions(parts: HeadPartitions, self_attn, focus,
                           cfg: NuminaConfig, self_head: int | None = None
                           ) -> tuple[int, np.ndarray, np.ndarray]:
    """Containment head choice and that head's instances for one focus (a bool [H, W] mask,
    or a ``focus.NounFocus`` / ``FocusUnion`` with the config's local region tests):
    ``choose_head_on``, the head's pieces linked (``link_chosen_head``), its instances.

    Returns (head or -1, labels int32 [H, W], scores float32 [heads]). ``self_head`` forces
    the head (the true-head reference of the benchmark). ``self_attn``: the frame's map, a
    source of its entries, or None (lifts measured and regions linked already)."""
    if self_attn is not None:
        self_attn = self_attention_source(self_attn, cfg)
    head, scores, instances = choose_head_on(parts, self_attn, focus, cfg, self_head)
    if head >= 0 and cfg.link_ratio is not None and self_attn is not None:
        link_chosen_head(parts, self_attn, head, focus, cfg)
        instances[head] = head_instances(parts, head, focus, cfg.focus_overlap, cfg.min_lift,
                                         cfg.min_lift_null_factor, cfg.instance_null_factor)
    if head < 0:
        labels = np.zeros(parts.regions.shape[1:], dtype=np.int32)
    else:
        labels = head_labels(parts, head, instances[head], cfg)
        if self_attn is not None:
            labels = with_unclaimed(labels, focus, self_attn, head, cfg, parts.sink_keys[head],
                                    head_cut_regions(parts, head))
    return head, labels, scores


def head_labels(parts: HeadPartitions, head: int, keep: np.ndarray, cfg: NuminaConfig
                ) -> np.ndarray:
    """The instances of ``head`` (its regions whose ids ``keep``, bool [m + 1], marks) as
    labels int32 [H, W] (1..n in raster order), each region grown back by ``cfg.peak_rim``
    rings inside the region it was trimmed from (``partition.rim_grown``); the count is the
    number of kept regions either way."""
    cut = None if parts.cut is None else parts.cut[head]
    return _regions_to_instances(rim_grown(parts.regions[head], cut, cfg.peak_rim), keep)


def head_cut_regions(parts: HeadPartitions, head: int) -> np.ndarray:
    """int32 [H, W]: the regions of ``head`` as cut (before the peaks were trimmed), 0 = none."""
    regions = parts.regions if parts.cut is None else parts.cut
    return regions[head]


def null_area(regions: np.ndarray, self_attn, head: int, cfg: NuminaConfig) -> np.ndarray:
    """bool [H, W]: where step 5c's shape-matched null may lay copies besides the exclusions
    ``partition.unclaimed_peaks`` makes, by ``cfg.unclaimed_peak_null_area``: "background" =
    the head's pixels in no region; "off_bumps" = the whole frame; "off_objects" = the frame
    less the regions whose containment lift in ``head`` reaches ``cfg.min_lift`` (objects of
    any noun, which keep their attention by more than chance). ``regions``: int [H, W], the
    head's partition as cut (0 = none), or bool [H, W], its background (the regions then
    taken as the 4-connected components off it)."""
    regions = np.asarray(regions)
    if regions.dtype == bool:
        from scipy.ndimage import label

        regions = label(~regions)[0]
    if cfg.unclaimed_peak_null_area == "background":
        return regions == 0
    if cfg.unclaimed_peak_null_area == "off_bumps":
        return np.ones(regions.shape, dtype=bool)
    lifts = head_region_lifts(self_attn, head, regions, max(cfg.lift_sample, UNCLAIMED_SAMPLE), regions.shape)
    held = np.nan_to_num(lifts, nan=-np.inf) >= cfg.min_lift
    held[0] = False
    return ~held[regions]


#: members measured per left-over focus component: they are few and large, and their lift
#: is near the threshold for the objects they are meant to find; 16 members (the partition's
#: ``lift_sample``) gave lifts off by up to half of the exact value on hand-built maps
UNCLAIMED_SAMPLE = 256


def with_unclaimed(labels: np.ndarray, focus, self_attn, head: int,
                   cfg: NuminaConfig, sink_keys: np.ndarray,
                   head_regions: np.ndarray | None = None, weak: bool = False):
    """``labels`` (int [H, W], instances of ``head``) with the instances found in the focus
    they leave unclaimed (``cfg.unclaimed_min_lift``; ``partition.unclaimed_instances``;
    ``focus``: a bool [H, W] mask or a ``focus.NounFocus``, whose mask is read), then, with
    ``cfg.unclaimed_peaks``, a ``NounFocus`` and at least one instance, those found on the
    map's bumps no instance touches (``partition.unclaimed_peaks``); ``labels`` as they are
    when ``unclaimed_min_lift`` is None. ``self_attn``: the frame's ``[heads, N, N]`` map or
    a source of its entries; ``sink_keys``: bool [N], the head's attention-sink keys
    (``HeadPartitions.sink_keys``); ``head_regions``: int [H, W], the head's partition as
    cut (``head_cut_regions``), or bool [H, W], its pixels in no region: where the bumps'
    shape-matched null lays its copies follows from it (``null_area``,
    ``cfg.unclaimed_peak_null_area``; ``cfg.unclaimed_peak_null_z``; None = no null),
    worked out only when a bump needs the null. ``weak``: return ``(labels, mask)``,
    ``mask`` bool [H, W] the pixels of the bumps that only the null let in."""
    none = np.zeros(np.shape(labels), dtype=bool)
    if cfg.unclaimed_min_lift is None:
        return (labels, none) if weak else labels
    common = dict(min_lift=cfg.unclaimed_min_lift, link_ratio=cfg.link_ratio,
                  sample=max(cfg.lift_sample, UNCLAIMED_SAMPLE), sink_keys=sink_keys,
                  splinter=splinter_option(cfg), reach=reach_option(cfg), bridge=bridge_option(focus, cfg))
    labels = unclaimed_instances(labels, focus, self_attn, head, min_size=cfg.unclaimed_min_size,
                                 **common)
    if cfg.unclaimed_peaks and isinstance(focus, NounFocus) and labels.max() > 0:
        background = None if head_regions is None else (lambda: null_area(head_regions, self_attn, head, cfg))
        return unclaimed_peaks(labels, map_bumps(focus, cfg), self_attn, head,
                               min_size=cfg.cross_fallback_min_size, background=background,
                               null_z=cfg.unclaimed_peak_null_z, weak=weak, **common)
    return (labels, none) if weak else labels


def layout_from_maps(self_map, cross_map, grid: tuple[int, int],
                     config: NuminaConfig | None = None, *, self_head: int = -1,
                     cross_head: int = -1) -> Layout:
    """Layout from already chosen maps: ``self_map`` ``[HW, HW]`` (the frame's best
    self-attention head; rows that do not sum to 1 are divided by their sums, as in
    ``layout_from_attention``) and ``cross_map`` ``[HW]`` or ``[H, W]`` (the noun's map). Reuse
    one ``self_map`` for every noun of the frame. ``self_head``/``cross_head`` are recorded.

    With ``proposal_cut="adaptive"`` the map is cut at its own Otsu threshold on absolute
    edge weights (one map: no other head to take them relative to, nor to measure
    containment against or to join split objects by: ``core_quantile`` is not used), and a region is an instance by the focus alone
    (``focus_overlap`` and the local tests ``focus_specks``, ``focus_contrast``),
    attention-sink regions excepted; trimmed peaks are grown back by ``peak_rim`` in the
    labels (``head_labels``), as in ``layout_from_attention``."""
    cfg = NuminaConfig.given(config, "layout_from_maps")
    H, W = (int(g) for g in grid)
    sm = attention_rows(self_map, "self_map")  # finite, not constant, probabilities; rows summing to 1
    cm = as_tensor(cross_map, "cross_map")
    check_not_constant(cm, "cross_map")
    check_probabilities(cm, "cross_map")
    focus = noun_focus(cm, (H, W), cfg)
    if cfg.proposal_cut == "adaptive":
        if sm.ndim != 2 or sm.shape[0] != sm.shape[1]:
            raise ValueError(f"self_map must be [HW, HW], got {tuple(sm.shape)}")
        _check_grid(sm.shape[0], (H, W), "layout_from_maps")
        # cores are not grown: one map has no other heads to join an object's cores again
        parts = partition_heads(self_attention_source(sm[None], cfg), (H, W),
                                **(partition_options(cfg) | {"core_quantile": None}))
        proposals = parts.regions[0]
        keep = focus_regions(parts, focus, cfg.focus_overlap)[0] & ~parts.sink[0]
        labels = head_labels(parts, 0, keep, cfg)
    else:
        proposals = proposals_from_self_map(sm, (H, W), cfg)
        labels = _instances(proposals, focus.mask, cfg.focus_overlap)
    return Layout(labels=labels, count=int(labels.max()), self_head=int(self_head),
                  cross_head=int(cross_head), focus=focus.mask, proposals=proposals)


def checked_self_attention(self_attn, grid: tuple[int, int], caller: str, *,
                           entries_only: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """One frame's ``[heads, HW, HW]`` self-attention (tensor or array) checked as
    ``layout_from_attention`` takes it and with rows summing to 1 (``attention_rows``), and
    the grid ``(H, W)``. ``entries_only``: the caller reads the map only through
    ``MapSelfAttention`` (the adaptive cut with the containment head choice), which checks
    every entry it reads, so the row sums are sampled (``attention_rows(sampled=True)``).
    ValueError naming ``caller`` and what to pass instead."""
    sa = self_attn if isinstance(self_attn, torch.Tensor) else torch.as_tensor(self_attn)
    if sa.ndim != 3:
        hint = ""
        if sa.ndim == 2:
            hint = ": one head's [HW, HW] map goes to layout_from_maps(self_map, cross_map, grid)"
        elif sa.ndim == 4:
            hint = ": pass one batch row, self_attn[b] (the conditional branch of classifier-free guidance)"
        raise ValueError(f"self_attn must be [heads, HW, HW], got shape {tuple(sa.shape)}{hint}")
    if sa.shape[2] != sa.shape[1]:
        raise ValueError(f"self_attn must be [heads, HW, HW], got shape {tuple(sa.shape)}")
    H, W = _check_grid(sa.shape[1], grid, caller)
    # finite, not constant, probabilities; rows summing to 1
    rows = attention_rows(sa, "self_attn", sampled=entries_only)
    check_grid_orientation(rows, (H, W), caller)
    return rows, (H, W)


def checked_cross_attention(cross_attn, self_shape, name: str) -> torch.Tensor:
    """A noun's cross-attention in the frame whose self-attention has shape ``self_shape``
    (``[heads, HW, HW]``): one map per head, ``[heads, HW]`` or ``[heads, H, W]``, or one map
    for all heads (already averaged or chosen), ``[HW]``, ``[H, W]`` or ``[1, HW]``; checked
    (shape, heads, finite, not constant, no negative entries), as ``[heads, HW]`` (``[1, HW]``
    for one map). ValueError naming ``name``."""
    ca = as_tensor(cross_attn, name)
    given = tuple(ca.shape)
    hw = int(self_shape[1])
    if ca.ndim == 1 or (ca.ndim == 2 and ca.shape[1] != hw and ca.numel() == hw):
        ca = ca.reshape(1, -1)  # one map for the noun: [HW] or [H, W]
    elif ca.ndim == 3:
        ca = ca.reshape(ca.shape[0], -1)
    if ca.ndim != 2 or ca.shape[1] != hw:
        hint = ": pass one batch row, cross_attn[b] (the conditional branch of classifier-free guidance)" \
            if len(given) == 3 and given[2] == hw else ""
        raise ValueError(f"{name} must be [heads, HW] or [heads, H, W] (one map per head), or [HW] or "
                         f"[H, W] (one map), with HW={hw}; got shape {given}{hint}")
    if ca.shape[0] not in (self_shape[0], 1):
        raise ValueError(f"self_attn has {self_shape[0]} heads but {name} has {ca.shape[0]}: pass both "
                         "maps of the same layer, with the same heads (or one map for the noun, [HW])")
    check_not_constant(ca, name)
    check_probabilities(ca, name)
    return ca


def layout_from_attention(self_attn, cross_attn, grid: tuple[int, int],
                          config: NuminaConfig | None = None, *,
                          self_head: int | None = None) -> Layout:
    """The countable layout of one noun in one frame. With the default algorithm (containment
    head choice, adaptive cut) and no ``self_head``, the noun is read by phase 1's own rule
    (``identify.read_nouns`` with this noun alone), so this function gives the layout phase 1
    reads for a prompt with one counted noun.

    Args:
        self_attn: ``[heads, HW, HW]`` self-attention of the frame, tensor or array, at the
            reference step and layer: attention probabilities. Rows that do not sum to 1 (the
            frame's block of attention over several frames, the video block of joint
            attention) are divided by their sums (``heads.attention_rows``).
        cross_attn: ``[heads, HW]`` or ``[heads, H, W]``: the noun's cross-attention in this
            frame (summed over the noun's token columns), one map per head of ``self_attn``;
            or one map for the noun (``[HW]``, ``[H, W]`` or ``[1, HW]``: the heads already
            averaged, or one chosen), read as it is.
        grid: (H, W) in patches; H * W = HW.
        config: ``NuminaConfig`` (defaults if None; ``NuminaConfig.paper()`` for the paper's
            algorithm).
        self_head: use this self-attention head instead of choosing one (a reference for
            benchmarks; its instances are kept whatever their evidence: no cross-map
            fallback, ``NuminaConfig.self_evidence_factor``); None = choose.

    Returns:
        ``Layout`` with ``.labels`` (int32 [H, W], 0 background, 1..n instances), ``.count``,
        ``.self_head``, ``.cross_head``, ``.focus``, ``.proposals``, ``.head_scores``.

    Raises:
        ValueError: NaN/inf in the maps, constant maps, negative entries (scores or logits
        instead of probabilities), self-attention rows without positive mass, or shapes that
        do not match ``grid``.
    """
    cfg = NuminaConfig.given(config, "layout_from_attention")
    adaptive = cfg.proposal_cut == "adaptive"
    # the default: the map read only through its entries, with the cross-map fallbacks
    default_path = adaptive and cfg.head_choice == "containment"
    sa, (H, W) = checked_self_attention(self_attn, grid, "layout_from_attention",
                                        entries_only=default_path)
    ca = checked_cross_attention(cross_attn, sa.shape, "cross_attn")
    if self_head is not None and not 0 <= int(self_head) < sa.shape[0]:
        raise ValueError(f"self_head={self_head!r} is out of range: self_attn has "
                         f"{sa.shape[0]} heads (0..{sa.shape[0] - 1})")
    cross_map, cross_head = select_cross_attention(ca, cfg.cross_head)
    if cfg.head_choice == "containment" or adaptive:
        source = self_attention_source(sa, cfg)
        parts = _partition(source, (H, W), cfg)
        focus = noun_focus(cross_map, (H, W), cfg)
    if default_path and self_head is None:
        # phase 1's own rule for its nouns (``identify.read_nouns``), with this noun alone: one
        # rule, so that this function and phase 1 read the same layout
        from .identify import read_nouns
        read = read_nouns(parts, {"noun": focus}, {"noun": focus.cross}, cfg, source=source)["noun"]
        return read.layout(cross_head, focus.mask)
    if cfg.head_choice == "containment":
        head, labels, scores = choose_from_partitions(parts, source, focus, cfg, self_head)
    else:
        image = score_self_attention_heads(sa, (H, W), sobel_weight=cfg.sobel_weight,
                                           block_size=cfg.block_size, stride=cfg.score_stride)
        scores = image.numpy().astype(np.float32)
        head = int(image.argmax()) if self_head is None else int(self_head)
        if adaptive:
            _, labels, _ = choose_from_partitions(parts, source, focus, cfg, head)
    # the labels of ``choose_from_partitions`` are the layout only with the adaptive cut (the
    # correlation cut reads its proposals from ``layout_from_maps`` below); a forced head
    # keeps its instances (no cross-map fallback)
    if adaptive:
        proposals = parts.regions[head] if head >= 0 else np.zeros((H, W), np.int32)
        layout = Layout(labels=labels, count=int(labels.max()), self_head=head,
                        cross_head=cross_head, focus=focus.mask, proposals=proposals)
    elif head < 0:  # containment found no head with an instance on the focus
        layout = Layout(labels=np.zeros((H, W), np.int32), count=0, self_head=-1,
                        cross_head=cross_head, focus=focus.mask, proposals=np.zeros((H, W), np.int32))
    else:
        layout = layout_from_maps(sa[head], cross_map, (H, W), cfg, self_head=head,
                                  cross_head=cross_head)
    layout.head_scores = np.asarray(scores, dtype=np.float32)
    return layout


def naive_cross_count(cross_attn, grid: tuple[int, int], threshold: float = 0.5,
                      min_size: int = 2) -> int:
    """The floor to beat: 8-connected components of the head-mean cross-attention
    thresholded at ``threshold * peak`` (components under ``min_size`` patches ignored)."""
    ca = as_tensor(cross_attn, "cross_attn")
    m = ca.reshape(ca.shape[0], -1).mean(0) if ca.ndim >= 2 else ca
    H, W = _check_grid(m.numel(), grid, "naive_cross_count")
    return int(_peak_share_components(m.reshape(H, W).numpy(), threshold, min_size).max())
