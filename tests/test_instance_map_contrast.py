"""Step 8c (``instance_map_contrast``): an instance read from the self-attention must show in
its noun's map as a bump, on hand-built maps with known answers."""

import numpy as np
import pytest
import torch

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.focus import shown_instances
from numina_hooks.numina.identify import layouts_from_attention
from numina_hooks.numina.layout import layout_from_attention, noun_focus
from test_focus_regions import GRID, OBJECTS, _labels, _self_attention

#: a lifted neighbourhood of the map (weak cross heads, blur) around the fourth region
PLATEAU = (slice(5, 10), slice(0, 5))


def _map(labels, objects, plateau=0.0):
    """Cross-attention [H, W]: 0.01 everywhere, +1 on each region id in ``objects``, and
    +``plateau`` over ``PLATEAU`` (a region there has as much attention around it as
    inside it)."""
    m = np.full(GRID, 0.01)
    for k in objects:
        m[labels == k] += 1.0
    m[PLATEAU] += plateau
    return m


def _heads(m, heads=3):
    return torch.from_numpy(np.stack([m.reshape(-1)] * heads)).float()


def test_an_instance_on_a_lifted_background_is_dropped_and_the_rest_renumbered():
    labels = _labels([OBJECTS[0], OBJECTS[1], OBJECTS[3], OBJECTS[2]])  # id 3 on the plateau
    focus = noun_focus(_map(labels, (1, 2, 4), plateau=0.3), GRID)
    kept = shown_instances(labels, focus, 0.0)
    assert kept.max() == 3
    assert (kept[labels == 3] == 0).all()  # the background piece is gone
    # the others keep their pixels, numbered in their order
    for old, new in ((1, 1), (2, 2), (4, 3)):
        assert (kept[labels == old] == new).all()


def test_a_weak_object_brighter_than_its_surroundings_is_kept():
    labels = _labels(OBJECTS[:3])
    m = _map(labels, (1, 2))
    m[labels == 3] += 0.03  # 3% of the others, but above the background around it
    kept = shown_instances(labels, noun_focus(m, GRID), 0.0)
    assert kept.max() == 3
    # with a bar above its contrast it goes
    assert shown_instances(labels, noun_focus(m, GRID), 0.05).max() == 2


def test_an_instance_walled_in_by_others_and_a_flat_map_keep_every_instance():
    labels = np.zeros(GRID, dtype=np.int64)
    labels[2:7, 2:7] = 1
    labels[4, 4] = 2  # no background pixel next to it: no ring to compare with
    m = np.full(GRID, 0.01)
    m[labels == 1] = 1.0  # instance 2 darker than everything around it
    assert shown_instances(labels, noun_focus(m, GRID), 0.0).max() == 2
    flat = noun_focus(np.full(GRID, 0.2), GRID)
    assert shown_instances(labels, flat, 0.0).max() == 2


def test_the_default_counts_the_objects_and_not_the_piece_of_lifted_background():
    # the instance head separates four regions; the noun's map shows three of them as bumps
    # and lifts the fourth together with the background around it onto the focus
    labels = _labels([OBJECTS[0], OBJECTS[1], OBJECTS[3], OBJECTS[2]])
    sa = _self_attention(labels)
    cross = _heads(_map(labels, (1, 2, 4), plateau=0.3))
    default = layout_from_attention(sa, cross, GRID)
    without = layout_from_attention(sa, cross, GRID, NuminaConfig(instance_map_contrast=None))
    assert without.self_head == 1 and without.count == 4
    assert default.self_head == 1 and default.count == 3 and not default.from_cross
    assert not default.labels[labels == 3].any()
    # phase 1's rule for several nouns drops it the same way
    both = layouts_from_attention(sa, {"cat": cross}, GRID)
    assert both["cat"].count == 3


def test_a_noun_left_with_no_instance_is_read_from_its_map():
    labels = _labels([OBJECTS[3]])
    sa = _self_attention(labels)
    m = np.full(GRID, 0.01)
    m[PLATEAU] += 0.3  # the head's only region sits on a plateau of the map
    m[0:2, 12:14] += 1.0  # the map's own bump, where the head has no region
    layout = layout_from_attention(sa, _heads(m), GRID)
    without = layout_from_attention(sa, _heads(m), GRID, NuminaConfig(instance_map_contrast=None))
    assert not without.from_cross and without.labels[labels == 1].all()
    assert layout.from_cross and layout.count == 1
    assert layout.labels[0:2, 12:14].all()  # the map's bump, not the head's region
    assert NuminaConfig.paper().instance_map_contrast is None


@pytest.mark.parametrize("value", [1.5, -2.0, float("nan"), "0.1"])
def test_bad_values_are_refused_with_the_field_named(value):
    with pytest.raises((ValueError, TypeError), match="instance_map_contrast"):
        NuminaConfig(instance_map_contrast=value)
