"""The official Wan description and the WanT2V driver, on a stand-in (official_wan_standin.py).

The official repositories cannot be installed here (``import wan`` needs CUDA), so the
description is exercised through the same generic adapter on a module tree with the same
names, signatures and attention-function layout; the tests at the end run only where
``wan`` is importable and report themselves skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl
from numina_hooks.testing import ViewRecorder as Recorder
from numina_hooks.adapters.descriptions import OFFICIAL_WAN
from numina_hooks.adapters.official_wan import OfficialWanAdapter
from numina_hooks.testing import tiny_tokenizer

from adapter_cases import Driven, _official

standin, STANDIN = _official()  # the description pointing at the stand-in (shared with the contract suite)
CALL = dict(size=(64, 64), frame_num=9, sampling_steps=4, guide_scale=3.0, seed=0,
            make_scheduler=standin.euler_scheduler)
PROMPT = "three cats chasing two dogs"


@pytest.fixture(scope="module")
def t2v():
    return standin.WanT2V(tiny_tokenizer())


@pytest.fixture(scope="module")
def plain(t2v):
    with numina_hooks.attach(t2v, Driven(), description=STANDIN) as handle:  # the driver, no plugin acting
        return handle(prompt=PROMPT, **CALL)


def _hooks_state(model):
    return [(n, len(m._forward_pre_hooks), len(m._forward_hooks), "forward" in vars(m)) for n, m in model.named_modules()]


def test_the_registered_adapter_drives_a_standin_t2v(t2v):
    with numina_hooks.attach(t2v, Recorder(), description=STANDIN) as handle:
        assert isinstance(handle.adapter, OfficialWanAdapter)
        assert [n for n, _ in handle.adapter.transformers()] == ["model"]
        assert [(s.layer, s.kind, s.name) for s, _ in handle.adapter.sites("model", t2v.model)][:2] == [
            (0, "self", "blocks.0.self_attn"), (0, "cross", "blocks.0.cross_attn")]


def test_driver_names_branch_and_step_of_every_call(t2v, plain):
    rec = Recorder()
    before = _hooks_state(t2v.model)
    with numina_hooks.attach(t2v, rec, description=STANDIN) as handle:
        out = handle(prompt=PROMPT, **CALL)
    assert _hooks_state(t2v.model) == before  # detached: no hook, no forward attribute left
    assert torch.equal(out, plain)
    assert out.shape == (3, 9, 64, 64)
    for step in range(4):
        for branch in ("cond", "uncond"):
            rows = sorted((c[1], c[2]) for c in rec.calls if c[3] == step and c[4] == branch)
            assert rows == [(0, "cross"), (0, "self"), (1, "cross"), (1, "self")]
    geo = rec.calls[0][-1]
    assert (geo.frames, geo.height, geo.width, geo.text_tokens) == (3, 4, 4, 512)



def test_two_experts_switch_at_the_boundary():
    t2v = standin.WanT2V(tiny_tokenizer(), two_experts=True)
    rec = Recorder()
    with numina_hooks.attach(t2v, rec, description=STANDIN) as handle:
        assert [n for n, _ in handle.adapter.transformers()] == ["high_noise_model", "low_noise_model"]
        handle(prompt=PROMPT, **CALL)
    by_step = {c[3]: c[0] for c in rec.calls}
    _, timesteps = standin.euler_scheduler(t2v, "unipc", 4, 5.0)
    want = ["high_noise_model" if float(t) >= 875 else "low_noise_model" for t in timesteps]
    assert "high_noise_model" in want and "low_noise_model" in want  # the test spans the switch
    assert [by_step[s] for s in range(4)] == want


def test_stop_request_ends_the_loop(t2v):
    class StopAt1:
        def __init__(self):
            self.steps = []

        @hookimpl
        def on_step(self, state):
            self.steps.append(state.step)
            if state.step == 1:
                state.request_stop("enough")

    stop, rec = StopAt1(), Recorder()
    with numina_hooks.attach(t2v, stop, rec, description=STANDIN) as handle:
        handle(prompt=PROMPT, **CALL)
    assert stop.steps == [0, 1] and {c[3] for c in rec.calls} == {0, 1}


def test_bare_model_with_handle_context(t2v):
    model = t2v.model
    x = [torch.randn(16, 3, 8, 8)]
    context = [torch.randn(7, 32)]
    t = torch.tensor([500.0])
    want = model(x, t=t, context=context, seq_len=48)[0]
    rec = Recorder()
    with numina_hooks.attach(model, rec, description=STANDIN) as handle:
        with handle.context(branch="uncond", step=2, num_steps=4):
            got = model(x, t=t, context=context, seq_len=48)[0]
    assert torch.equal(got, want) and "forward" not in vars(model)
    assert {(c[0], c[3], c[4]) for c in rec.calls} == {("model", 2, "uncond")}
    assert rec.calls[0][-1].text_tokens == 512  # the model pads the 7-token context to text_len


def test_numina_two_phases_with_the_t2v_components(t2v, plain):
    numina = numina_hooks.attach(t2v, description=STANDIN)  # no plugin: NUMINA
    try:
        out = numina(prompt=PROMPT, counts={"cats": 3, "dogs": 2}, **CALL)
    finally:
        numina.detach()
    report = out.numina
    assert report.phase2_ran and report.guided_steps
    assert report.model_calls["phase1"] < report.model_calls["phase2"] == 8
    assert report.layouts_before["cats"].shape == (3, 4, 4)
    assert not torch.equal(out, plain)


def test_generate_with_numina_wraps_attach_and_detach(t2v, monkeypatch):
    seen = {}
    real_attach = numina_hooks.attach

    def fake_attach(target, *plugins):
        handle = real_attach(target, *plugins, description=STANDIN)
        seen["handle"] = handle
        return handle

    monkeypatch.setattr(numina_hooks, "attach", fake_attach)
    out = numina_hooks.generate_with_numina(t2v, "two dogs", **dict(CALL, sampling_steps=2))
    assert out.numina.counts_asked == {"dogs": 2}
    assert not seen["handle"].attached


# ----------------------------------------------------------------------------- the real repository

_WAN = importlib.util.find_spec("wan") is not None and importlib.util.find_spec("wan.modules") is not None
real_wan = pytest.mark.skipif(not _WAN, reason="the official wan repository is not importable here (needs CUDA)")


@real_wan
def test_real_description_matches_the_real_model():
    from wan.modules.model import WanModel

    model = WanModel(model_type="t2v", dim=24, ffn_dim=48, freq_dim=16, num_heads=2, num_layers=2, text_dim=32)
    with numina_hooks.attach(model, Recorder()) as handle:
        assert isinstance(handle.adapter, OfficialWanAdapter)
        assert len(handle.adapter.sites("model", model)) == 4


@real_wan
def test_real_flash_attention_signature_is_the_described_one():
    import inspect

    from wan.modules import model as wan_model

    params = list(inspect.signature(wan_model.flash_attention).parameters)
    assert params[:3] == ["q", "k", "v"] and params[OFFICIAL_WAN.attention.scale.position] == "softmax_scale"


def test_counts_argument_of_the_patches():
    """The patches pass ``--numina_counts`` (default "") as ``parse_counts_arg(text or None)``."""
    from numina_hooks import parse_counts_arg

    assert parse_counts_arg("cats=3, dogs = 2") == {"cats": 3, "dogs": 2}
    assert parse_counts_arg("" or None) is None
    with pytest.raises(ValueError, match="noun=count"):
        parse_counts_arg("three cats")
    patches = Path(__file__).resolve().parent.parent / "patches"
    for patch in sorted(patches.glob("*.patch")):
        text = patch.read_text()
        assert "from numina_hooks import generate_with_numina, parse_counts_arg" in text, patch.name
        assert "parse_counts_arg(args.numina_counts or None)" in text, patch.name


