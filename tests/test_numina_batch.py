"""NUMINA on a batch of videos: one layout, count, plan and report per video.

Each batched video is checked against NUMINA on that video alone (same noise, given as
``latents``): the same layout is read and the same decision taken; the videos agree to
batching round-off (the batched matmuls differ in the last bits).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import numina_hooks
from numina_hooks import testing
from numina_hooks.numina import generate as generate_mod

STEPS = 5
MISMATCH = {"cats": 4, "dogs": 3}


def _wan():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(testing.WAN_CALL, num_inference_steps=STEPS, output_type="latent"), (16, 3, 8, 8)


def _cogvideox():
    pipe = testing.tiny_cogvideox_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(testing.COGVIDEOX_CALL, num_inference_steps=STEPS, output_type="latent"), (3, 4, 8, 8)


def _latents(shape, rows, seed=1):
    return torch.randn((rows,) + shape, generator=torch.Generator().manual_seed(seed))


def _same_decision(batched, single):
    assert batched.prompt == single.prompt and batched.counts_asked == single.counts_asked
    assert batched.counts_found == single.counts_found
    for noun in single.cross_maps:
        np.testing.assert_allclose(batched.cross_maps[noun], single.cross_maps[noun], atol=1e-5)
    assert batched.phase2_ran == single.phase2_ran and batched.guided_steps == single.guided_steps
    for noun in single.layouts_after:
        assert (batched.layouts_after[noun] == single.layouts_after[noun]).all()


def test_a_string_prompt_with_two_row_latents_gives_one_report_per_video():
    pipe, call, shape = _wan()
    latents = _latents(shape, 2)
    with numina_hooks.attach(pipe) as numina:
        out = numina(prompt="three cats chasing two dogs", latents=latents, counts=MISMATCH, **call)
        singles = [numina(prompt="three cats chasing two dogs", latents=latents[i : i + 1], counts=MISMATCH, **call)
                   for i in range(2)]
    assert isinstance(out.numina, list) and len(out.numina) == 2
    # each video read its own row (the counts may coincide; the maps of different noise do not)
    assert not np.array_equal(out.numina[0].cross_maps["cats"], out.numina[1].cross_maps["cats"])
    for i, single in enumerate(singles):
        assert single.numina.phase2_ran
        _same_decision(out.numina[i], single.numina)
        torch.testing.assert_close(out.frames[i : i + 1], single.frames, atol=1e-4, rtol=1e-4)


def test_a_prompt_list_with_per_prompt_counts_on_batched_cfg():
    # CogVideoX runs both branches in one call: rows [uncond0, uncond1, cond0, cond1]
    pipe, call, shape = _cogvideox()
    prompts = ["three cats chasing two dogs", "two birds on a branch"]
    counts = [MISMATCH, None]  # None: parsed from the prompt
    latents = _latents(shape, 2)
    with numina_hooks.attach(pipe) as numina:
        out = numina(prompt=prompts, latents=latents, counts=counts, **call)
        singles = [numina(prompt=p, latents=latents[i : i + 1], counts=c, **call)
                   for i, (p, c) in enumerate(zip(prompts, counts))]
    assert [r.counts_asked for r in out.numina] == [MISMATCH, {"birds": 2}]
    for i, single in enumerate(singles):
        _same_decision(out.numina[i], single.numina)
        torch.testing.assert_close(out.frames[i : i + 1], single.frames, atol=1e-4, rtol=1e-4)


def test_only_the_videos_that_need_it_are_guided(monkeypatch):
    pipe, call, shape = _wan()
    prompts = ["three cats", "two dogs"]
    latents = _latents(shape, 2)
    plain = pipe(prompt=prompts, latents=latents, **call).frames
    # the cats video reads as matching, the dogs video as not
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: self.done and "cats" in counts)
    with numina_hooks.attach(pipe) as numina:
        out = numina(prompt=prompts, latents=latents, **call)
    cats, dogs = out.numina
    assert not cats.phase2_ran and cats.guided_steps == [] and "regenerated unguided" in cats.reason
    assert dogs.phase2_ran and dogs.guided_steps
    torch.testing.assert_close(out.frames[0], plain[0], atol=1e-5, rtol=1e-5)  # unguided: the plain video
    assert (out.frames[1] - plain[1]).abs().max() > 1e-3  # guided


def test_when_every_video_matches_phase_one_is_the_result(monkeypatch):
    pipe, call, _ = _wan()
    plain = pipe(prompt="three cats chasing two dogs", num_videos_per_prompt=2,
                 generator=torch.Generator().manual_seed(0), **call).frames
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: self.done)
    with numina_hooks.attach(pipe) as numina:
        out = numina(prompt="three cats chasing two dogs", num_videos_per_prompt=2,
                     generator=torch.Generator().manual_seed(0), **call)
    assert torch.equal(out.frames, plain)
    assert [r.phase2_ran for r in out.numina] == [False, False]
    assert out.numina[0].model_calls["phase1"] == 2 * STEPS and "phase2" not in out.numina[0].model_calls


def test_batch_input_errors_are_clear():
    pipe, call, _ = _wan()
    with numina_hooks.attach(pipe) as numina:
        with pytest.raises(ValueError, match=r"counts=.*a list of 2 such dicts"):
            numina(prompt=["three cats", "two dogs"], counts=[{"cats": 3}], **call)
        with pytest.raises(ValueError, match=r"prompt=\[\]: expected a string or a non-empty list of strings"):
            numina(prompt=[], **call)
        with pytest.raises(ValueError, match=r"num_videos_per_prompt=0: expected an int >= 1"):
            numina(prompt="three cats", num_videos_per_prompt=0, **call)
        out = numina(prompt=["fog over hills", "rain on a lake"], generator=torch.Generator().manual_seed(0), **call)
    assert [r.reason.startswith("nothing to count") for r in out.numina] == [True, True]
