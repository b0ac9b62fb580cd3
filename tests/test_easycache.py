"""EasyCache on tiny random-weight pipelines: what a user notices (speed, sameness, safety)."""

from __future__ import annotations

import pytest
import torch

import numina_hooks
from numina_hooks import EasyCache, testing
from numina_hooks.numina import generate as generate_mod
from numina_hooks.numina.config import NuminaConfig

from adapter_cases import ForwardLog as Recorder

PROMPT = "three cats chasing two dogs"
STEPS = 8


def _call(case, steps=STEPS):
    base = testing.COGVIDEOX_CALL if case == "cogvideox" else testing.WAN_CALL
    return dict(base, num_inference_steps=steps, output_type="latent")


def _pipe(case):
    if case == "cogvideox":
        pipe = testing.tiny_cogvideox_pipeline()
    elif case == "wan22-a14b":
        pipe = testing.tiny_wan_pipeline(two_transformers=True)
    else:
        pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, case, *plugins, steps=STEPS, seed=0):
    handle = numina_hooks.attach(pipe, *plugins)
    try:
        return pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(seed), **_call(case, steps)).frames
    finally:
        handle.detach()


def _count_model_runs(pipe):
    """Counts forwards that really reach the first transformer block."""
    runs = []
    blocks = pipe.transformer.transformer_blocks if hasattr(pipe.transformer, "transformer_blocks") else pipe.transformer.blocks
    hook = blocks[0].register_forward_pre_hook(lambda *a: runs.append(1))
    return runs, hook


@pytest.fixture(scope="module", params=["wan", "cogvideox"])
def case_pipe(request):
    pipe = _pipe(request.param)
    plain = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(request.param)).frames
    return request.param, pipe, plain


def test_threshold_zero_is_bit_identical_to_the_plain_pipeline(case_pipe):
    case, pipe, plain = case_pipe
    cache = EasyCache(error_threshold=0.0, warmup=0)
    out = _run(pipe, case, cache)
    assert torch.equal(out, plain)
    assert cache.stats.skipped_calls == 0


def test_skips_save_model_runs_and_grow_with_the_threshold(case_pipe):
    case, pipe, plain = case_pipe
    per_step = 2 if case == "wan" else 1
    skipped, errors = [], []
    for threshold in (0.0, 0.2, 1.0, 5.0):
        cache = EasyCache(error_threshold=threshold, warmup=1)
        runs, hook = _count_model_runs(pipe)
        try:
            out = _run(pipe, case, cache)
        finally:
            hook.remove()
        # the model really did not run on the skipped calls
        assert len(runs) == per_step * STEPS - cache.stats.skipped_calls
        skipped.append(cache.stats.skipped_calls)
        errors.append(float((out - plain).abs().mean() / plain.abs().mean()))
    assert skipped == sorted(skipped) and skipped[0] == 0 and skipped[-1] > 0
    # the reused transformation keeps the result near the plain one, and errors grow with the skips
    assert errors[0] == 0.0 and 0 < errors[-1] < 1.0


def test_warmup_and_last_step_always_compute_and_uncond_follows_cond(case_pipe):
    case, pipe, _ = case_pipe
    rec = Recorder()
    _run(pipe, case, EasyCache(error_threshold=100.0, warmup=3), rec)
    skipped_steps = {s for _, s in rec.skipped()}
    assert skipped_steps, "a huge threshold must skip something"
    assert min(skipped_steps) >= 3 and STEPS - 1 not in skipped_steps
    if case == "wan":  # separate CFG calls: the uncond call of a step does what the cond call did
        by_branch = {(s, b): k for _, s, b, k in rec.log}
        for s in range(STEPS):
            assert by_branch[(s, "cond")] == by_branch[(s, "uncond")]


def test_state_resets_between_generations_and_pipelines(case_pipe):
    case, pipe, _ = case_pipe
    cache = EasyCache(error_threshold=1.0, warmup=1)
    handle = numina_hooks.attach(pipe, cache)
    try:
        first = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames
        # a different generation in between must not leak into the next one
        pipe(prompt="a dog", generator=torch.Generator().manual_seed(5), **_call(case)).frames
        again = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames
        via_handle = handle(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call(case)).frames
    finally:
        handle.detach()
    fresh = _run(pipe, case, EasyCache(error_threshold=1.0, warmup=1))
    assert torch.equal(first, again) and torch.equal(first, via_handle) and torch.equal(first, fresh)


def test_one_cache_on_two_pipelines_keeps_them_apart():
    a, b = _pipe("wan"), testing.tiny_wan_pipeline(seed=1)
    b.set_progress_bar_config(disable=True)
    alone_a = _run(a, "wan", EasyCache(error_threshold=1.0, warmup=1))
    alone_b = _run(b, "wan", EasyCache(error_threshold=1.0, warmup=1))
    shared = EasyCache(error_threshold=1.0, warmup=1)
    ha, hb = numina_hooks.attach(a, shared), numina_hooks.attach(b, shared)
    try:
        gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        # interleave the two generations step by step through the step callback
        outs = {}

        def run_b_inside_a(pipe, i, t, kw):
            if i == 3 and "b" not in outs:
                outs["b"] = b(prompt=PROMPT, generator=gen_b, **_call("wan")).frames
            return {}

        outs["a"] = a(prompt=PROMPT, generator=gen_a, callback_on_step_end=run_b_inside_a, **_call("wan")).frames
    finally:
        ha.detach()
        hb.detach()
    assert torch.equal(outs["a"], alone_a) and torch.equal(outs["b"], alone_b)


def test_wan22_experts_keep_their_own_state():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = _pipe("wan22-a14b")
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # the experts split the steps in half
    rec = Recorder()
    _run(pipe, "wan22-a14b", EasyCache(error_threshold=100.0, warmup=1), rec, steps=12)
    names = [t for t, *_ in rec.log]
    assert {"transformer", "transformer_2"} <= set(names)
    first_low_noise = names.index("transformer_2")
    # the low-noise expert's first two steps compute (it needs its own transformation and rate),
    # and only then does it skip: it never reuses the high-noise expert's state
    low = [(s, k) for t, s, b, k in rec.log if t == "transformer_2" and b == "cond"]
    assert rec.log[first_low_noise][3] is False
    assert [k for _, k in low[:2]] == [False, False] and any(k for _, k in low[2:])


def test_numina_reference_step_always_computes_and_report_counts_skips(monkeypatch):
    pipe = _pipe("wan")
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: False)
    config = NuminaConfig(reference_step=5)
    rec = Recorder()
    cache = EasyCache(error_threshold=100.0, warmup=1)
    handle = numina_hooks.attach(pipe, cache, rec, config=config)
    try:
        out = handle(prompt=PROMPT, counts={"cats": 3}, generator=torch.Generator().manual_seed(0), **_call("wan", 10))
    finally:
        handle.detach()
    rep = out.numina
    assert rep.phase2_ran
    # without the guarantee error_threshold=100 would skip step 5 and NUMINA could not read its layout
    assert ("transformer", 5, "cond", False) in rec.log
    assert rep.cache["phase1"]["skipped_steps"] >= 1 and rep.cache["phase2"]["skipped_steps"] >= 1
    assert rep.model_calls["phase1"] == 2 * 5 + 1 - rep.cache["phase1"]["skipped_calls"]


def test_phases_knob_limits_the_cache_to_one_numina_pass(monkeypatch):
    pipe = _pipe("wan")
    monkeypatch.setattr(generate_mod.LayoutReader, "matches", lambda self, counts: False)
    handle = numina_hooks.attach(pipe, EasyCache(error_threshold=100.0, warmup=1, phases=("phase1",)), config=NuminaConfig())
    try:
        rep = handle(prompt=PROMPT, counts={"cats": 3}, generator=torch.Generator().manual_seed(0), **_call("wan", 10)).numina
    finally:
        handle.detach()
    assert rep.cache["phase1"]["skipped_steps"] >= 1 and "phase2" not in rep.cache
    assert rep.model_calls["phase2"] == 20


def test_bare_model_with_named_steps_keeps_the_output_type():
    pipe = _pipe("wan")
    model = pipe.transformer
    torch.manual_seed(0)
    x = torch.randn(1, 16, 3, 8, 8)
    text = torch.randn(1, 24, model.config.text_dim)
    cache = EasyCache(error_threshold=100.0, warmup=1)
    handle = numina_hooks.attach(model, cache)
    outs = []
    try:
        for i in range(4):
            with handle.context(branch="cond", step=i, num_steps=4):
                outs.append(model(hidden_states=x * (1 - 0.1 * i), timestep=torch.tensor([900.0 - 200 * i]),
                                  encoder_hidden_states=text))
    finally:
        handle.detach()
    assert cache.stats.skipped_calls >= 1
    assert all(type(o) is type(outs[0]) and o.sample.shape == x.shape for o in outs)


@pytest.mark.parametrize("cache_config", ["FirstBlockCacheConfig", "TaylorSeerCacheConfig"])
def test_diffusers_cache_enabled_is_refused_clearly_and_leaves_the_pipeline_working(cache_config):
    import diffusers

    if not hasattr(diffusers, cache_config):  # TaylorSeer arrived after diffusers 0.35
        pytest.skip(f"diffusers {diffusers.__version__} has no {cache_config}")
    pipe = _pipe("wan")
    config = getattr(diffusers, cache_config)
    pipe.transformer.enable_cache(config(threshold=0.05) if cache_config == "FirstBlockCacheConfig" else config())
    try:
        reference = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call("wan")).frames
        handle = numina_hooks.attach(pipe, EasyCache())
        with pytest.raises(RuntimeError, match=r"disable_cache\(\)"):
            handle(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call("wan"))
        handle.detach()
        # observing plugins coexist with the diffusers cache: same output as without numina-hooks
        rec = Recorder()
        with numina_hooks.attach(pipe, rec) as h:
            seen = h(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call("wan")).frames
        assert torch.equal(seen, reference) and len(rec.log) == 2 * STEPS
        after = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **_call("wan")).frames
        assert torch.equal(after, reference)
    finally:
        pipe.transformer.disable_cache()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(error_threshold=-0.1), "error_threshold=-0.1"),
        (dict(error_threshold=float("nan")), "error_threshold=nan"),
        (dict(tau=-0.1), "tau=-0.1"),  # the deprecated name is named back as written
        (dict(warmup=-1), "warmup=-1"),
        (dict(warmup=2.5), "warmup=2.5"),
        (dict(phases=("phase3",)), "phases="),
    ],
)
@pytest.mark.filterwarnings("ignore:EasyCache. 'tau' is deprecated:DeprecationWarning")
def test_bad_settings_name_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        EasyCache(**kwargs)


def test_old_name_tau_warns_and_means_error_threshold(case_pipe):
    case, pipe, _ = case_pipe
    with pytest.warns(DeprecationWarning, match="'tau' is deprecated, use 'error_threshold'"):
        old = EasyCache(tau=1.0, warmup=1)
    new = EasyCache(error_threshold=1.0, warmup=1)
    assert old.error_threshold == 1.0
    with pytest.warns(DeprecationWarning, match="use 'error_threshold'"):
        assert old.tau == 1.0
    # the same setting under either name skips the same calls and gives the same video
    assert torch.equal(_run(pipe, case, old), _run(pipe, case, new))
    assert old.stats.as_dict() == new.stats.as_dict() and new.stats.skipped_calls > 0


def test_unknown_setting_is_refused():
    with pytest.raises(TypeError, match="taus"):
        EasyCache(taus=0.1)


def test_image_to_video_inputs_use_their_leading_channels():
    from numina_hooks.cache.easycache import _leading, _with_sample

    x = torch.arange(36 * 2 * 2 * 2, dtype=torch.float32).reshape(1, 36, 2, 2, 2)  # Wan I2V: latents + condition
    out = torch.zeros(1, 16, 2, 2, 2)
    assert torch.equal(_leading(x, out), x[:, :16])
    cog = torch.zeros(1, 3, 32, 4, 4)  # CogVideoX I2V concatenates on dim 2
    assert _leading(cog, torch.zeros(1, 3, 16, 4, 4)).shape == (1, 3, 16, 4, 4)
    with pytest.raises(ValueError, match="cannot be cached"):
        _leading(torch.zeros(1, 36, 3, 2, 2), out)
    # the skipped output keeps the model's own output type
    assert _with_sample((out,), x[:, :16])[0] is not out and isinstance(_with_sample((out,), out), tuple)
