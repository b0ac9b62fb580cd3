"""A finer head than the chosen one: objects that one head's region holds together.

The containment score (``partition.head_scores_from_focus``) rewards a region that keeps its
attention inside itself. A class-level head (every object of the noun attends to every
other, a herd read as one) keeps more inside its one region than an instance head keeps
inside each object, and wins the choice with one instance where there are several. Where
that happens, another head splits the winner's regions: its own instances lie inside them,
several to one region, and they stay apart after its pieces of one object are linked
(``link_ratio``). ``finer_head`` looks for such a head among those scoring at least
``finer_head_ratio`` of the winner and takes the one with the most instances.

The link is what tells objects from parts: a head that cuts one object into pieces has
pieces that attend to each other (they join), a head that tells touching objects apart has
objects that do not. The chosen head is read linked too, so that the two counts compare like
with like (a head whose halo regions are cut in pieces and linked back into one region per
neighbourhood would otherwise be measured by its pieces), and its instances are taken with
their holes filled: a head that keeps the rims of objects and the background around them
(an edge head) holds the objects inside its regions' outlines, not in their pixels."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

#: share of the finer head's instance pixels that must lie in the chosen head's instances
NESTED_SHARE = 0.8
#: share of one finer instance's pixels that must lie in one chosen instance to count as held by it
HELD_SHARE = 0.6


def held_counts(coarse: np.ndarray, coarse_keep: np.ndarray, fine: np.ndarray,
                fine_keep: np.ndarray) -> np.ndarray | None:
    """How many instances of the ``fine`` partition each instance of the ``coarse`` one
    holds, or None when the fine instances do not lie inside the coarse ones.

    Args:
        coarse, fine: int [H, W] region ids of two heads (0 = none).
        coarse_keep, fine_keep: bool [m + 1] over each head's ids: its instances.

    Returns:
        int [m_coarse + 1]: per coarse id, the fine instances with at least ``HELD_SHARE`` of
        their pixels in it (only instances counted); None when less than ``NESTED_SHARE`` of
        the fine instances' pixels lie in coarse instances.
    """
    c = coarse.reshape(-1)
    f = fine.reshape(-1)
    in_fine = fine_keep[f]
    if not in_fine.any():
        return None
    in_coarse = coarse_keep[c]
    if float(in_coarse[in_fine].mean()) < NESTED_SHARE:
        return None
    held = np.zeros(len(coarse_keep), dtype=np.int64)
    pairs = np.bincount(f[in_fine] * len(coarse_keep) + c[in_fine],
                        minlength=len(fine_keep) * len(coarse_keep)).reshape(len(fine_keep), -1)
    size = pairs.sum(1)
    for j in np.nonzero(fine_keep)[0]:
        if size[j] == 0:
            continue
        k = int(np.argmax(pairs[j]))
        if coarse_keep[k] and pairs[j, k] >= HELD_SHARE * size[j]:
            held[k] += 1
    return held


def filled_instances(regions: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``regions`` (int [H, W], 0 = none) with each instance (``keep``, bool [m + 1]) grown
    over the holes of its outline that lie in no region: what a rim-shaped instance holds."""
    out = np.array(regions, copy=True)
    for k in np.nonzero(keep)[0]:
        if k == 0:
            continue
        out[ndimage.binary_fill_holes(regions == k) & (out == 0)] = k
    return out


def finer_head(parts, head: int, scores: np.ndarray, instances: list, focus, ratio: float,
               link: Callable, instances_of: Callable) -> tuple[int, object]:
    """The head to read instead of ``head``, or ``head`` itself, and a copy of ``parts``
    with that head linked on ``focus`` when one was made (None otherwise): a caller reading
    the head on the same focus reads the copy instead of linking again.

    Args:
        parts: ``partition.HeadPartitions`` with lifts measured for ``focus`` (as
            ``layout.choose_head_on`` leaves them); not changed (the heads are linked on
            copies: linking head k changes only head k's entries).
        head: the chosen head (-1: none, returned as is).
        scores: float [heads], the containment scores of the choice.
        instances: per head, bool [m_k + 1], its instances before linking.
        focus: the focus the choice was made on.
        ratio: a candidate scores at least ``ratio`` times the chosen head (``finer_head_ratio``).
        link: ``link(parts, k, focus)`` joins head k's pieces of one object in place,
            changing no other head's entries.
        instances_of: ``instances_of(parts, k, focus)`` -> bool [m_k + 1], head k's instances.

    Returns:
        (head, linked): among the heads scoring at least ``ratio`` of ``head`` whose
        instances, once linked, outnumber ``head``'s once linked and lie inside them (their
        outlines, holes filled: ``filled_instances``) with at least one of ``head``'s
        instances holding two or more (``held_counts``), the one with the most instances
        (ties: the higher score); ``head`` when there is none. ``linked``: the copy of
        ``parts`` on which the returned head was linked (other heads may be linked on it
        too; the returned head's entries are those a fresh copy linked alone would hold),
        None when no copy was made.
    """
    from .identify import _copy_partitions

    if head < 0 or not np.isfinite(scores[head]) or scores[head] <= 0:
        return head, None
    # the heads scoring near enough, with their instance counts before linking; linking only
    # joins, and the chosen head keeps at least one instance once linked, so a candidate needs
    # more than one (most frames stop here, without a copy)
    near = {k: int(instances[k].sum()) for k in range(len(scores)) if k != head
            and np.isfinite(scores[k]) and scores[k] >= ratio * scores[head]}
    if not any(count > 1 for count in near.values()):
        return head, None
    chosen = _copy_partitions(parts)
    link(chosen, head, focus)
    own_keep = instances_of(chosen, head, focus)
    own = int(own_keep.sum())
    coarse = filled_instances(chosen.regions[head], own_keep)
    candidates = [k for k, count in near.items() if count > own]
    best, best_key, best_linked = head, (own, float(scores[head])), chosen
    trial = _copy_partitions(parts) if candidates else None
    for k in candidates:
        link(trial, k, focus)
        keep = instances_of(trial, k, focus)
        count = int(keep.sum())
        if (count, float(scores[k])) <= best_key:
            continue
        held = held_counts(coarse, own_keep, trial.regions[k], keep)
        if held is not None and held.max() >= 2:
            best, best_key, best_linked = k, (count, float(scores[k])), trial
    return best, best_linked
