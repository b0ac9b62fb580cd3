"""Calibrated guidance strength: the "share" edit reaches its target, the modes mean what
they say, and the paper's absolute preset is the previous computation bit for bit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from numina_hooks.attention import ColumnEdit, guided_attention, pre_softmax_scores, pre_softmax_spread
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.guidance import CopyGroup, GuidancePlan, LayoutGuidance, NounPlan

NOUN = [2, 5]  # the noun's key columns in the hand-built rows


def _rows(h=3, lq=16, lk=10, d=8, seed=0, dtype=torch.float64, noun_shift=-3.0):
    """q, k and a value tensor whose output channels read softmax shares back.

    Channel 0 of ``v`` is 1 on the noun's columns, channel 1 on column 7, channel 2 on
    columns 1 and 8: the attention output on those channels *is* the share of those columns.
    The queries of a head share one direction and the noun's keys point away from it by
    ``noun_shift`` (in score units), so that the noun's share starts low on every row.
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, h, 1, d, generator=g, dtype=dtype)
    q = base + 0.3 * torch.randn(1, h, lq, d, generator=g, dtype=dtype)
    k = torch.randn(1, h, lk, d, generator=g, dtype=dtype)
    k[:, :, NOUN] += noun_shift * d ** 0.5 * base / base.norm(dim=-1, keepdim=True) ** 2
    v = torch.zeros(1, h, lk, 3, dtype=dtype)
    v[:, :, NOUN, 0] = 1
    v[:, :, 7, 1] = 1
    v[:, :, [1, 8], 2] = 1
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_share_edit_brings_the_noun_to_its_target_share(method, dtype):
    q, k, v = _rows(dtype=dtype)
    rows = torch.arange(0, 16, 2)
    before = guided_attention(q, k, v, [])[0, :, rows, 0]
    target = torch.tensor([0.3, 0.5, 0.7], dtype=dtype)  # per head
    target[0] = before[0].median()  # head 0: half its rows are already above the target
    assert (before < target[:, None]).float().mean() > 0.5  # most rows must actually move
    out = guided_attention(q, k, v, [ColumnEdit(0, rows, NOUN, "share", target)], method=method)
    after = out[0, :, rows, 0]
    # at least the target, and exactly it wherever the row started below it
    expected = torch.maximum(before, target[:, None])
    torch.testing.assert_close(after, expected, atol=1e-4 if dtype == torch.float32 else 1e-9, rtol=0)
    # rows without the edit are untouched (bit for bit on the sparse path)
    other = torch.arange(1, 16, 2)
    plain = guided_attention(q, k, v, [])[0, :, other]
    assert torch.equal(out[0, :, other], plain) if method == "sparse" else torch.allclose(out[0, :, other], plain)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_share_is_exact_after_the_other_edits_of_the_row_and_jointly_for_two_nouns(method):
    q, k, v = _rows()
    rows = torch.arange(16)
    first = [
        ColumnEdit(0, rows, [7], "suppress"),  # another noun removed from the same rows
        ColumnEdit(0, rows, NOUN, "share", 0.4),
    ]
    alone = guided_attention(q, k, v, first, method=method)[0]
    both = guided_attention(q, k, v, first + [ColumnEdit(0, rows, [1, 8], "share", 0.25)], method=method)[0]
    for out in (alone, both):
        assert out[..., 1].abs().max() < 1e-12  # the suppressed column holds nothing
        torch.testing.assert_close(out[..., 0], torch.full_like(out[..., 0], 0.4), atol=1e-9, rtol=0)
    # the third noun: raised to 0.25 where it sat below, left where it was above, and the
    # first noun still holds exactly 0.4 (the two are solved together)
    assert (alone[..., 2] < 0.25).any() and (alone[..., 2] > 0.25).any()
    torch.testing.assert_close(both[..., 2], alone[..., 2].clamp_min(0.25), atol=1e-9, rtol=0)


def test_sparse_share_matches_the_dense_reference_in_bfloat16():
    q, k, v = (t.to(torch.bfloat16) for t in _rows())
    e = [ColumnEdit(0, torch.arange(3, 14), NOUN, "share", 0.6)]
    sparse = guided_attention(q, k, v, e).float()
    dense = guided_attention(q, k, v, e, method="dense").float()
    assert (sparse - dense).abs().max() < 2e-2
    assert (sparse[0, :, 3:14, 0] - 0.6).abs().max() < 2e-2


def test_share_values_are_checked():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ColumnEdit(0, [1], NOUN, "share", 1.0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ColumnEdit(0, [1], NOUN, "share", 0.0)
    q, k, v = _rows()
    with pytest.raises(ValueError, match=r"holds \[1\.5\]"):
        guided_attention(q, k, v, [ColumnEdit(0, [1], NOUN, "share", torch.tensor([0.2, 1.5, 0.3]))])
    with pytest.raises(ValueError, match="varies per column"):
        guided_attention(q, k, v, [ColumnEdit(0, [1], NOUN, "share", torch.full((3, 1, 2), 0.3))])
    clash = [ColumnEdit(0, [1, 2], NOUN, "share", 0.6), ColumnEdit(0, [2], [7], "share", 0.5)]
    with pytest.raises(ValueError, match="row 2 ask for shares summing to 1.1"):
        guided_attention(q, k, v, clash)


def test_pre_softmax_spread_is_the_std_of_each_rows_scores():
    q, k, _ = _rows(dtype=torch.float32)
    rows = torch.tensor([0, 3, 9])
    s = (q[0][:, rows] @ k[0].transpose(-1, -2)) * 0.7
    torch.testing.assert_close(pre_softmax_spread(q, k, rows, 0, scale=0.7), s.std(-1, unbiased=False))


# ---- the modes in LayoutGuidance ----------------------------------------------------------


def _view(step, seed=1):
    q, k, v = _rows(lq=32, lk=10, seed=seed, dtype=torch.float32)
    q = torch.cat([torch.randn_like(q), q])  # batch row 0 = uncond, 1 = cond
    k, v = torch.cat([k, k]), torch.cat([v, v])
    return SimpleNamespace(
        kind="cross", step=step, q=q, k=k, v=v, scale=None, video_queries=slice(0, 32), text_keys=slice(0, 10),
        rows_of=lambda branch: [1] if branch == "cond" else [0],
    )


def _plan(copies=()):
    return GuidancePlan(nouns={"cats": NounPlan(
        columns=torch.tensor(NOUN), suppress_rows=torch.tensor([10, 11]),
        boost_rows=torch.arange(12, 20), copies=list(copies))}, frame_tokens=16)


@pytest.mark.parametrize("step", [0, 3])
def test_mass_mode_gives_the_noun_its_share_times_delta(step):
    cfg = NuminaConfig(boost_mode="mass", boost_mass=0.6)
    view = _view(step)
    out = LayoutGuidance(_plan(), cfg, num_steps=10).on_attention(view)
    share = out[1, :, 12:20, 0]
    plain = guided_attention(view.q, view.k, view.v, [])[1, :, 12:20, 0]
    target = 0.6 * cfg.delta(step, 10)
    assert plain.max() < target  # the boost has work to do on every row
    torch.testing.assert_close(share, torch.full_like(share, target), atol=1e-4, rtol=0)
    assert out[1, :, 10:12, 0].abs().max() < 1e-6  # suppression unchanged


def test_logit_spread_mode_adds_spread_times_delta():
    cfg = NuminaConfig(boost_mode="logit_spread", boost_spread=1.5)
    view = _view(2)
    (edit,) = [e for e in LayoutGuidance(_plan(), cfg, num_steps=10).edits_for(view) if e.mode == "boost"]
    s = view.q[1][:, 12:20] @ view.k[1].transpose(-1, -2) / view.q.shape[-1] ** 0.5
    torch.testing.assert_close(edit.value, 1.5 * cfg.delta(2, 10) * s.std(-1, unbiased=False))


def test_calibrated_modes_mean_the_same_on_a_sharper_model():
    """Scaling every score by 3 (a sharper model) changes what boost_bias does, not what the modes do."""
    results = {}
    for mode, fields in {"absolute": {"boost_bias": 0.8}, "mass": {"boost_mass": 0.5},
                         "logit_spread": {"boost_spread": 1.0}}.items():
        cfg = NuminaConfig(boost_mode=mode, **fields)
        shares = []
        for sharpness in (1.0, 3.0):
            view = _view(0)
            view.q = view.q * sharpness
            plain = guided_attention(view.q, view.k, view.v, [])[1, :, 12:20, 0]
            out = LayoutGuidance(_plan(), cfg, num_steps=10).on_attention(view)[1, :, 12:20, 0]
            # the boost, read as the change of the noun's log-odds in units of the row's spread
            spread = pre_softmax_spread(view.q, view.k, torch.arange(12, 20), 1)
            shares.append((out, (torch.logit(out) - torch.logit(plain)) / spread))
        results[mode] = shares
    # mass: the same share on both models; logit_spread: the same lift in spread units
    torch.testing.assert_close(results["mass"][0][0], results["mass"][1][0], atol=1e-4, rtol=0)
    torch.testing.assert_close(results["logit_spread"][0][1], results["logit_spread"][1][1], atol=1e-3, rtol=1e-3)
    # absolute: the same bias is a third as strong in spread units on the sharper model
    ratio = results["absolute"][1][1] / results["absolute"][0][1]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / 3), atol=1e-3, rtol=1e-3)


def test_absolute_preset_is_the_previous_computation_bit_for_bit():
    """boost_mode='absolute' builds the edits the guidance built before calibrated modes existed."""
    copies = [CopyGroup(rows=torch.tensor([24, 25]), reference_rows=torch.tensor([1, 2, 3]))]
    for step in (0, 2, 4):
        cfg = NuminaConfig(boost_mode="absolute", boost_bias=0.8)
        view = _view(step)
        out = LayoutGuidance(_plan(copies), cfg, num_steps=10).on_attention(view)
        delta = cfg.delta(step, 10)
        ref = pre_softmax_scores(view.q, view.k, [1, 2, 3], NOUN, 1)
        previous = [
            ColumnEdit(1, [10, 11], NOUN, "suppress"),
            ColumnEdit(1, list(range(12, 20)), NOUN, "boost", 0.8 * delta),
            ColumnEdit(1, [24, 25], NOUN, "set", ref.mean(dim=(1, 2)) * delta),
        ]
        assert torch.equal(out, guided_attention(view.q, view.k, view.v, previous))


@pytest.mark.parametrize("field, value, expected", [
    ("boost_mode", "share", "one of ('mass', 'logit_spread', 'absolute')"),
    ("boost_mass", 0.0, "strictly between 0 and 1"),
    ("boost_mass", 1.0, "strictly between 0 and 1"),
    ("boost_mass", float("nan"), "strictly between 0 and 1"),
    ("boost_mass", "0.5", "strictly between 0 and 1"),
    ("boost_spread", -1.0, ">= 0"),
    ("boost_spread", float("inf"), ">= 0"),
])
def test_guidance_strength_fields_are_validated(field, value, expected):
    with pytest.raises(ValueError, match=f"NuminaConfig.{field}=.*{expected.replace('(', '.').replace(')', '.')}"):
        NuminaConfig(**{field: value})


def test_mass_mode_splits_the_target_where_two_nouns_are_added_on_the_same_rows():
    """Overlapping additions of two nouns share boost_mass * delta instead of asking for 2x."""
    cfg = NuminaConfig(boost_mode="mass", boost_mass=0.8)
    plan = GuidancePlan(nouns={
        "cats": NounPlan(columns=torch.tensor(NOUN), suppress_rows=torch.zeros(0, dtype=torch.long),
                         boost_rows=torch.arange(12, 20)),
        "dogs": NounPlan(columns=torch.tensor([1, 8]), suppress_rows=torch.zeros(0, dtype=torch.long),
                         boost_rows=torch.arange(16, 24)),
    }, frame_tokens=16)
    view = _view(0)
    out = LayoutGuidance(plan, cfg, num_steps=10).on_attention(view)[1]  # 0.8 + 0.8 alone would be refused
    torch.testing.assert_close(out[:, 16:20, 0], torch.full_like(out[:, 16:20, 0], 0.4), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 16:20, 2], torch.full_like(out[:, 16:20, 2], 0.4), atol=1e-4, rtol=0)
    # rows where only one noun is added keep the whole target
    torch.testing.assert_close(out[:, 12:16, 0], torch.full_like(out[:, 12:16, 0], 0.8), atol=1e-4, rtol=0)
    assert (out[:, 20:24, 2] >= 0.8 - 1e-4).all()
