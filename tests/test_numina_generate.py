"""The two-phase NUMINA generation on tiny random-weight Wan and CogVideoX pipelines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl, testing
from numina_hooks.numina import generate as generate_mod
from numina_hooks.numina.config import NuminaConfig

PROMPT = "three cats chasing two dogs in a park"
STEPS = 5


def _call(case):
    base = testing.WAN_CALL if case == "wan" else testing.COGVIDEOX_CALL
    return dict(base, num_inference_steps=STEPS, output_type="latent")


@pytest.fixture(scope="module", params=["wan", "cogvideox"])
def setup(request):
    case = request.param
    pipe = testing.tiny_wan_pipeline() if case == "wan" else testing.tiny_cogvideox_pipeline()
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames
    return case, pipe, plain


def _numina(pipe, case, config=None, **kw):
    handle = numina_hooks.attach(pipe, config=config or NuminaConfig())
    try:
        out = handle(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **dict(_call(case), **kw))
    finally:
        handle.detach()
    return out


def test_report_and_mismatch_runs_phase_two(setup):
    case, pipe, plain = setup
    out = _numina(pipe, case, counts={"cats": 3, "dogs": 2})
    rep = out.numina
    assert rep.counts_asked == {"cats": 3, "dogs": 2}
    geo_frames = rep.layouts_before["cats"].shape[0]
    assert set(rep.counts_found) == {"cats", "dogs"}
    assert all(len(v) == geo_frames for v in rep.counts_found.values())
    ref = rep.reference_step
    assert ref == NuminaConfig().resolve_step(STEPS)
    if rep.phase2_ran:
        # phase 1 stopped right after the cond forward of the reference step
        per_step = 2 if case == "wan" else 1
        assert rep.model_calls["phase1"] == per_step * ref + 1
        assert rep.model_calls["phase2"] == per_step * STEPS
        for noun, asked in rep.counts_asked.items():
            assert all(int(f.max()) == asked for f in rep.layouts_after[noun])
        assert rep.guided_steps and rep.guided_steps[0] == 0
    assert set(rep.timings) >= {"phase1", "identify", "total"}


def test_match_case_is_the_plain_result_without_a_second_pass(setup, monkeypatch):
    case, pipe, plain = setup
    # make the layout match whatever is asked: every frame reads as the asked count
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: self.done)
    out = _numina(pipe, case, counts={"cats": 3, "dogs": 2})
    assert torch.equal(out.frames, plain)
    assert out.numina.phase2_ran is False
    per_step = 2 if case == "wan" else 1
    assert out.numina.model_calls["phase1"] == per_step * STEPS


def test_phase_two_reuses_the_callers_noise(setup, monkeypatch):
    case, pipe, plain = setup
    # force a mismatch but no edit: phase 2 then must reproduce the plain video exactly
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: False)
    real_refine = generate_mod.refine_layouts

    def no_edit(layouts, target, config, attention=None):
        frames = real_refine(layouts, target, config, attention)
        return [dataclasses.replace(f, labels_after=f.labels_before, removed=[], added=[]) for f in frames]

    monkeypatch.setattr(generate_mod, "refine_layouts", no_edit)
    # suppress_outside would still suppress the nouns outside the (unchanged) layout
    out = _numina(pipe, case, NuminaConfig(suppress_outside=False), counts={"cats": 3, "dogs": 2})
    assert out.numina.phase2_ran
    assert torch.equal(out.frames, plain)


def test_sparse_and_dense_guidance_give_the_same_video(setup):
    case, pipe, plain = setup
    counts = {"cats": 4, "dogs": 3}
    sparse = _numina(pipe, case, NuminaConfig(guidance="sparse"), counts=counts)
    dense = _numina(pipe, case, NuminaConfig(guidance="dense"), counts=counts)
    assert sparse.numina.phase2_ran and dense.numina.phase2_ran
    torch.testing.assert_close(sparse.frames, dense.frames, atol=1e-4, rtol=1e-4)
    assert not torch.equal(sparse.frames, plain)  # guidance changed the video


def test_guidance_touches_only_cond_rows_and_noun_columns(setup, monkeypatch):
    case, pipe, _ = setup
    seen = []
    real = generate_mod.LayoutGuidance.on_attention

    def spying(self, view):
        out = real(self, view)
        if out is not None:
            plain = torch.softmax(view.q.float() @ view.k.float().transpose(-1, -2) * view.scale, -1) @ view.v.float()
            changed = (out.float() - plain).abs().amax(dim=(1, 3)) > 1e-5  # [batch, query]
            edits = self.edits_for(view)
            allowed = torch.zeros_like(changed)
            for e in edits:
                allowed[e.batch, e.rows] = True
                assert set(e.columns.tolist()) <= set(
                    c + view.text_keys.start for cols in out_columns.values() for c in cols
                )
            assert not (changed & ~allowed).any(), "guidance changed rows outside the plan"
            assert {e.batch for e in edits} <= set(view.rows_of("cond"))
            seen.append(view.step)
        return out

    out_columns = {}
    real_plan = generate_mod.plan_from_refinement

    def capture(refined, columns, grid, **options):
        out_columns.update(columns)
        return real_plan(refined, columns, grid, **options)

    monkeypatch.setattr(generate_mod.LayoutGuidance, "on_attention", hookimpl(spying))
    monkeypatch.setattr(generate_mod, "plan_from_refinement", capture)
    out = _numina(pipe, case, counts={"cats": 4, "dogs": 3})
    assert out.numina.phase2_ran and seen
    # the default reads and guides each noun's whole counted phrase ("three cats")
    read = out.numina.token_columns
    for noun in ("cats", "dogs"):
        assert set(read[noun]) == set(out_columns[noun]) and len(read[noun]) >= 2
    assert not set(out_columns["cats"]) & set(out_columns["dogs"])


def test_bad_counts_are_clear_errors(setup):
    case, pipe, plain = setup
    with pytest.raises(ValueError, match="'horses' is not in the prompt.*tokenizes to"):
        _numina(pipe, case, counts={"horses": 2})
    with pytest.raises(ValueError, match=r"counts\['cats'\]=0: expected an int >= 1"):
        _numina(pipe, case, counts={"cats": 0})
    with pytest.raises(ValueError, match=r"counts\['cats'\]=2.5"):
        _numina(pipe, case, counts={"cats": 2.5})
    assert torch.equal(pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames, plain)


def test_prompt_embeds_without_the_prompt_is_a_clear_error(setup):
    # NUMINA reads counts and noun tokens from the text: embeddings alone are refused with
    # what to pass instead, and the pipeline is left as it was
    case, pipe, plain = setup
    handle = numina_hooks.attach(pipe, config=NuminaConfig())
    try:
        with pytest.raises(TypeError, match="needs prompt=... even with prompt_embeds"):
            handle(prompt_embeds=torch.zeros(1, 4, 8), **_call(case))
        with pytest.raises(TypeError, match="NUMINA needs prompt="):
            handle(**_call(case))
    finally:
        handle.detach()
    assert torch.equal(pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames, plain)


def test_nothing_to_count_returns_the_plain_result(setup):
    case, pipe, _ = setup
    handle = numina_hooks.attach(pipe)
    try:
        out = handle(prompt="fog rolling over hills", generator=torch.Generator().manual_seed(0), **_call(case))
    finally:
        handle.detach()
    plain = pipe(prompt="fog rolling over hills", generator=torch.Generator().manual_seed(0), **_call(case)).frames
    assert torch.equal(out.frames, plain)
    assert out.numina.phase2_ran is False and "nothing to count" in out.numina.reason


def test_exception_during_generation_leaves_pipeline_as_it_was(setup, monkeypatch):
    case, pipe, plain = setup

    def boom(self, view):
        raise RuntimeError("boom in phase 2")

    monkeypatch.setattr(generate_mod.LayoutGuidance, "on_attention", hookimpl(boom))
    handle = numina_hooks.attach(pipe)
    with pytest.raises(RuntimeError, match="boom in phase 2"):
        handle(prompt=PROMPT, counts={"cats": 4, "dogs": 3}, generator=torch.Generator().manual_seed(0), **_call(case))
    assert handle.plugins == [handle.strategy]  # the phase plugins were removed; NUMINA stays
    handle.detach()
    assert torch.equal(pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames, plain)


def test_report_save_writes_pictures_and_summary(setup, tmp_path):
    case, pipe, _ = setup
    out = _numina(pipe, case, counts={"cats": 4, "dogs": 3})
    folder = out.numina.save(tmp_path / "report")
    import json

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["counts_asked"] == {"cats": 4, "dogs": 3}
    frames = out.numina.layouts_before["cats"].shape[0]
    assert sorted(p.name for p in folder.glob("frame_*.png")) == [f"frame_{f:02d}.png" for f in range(frames)]
    # each noun's own chosen head, block and fallback, frame by frame, and its head's picture
    for field in ("self_heads", "self_layers", "from_cross"):
        assert set(summary[field]) == {"cats", "dogs"} and all(len(v) == frames for v in summary[field].values())
    assert {noun: p.shape for noun, p in out.numina.pca_images.items()} == {
        noun: (*out.numina.layouts_before[noun].shape, 3) for noun in ("cats", "dogs")}


def test_return_dict_false_keeps_the_tuple_and_adds_the_report(setup):
    case, pipe, _ = setup
    out = _numina(pipe, case, counts={"cats": 4, "dogs": 3}, return_dict=False)
    assert isinstance(out, tuple) and out.numina.counts_asked == {"cats": 4, "dogs": 3}


def test_reading_the_layout_is_deterministic_and_leaves_the_generator_alone(setup):
    case, pipe, plain = setup
    with numina_hooks.attach(pipe) as handle:
        gen = torch.Generator().manual_seed(0)
        reports = [handle.read_layout(prompt=PROMPT, counts={"cats": 3, "dogs": 2}, generator=gen, **_call(case))
                   for _ in range(2)]
        after = handle.run_pipeline(prompt=PROMPT, generator=gen, **_call(case)).frames
    a, b = reports
    assert a.counts_found == b.counts_found and a.self_heads == b.self_heads
    for noun in a.layouts_before:
        np.testing.assert_array_equal(a.layouts_before[noun], b.layouts_before[noun])
    assert torch.equal(after, plain)  # the generator was restored after each reading


def test_read_tokens_phrase_reads_the_whole_counted_phrase(setup):
    case, pipe, _ = setup
    noun = _numina(pipe, case, config=NuminaConfig(read_tokens="noun"), counts={"cats": 3, "dogs": 2}).numina
    phrase = _numina(pipe, case, counts={"cats": 3, "dogs": 2}).numina  # the default
    for n in ("cats", "dogs"):
        # "three cats": the count word's column comes before the noun's and joins it
        assert set(noun.token_columns[n]) < set(phrase.token_columns[n])
        assert min(phrase.token_columns[n]) < min(noun.token_columns[n])
    with pytest.raises(ValueError, match="read_tokens='nouns'.*one of"):
        NuminaConfig(read_tokens="nouns")
