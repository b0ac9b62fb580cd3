"""numina-hooks on a real (tiny, random-weight) DiffSynth-Studio WanVideoPipeline.

The adapter contract suite runs on DiffSynth through tests/adapter_cases.py
(cases ``diffsynth-*``); this file covers what is DiffSynth's own: NUMINA's two
phases through the pipeline, a bare WanModel, VRAM management's per-call deep
copies, TeaCache skipping steps.
"""

from __future__ import annotations


import pytest
import torch

import numina_hooks
from numina_hooks import hookimpl
from numina_hooks.testing import ViewRecorder as Recorder
from numina_hooks.adapters.diffsynth_wan import DiffSynthWanAdapter

from tiny_diffsynth import CALL, tiny_pipeline

PROMPT = "three cats chasing two dogs"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def plain(pipe):
    return pipe(prompt=PROMPT, seed=0, **CALL)


def test_attach_picks_the_diffsynth_adapter(pipe):
    with numina_hooks.attach(pipe, Recorder()) as handle:
        assert isinstance(handle.adapter, DiffSynthWanAdapter)
        assert [name for name, _ in handle.adapter.transformers()] == ["dit"]
        assert pipe.model_fn.__numina_entry__
    assert "__numina_entry__" not in vars(pipe.model_fn)  # the pipeline's own function is back


def test_geometry_and_text_length(pipe):
    rec = Recorder()
    with numina_hooks.attach(pipe, rec):
        pipe(prompt=PROMPT, seed=0, **CALL)
    geo = rec.calls[0][-1]
    # 9 frames -> 3 latent frames; 64 px / 8 (VAE) / 2 (patch) = 4
    assert (geo.frames, geo.height, geo.width, geo.text_tokens) == (3, 4, 4, 512)


def test_numina_two_phases_through_the_pipeline(pipe, plain):
    numina = numina_hooks.attach(pipe)  # one line: NUMINA with the paper's defaults
    try:
        # the tiny random model shows no cats at all: phase 2 must run
        out = numina(prompt=PROMPT, seed=0, counts={"cats": 3, "dogs": 2}, **CALL)
    finally:
        numina.detach()
    report = out.numina
    assert report.token_columns["cats"] and report.token_columns["dogs"]
    assert report.num_steps == 4 and report.reference_transformer == "dit"
    assert set(report.layouts_before) == {"cats", "dogs"}
    assert report.layouts_before["cats"].shape == (3, 4, 4)  # frames x rows x columns of the layout
    assert report.phase2_ran, report.reason
    assert report.model_calls["phase1"] < report.model_calls["phase2"] == 8  # phase 1 stopped early
    assert report.guided_steps  # guidance acted in the cross-attention
    assert out.shape == plain.shape and not torch.equal(out, plain)
    assert torch.equal(pipe(prompt=PROMPT, seed=0, **CALL), plain)  # detached: exactly as before


def test_phase1_only_leaves_the_pipeline_exact(pipe, plain):
    with numina_hooks.attach(pipe) as numina:
        report = numina.read_layout(prompt=PROMPT, seed=0, **CALL)
        assert report.counts_found and report.reference_step is not None
        # plain calls while attached: bit-identical (NUMINA acts only through the handle)
        assert torch.equal(pipe(prompt=PROMPT, seed=0, **CALL), plain)


def test_noise_is_fixed_without_a_seed(pipe):
    driver = DiffSynthWanAdapter(pipe).driver()
    kwargs, rewind, seed = driver.fix_noise(dict(CALL))
    assert kwargs["seed"] == seed is not None
    kwargs2, _, seed2 = driver.fix_noise(dict(CALL, seed=5))
    assert kwargs2["seed"] == 5 and seed2 is None
    assert driver.with_seed(dict(CALL), 7)["seed"] == 7


def test_bare_dit_sees_layers_but_no_call_facts(plain):
    """Attached alone, the DiT's attention is viewed wherever it runs; but the pipeline calls it
    through model_fn_wan_video, not WanModel.forward (which is broken in diffsynth 2.1.12:
    patchify returns one value), so step, branch and geometry are unknown: attach the pipeline."""
    pipe = tiny_pipeline()

    class Kinds:
        def __init__(self):
            self.seen = []

        @hookimpl
        def on_attention(self, view):
            self.seen.append((view.layer, view.kind, view.context.step, view.context.geometry))

    kinds = Kinds()
    with numina_hooks.attach(pipe.dit, kinds):
        out = pipe(prompt=PROMPT, seed=0, **CALL)
    assert torch.equal(out, plain)
    assert {(layer, kind) for layer, kind, _, _ in kinds.seen} == {(0, "self"), (0, "cross"), (1, "self"), (1, "cross")}
    assert {(step, geo) for _, _, step, geo in kinds.seen} == {(None, None)}
    assert "forward" not in vars(pipe.dit)


def test_state_is_keyed_by_name_across_vram_deep_copies(monkeypatch):
    """VRAM management with a computation dtype other than the stored one deep-copies each
    DiTBlock per call: the copies carry our hooks, which know their site by name."""
    from diffsynth.core.vram.layers import AutoWrappedModule, enable_vram_management
    from diffsynth.models.wan_video_dit import DiTBlock

    pipe = tiny_pipeline()
    cpu = torch.device("cpu")
    config = dict(offload_dtype=torch.float64, offload_device=cpu, onload_dtype=torch.float64, onload_device=cpu,
                  preparing_dtype=torch.float64, preparing_device=cpu, computation_dtype=torch.float32,
                  computation_device=cpu)
    pipe.dit = enable_vram_management(pipe.dit, {DiTBlock: AutoWrappedModule}, config)
    plain = pipe(prompt=PROMPT, seed=0, **CALL)
    copies = []
    cast_to = AutoWrappedModule.cast_to

    def counting_cast_to(self, module, dtype, device):
        copies.append(module)
        return cast_to(self, module, dtype, device)

    monkeypatch.setattr(AutoWrappedModule, "cast_to", counting_cast_to)


    rec = Recorder()
    with numina_hooks.attach(pipe, rec):
        out = pipe(prompt=PROMPT, seed=0, **CALL)
    assert torch.equal(out, plain)
    assert len(copies) == 2 * 2 * 4  # every block was a fresh deep copy in every call
    sites = {(c[1], c[2]) for c in rec.calls}
    assert sites == {(0, "self"), (0, "cross"), (1, "self"), (1, "cross")}
    assert len(rec.calls) == 4 * 2 * 4  # layers x kinds, x branches x steps


def test_teacache_skipped_steps_run_no_attention():
    pipe = tiny_pipeline()
    rec = Recorder()
    with numina_hooks.attach(pipe, rec):
        pipe(prompt=PROMPT, seed=0, tea_cache_l1_thresh=1e9, tea_cache_model_id="Wan2.1-T2V-1.3B", **CALL)
    # TeaCache always computes the first and the last step, and skips the rest at this threshold
    assert {c[3] for c in rec.calls} == {0, 3}


@pytest.mark.parametrize("extra", [{}, {"cfg_merge": True}], ids=["separate-cfg", "cfg-merge"])
def test_easycache_on_diffsynth(pipe, extra):
    """EasyCache through the generic adapter: tau=0 is exact; a large tau skips steps, and
    DiffSynth's cfg_merge (latents repeated inside the model) caches the same way as two calls."""
    call = dict(CALL, num_inference_steps=10)
    plain = pipe(prompt=PROMPT, seed=0, **call, **extra)
    exact = numina_hooks.EasyCache(error_threshold=0.0)
    with numina_hooks.attach(pipe, exact):
        assert torch.equal(pipe(prompt=PROMPT, seed=0, **call, **extra), plain)
    cache = numina_hooks.EasyCache(error_threshold=100.0, warmup=2)
    with numina_hooks.attach(pipe, cache):
        cached = pipe(prompt=PROMPT, seed=0, **call, **extra)
    assert cache.stats.as_dict()["skipped_steps"] == 7  # steps 2..8: warm-up 2, the last step computes
    reference = numina_hooks.EasyCache(error_threshold=100.0, warmup=2)
    with numina_hooks.attach(pipe, reference):
        separate = pipe(prompt=PROMPT, seed=0, **call)
    torch.testing.assert_close(cached, separate, rtol=1e-4, atol=1e-5)
