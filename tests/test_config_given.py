"""A config that is not a ``NuminaConfig`` (a dict of settings, a string) is refused by name
at every public entry that takes one, with how to build one; None means the defaults."""

import numpy as np
import pytest
import torch

from numina_hooks import Numina, NuminaConfig
from numina_hooks.numina import layout_from_attention, layout_from_maps, layouts_from_attention
from numina_hooks.numina.refine import refine_frame, refine_layouts

GRID = (4, 6)
N = GRID[0] * GRID[1]


def _maps():
    g = torch.Generator().manual_seed(0)
    self_attn = torch.softmax(torch.randn(2, N, N, generator=g), -1)
    cross = torch.rand(2, N, generator=g)
    return self_attn, cross


SELF, CROSS = _maps()  # one frame's maps for every call (the layout functions do not change them)

CALLS = {
    "layout_from_attention": lambda cfg: layout_from_attention(SELF, CROSS, GRID, cfg),
    "layout_from_maps": lambda cfg: layout_from_maps(SELF[0], CROSS[0], GRID, cfg),
    "layouts_from_attention": lambda cfg: layouts_from_attention(SELF, {"cat": CROSS}, GRID, cfg),
    "refine_frame": lambda cfg: refine_frame(np.zeros(GRID, dtype=np.int64), 1, cfg),
    "refine_layouts": lambda cfg: refine_layouts([np.zeros(GRID, dtype=np.int64)], 1, cfg),
    "Numina": lambda cfg: Numina(cfg),
}


@pytest.mark.parametrize("where", sorted(CALLS))
def test_a_dict_of_settings_is_refused_by_name_with_how_to_build_one(where):
    with pytest.raises(TypeError, match=rf"{where}: config=\{{'link_ratio': 0.5\}}: expected a "
                                        r"numina_hooks.NuminaConfig .*NuminaConfig\(\*\*"):
        CALLS[where]({"link_ratio": 0.5})
    with pytest.raises(TypeError, match=rf"{where}: config='paper'"):
        CALLS[where]("paper")


@pytest.mark.parametrize("where", sorted(CALLS))
def test_none_and_a_config_are_taken(where):
    CALLS[where](None)
    CALLS[where](NuminaConfig.paper() if where == "Numina" else NuminaConfig())


def test_given_returns_the_config_itself():
    cfg = NuminaConfig(link_ratio=0.5)
    assert NuminaConfig.given(cfg, "here") is cfg
    assert NuminaConfig.given(None, "here") == NuminaConfig()
