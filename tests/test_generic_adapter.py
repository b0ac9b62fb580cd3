"""The generic adapter and its descriptions: what a wrong description says, and undo."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl
from numina_hooks.adapters.descriptions import DIFFSYNTH_WAN, OFFICIAL_WAN, Argument, AttentionFunction, SitePattern
from numina_hooks.adapters.generic import GenericAdapter

import official_wan_standin as standin

STANDIN = dataclasses.replace(
    OFFICIAL_WAN,
    name="standin",  # not a registered family: the plain GenericAdapter
    model_classes=("official_wan_standin.WanModel",),
    pipeline_classes=(),
    attention=dataclasses.replace(OFFICIAL_WAN.attention, module="official_wan_standin"),
)


class Seen:
    def __init__(self):
        self.views = []

    @hookimpl
    def on_attention(self, view):
        self.views.append(view)


def _run(model):
    g = torch.Generator().manual_seed(0)
    x, context, t = [torch.randn(16, 3, 8, 8, generator=g)], [torch.randn(5, 32, generator=g)], torch.tensor([10.0])
    return model(x, t=t, context=context, seq_len=48)[0]


def test_layout_needs_a_head_count_for_flattened_heads():
    with pytest.raises(ValueError, match="needs heads="):
        AttentionFunction("m", "f", layout="BS(HD)")
    with pytest.raises(ValueError, match="expected one of"):
        AttentionFunction("m", "f", layout="BHSD")


def test_argument_reads_keyword_then_position():
    arg = Argument("num_heads", 3)
    assert arg.read((1, 2, 3, 4), {}) == 4
    assert arg.read((1, 2, 3), {"num_heads": 8}) == 8
    assert arg.read((1,), {}, default=None) is None


def test_a_fork_with_other_module_names_is_a_replaced_description():
    model = standin.WanModel().eval()
    want = _run(model)
    seen = Seen()
    with numina_hooks.attach(model, seen, description=STANDIN) as handle:
        assert type(handle.adapter) is GenericAdapter
        got = _run(model)
    assert torch.equal(got, want) and len(seen.views) == 4
    assert all(v.context.branch is None for v in seen.views)  # nothing said which branch


def test_no_matching_module_is_a_clear_error():
    wrong = dataclasses.replace(STANDIN, sites=(SitePattern("self", r"layers\.(\d+)\.attn"),))
    with pytest.raises(TypeError, match=r"no attention module of WanModel matches \['layers"):
        numina_hooks.attach(standin.WanModel(), Seen(), description=wrong)


def test_missing_framework_module_is_a_clear_error():
    wrong = dataclasses.replace(STANDIN, attention=dataclasses.replace(STANDIN.attention, module="not_installed_xyz"))
    model = standin.WanModel()
    with pytest.raises(ImportError, match="cannot import 'not_installed_xyz'"):
        numina_hooks.attach(model, Seen(), description=wrong)
    assert all(not m._forward_pre_hooks for m in model.modules())  # a failed attach leaves nothing


def test_state_is_by_name_so_a_deep_copy_of_a_block_is_still_its_site():
    model = standin.WanModel().eval()
    seen = Seen()
    with numina_hooks.attach(model, seen, description=STANDIN):
        import copy

        model.blocks[1] = copy.deepcopy(model.blocks[1])  # what DiffSynth's VRAM management does per call
        _run(model)
    assert sorted((v.site.name, v.kind) for v in seen.views) == [
        ("blocks.0.cross_attn", "cross"), ("blocks.0.self_attn", "self"),
        ("blocks.1.cross_attn", "cross"), ("blocks.1.self_attn", "self")]


def test_untapped_site_warns_once():
    model = standin.WanModel().eval()

    def direct(self, x, context, context_lens):  # a cross-attention that bypasses flash_attention
        return x

    for block in model.blocks:
        block.cross_attn.forward = direct.__get__(block.cross_attn)
    with numina_hooks.attach(model, Seen(), description=STANDIN):
        with pytest.warns(RuntimeWarning, match="does not call an attention function"):
            _run(model)


def test_descriptions_name_their_layouts():
    assert DIFFSYNTH_WAN.attention.layout == "BS(HD)" and DIFFSYNTH_WAN.attention.heads.name == "num_heads"
    assert OFFICIAL_WAN.attention.layout == "BLHD" and OFFICIAL_WAN.attention.scale.name == "softmax_scale"
