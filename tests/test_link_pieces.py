"""Pieces of one object are joined by their mutual affinity (``partition._linked``, the
test behind ``NuminaConfig.link_ratio``), on a hand-built map with known affinities."""

import numpy as np
from hand_built_maps import group_head

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.partition import _linked

N = 600  # a 20 x 30 frame


def _map(own: float, between: float, other: float) -> tuple:
    """One head ``[1, N, N]``: pieces P1 and P2 of one object and an object Q, 30 pixels
    each. Rows of a group attend with density ``exp(own) / N`` to their own group,
    ``exp(between) / N`` to the other piece (P1 <-> P2) and ``exp(other) / N`` between
    the object and either piece; the rest of each row is spread over the background."""
    groups = [np.arange(0, 30), np.arange(100, 130), np.arange(300, 330)]
    logd = [[own, between, other], [between, own, other], [other, other, own]]
    return group_head(groups, logd, N)


def test_default_joins_pieces_at_sixty_percent_of_their_own_affinity():
    # mutual affinity 0.6 of the pieces' own: a large object the cut split at high noise
    # (measured 0.30-0.75 on the feature family's large objects at noise 1.0)
    sa, groups = _map(own=2.0, between=1.2, other=-1.0)
    join = _linked(sa, 0, groups, NuminaConfig().link_ratio, 256)
    assert join[0, 1] and join[1, 0]
    assert not join[0, 2] and not join[1, 2]  # an object attending below uniform never joins
    strict = _linked(sa, 0, groups, 0.75, 256)  # the bar before: the pieces stay apart
    assert not strict[0, 1]


def test_two_objects_with_some_mutual_attention_stay_apart():
    # P1 and P2 as two objects attending to each other a little above uniform (a third
    # of their own affinity): under the default bar
    sa, groups = _map(own=2.0, between=0.6, other=-1.0)
    join = _linked(sa, 0, groups, NuminaConfig().link_ratio, 256)
    assert not join[0, 1]
