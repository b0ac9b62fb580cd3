"""The toy model: a real diffusers WanPipeline over pixel latents, its shipped weights,
and its training script."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from numina_hooks.toy import model as toy_model  # noqa: E402
from numina_hooks.toy import train as toy_train  # noqa: E402
from numina_hooks.toy.world import make_clip  # noqa: E402
from numina_hooks.toy import world  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return toy_model.load_toy_pipeline()


def test_shipped_pipeline_is_a_real_wan_pipeline(shipped):
    from diffusers import WanPipeline, WanTransformer3DModel

    assert isinstance(shipped, WanPipeline)
    assert isinstance(shipped.transformer, WanTransformer3DModel)
    assert len(shipped.transformer.blocks) == toy_model.TRANSFORMER_CONFIG["num_layers"]
    n = sum(p.numel() for p in shipped.transformer.parameters())
    assert 1.0e6 < n < 2.0e6


def test_shipped_weights_generate_frames_quickly(shipped):
    call = {**toy_model.TOY_CALL, "num_inference_steps": 2}
    out = shipped(prompt="three red discs and two blue squares drifting",
                  generator=torch.Generator().manual_seed(0), **call)
    assert tuple(out.frames.shape) == (1, 3, 4, 24, 24)
    frames = toy_model.toy_frames(out)
    assert frames.shape == (4, 24, 24, 3) and frames.dtype == np.uint8
    again = shipped(prompt="three red discs and two blue squares drifting",
                    generator=torch.Generator().manual_seed(0), **call)
    assert np.array_equal(toy_model.toy_frames(again), frames)


def test_pixels_round_trip_through_latents():
    clip = make_clip(3)
    lat = toy_model.frames_to_latents(clip.frames)
    assert tuple(lat.shape) == (1, 3, 4, 24, 24) and float(lat.abs().max()) <= 1.0
    assert np.array_equal(toy_model.toy_frames(lat), clip.frames)
    two = toy_model.frames_to_latents(np.stack([clip.frames, clip.frames]))
    assert toy_model.toy_frames(two).shape == (2, 4, 24, 24, 3)
    with pytest.raises(ValueError, match="output_type='latent'"):
        toy_model.toy_frames(torch.zeros(1, 4, 24, 24))


def test_tokenizer_is_word_level_with_offsets():
    tok = toy_model.build_tokenizer()
    text = "a yellow triangle beside four red discs"
    enc = tok(text, return_offsets_mapping=True)
    words = [text[a:b] for a, b in enc["offset_mapping"][:-1]]
    assert words == text.split()
    assert enc["input_ids"][-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok("a purple blob").input_ids[2] == tok.unk_token_id == 2
    padded = tok([text], padding="max_length", max_length=toy_model.MAX_TEXT_TOKENS)
    assert len(padded.input_ids[0]) == toy_model.MAX_TEXT_TOKENS


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="numina_hooks.toy.train"):
        toy_model.load_toy_pipeline(tmp_path)


def test_train_runs_two_steps_then_resumes(tmp_path):
    first = toy_train.train(tmp_path, steps=2, seed=1, batch=2, progress=False)
    assert first["steps"] == 2
    ckpt = tmp_path / toy_train.CHECKPOINT
    assert ckpt.exists() and ckpt.stat().st_size < 12e6
    assert (tmp_path / "loss.png").stat().st_size > 1000
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 2 and len(state["losses"]) == 2

    second = toy_train.train(tmp_path, steps=3, seed=1, batch=2, progress=False)
    assert second["steps"] == 3
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 3 and len(state["losses"]) == 3
    # The resumed step drew the data of step 2 of the same run, so its loss is finite
    # and the first two losses are kept as they were.
    assert torch.isfinite(state["losses"]).all()
    pipe = toy_model.load_toy_pipeline(tmp_path / "weights")
    out = pipe(prompt="a red disc", **{**toy_model.TOY_CALL, "num_inference_steps": 1})
    assert toy_model.toy_frames(out).shape == (4, 24, 24, 3)


def test_evaluate_plain_reports_paper_metrics(shipped):
    from numina_hooks.toy.evaluate import evaluate_plain
    from numina_hooks.toy.world import held_out_prompts

    prompts = held_out_prompts(2, seed=0)
    res = evaluate_plain(shipped, prompts, [0, 1], num_inference_steps=2)
    assert res["videos"] == 2 and 0 <= res["count_acc"] <= 1 and 0 <= res["tc"] <= 1
    assert [r["asked"] for r in res["rows"]] == [p.counts for p in prompts]
    assert all(len(r["found"]) == 4 for r in res["rows"])
    # batching does not change a prompt-seed pair's clip
    one = evaluate_plain(shipped, prompts[1:], [1], num_inference_steps=2)
    assert one["rows"][0]["found"] == res["rows"][1]["found"]


def test_attention_probe_reproduces_the_layer_output(shipped):
    from numina_hooks.toy import evaluate

    clip = make_clip(1)
    x = 0.4 * toy_model.frames_to_latents(clip.frames) + 0.6 * torch.randn(
        1, 3, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    attn = shipped.transformer.blocks[3].attn1
    seen = {}
    hooks = [attn.register_forward_pre_hook(lambda m, a: seen.update(inp=a[0])),
             attn.register_forward_hook(lambda m, a, o: seen.update(out=o))]
    try:
        maps = evaluate._self_attention_maps(shipped, x, 0.6, clip.caption)
    finally:
        for h in hooks:
            h.remove()
    assert len(maps) == 6 and tuple(maps[3].shape) == (4, 576, 576)
    with torch.no_grad():
        v = attn.to_v(seen["inp"]).unflatten(2, (attn.heads, -1))[0].transpose(0, 1)
        out = attn.to_out[0]((maps[3] @ v).transpose(0, 1).flatten(1)[None])
    torch.testing.assert_close(out, seen["out"], atol=1e-5, rtol=1e-4)


def test_ship_copies_weights_and_writes_readme(tmp_path):
    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=2, batch=2, progress=False)
    dest = tmp_path / "pkg"
    toy_train.ship(run, dest)
    readme = (dest / "README.md").read_text()
    assert "step 1 of the seed-2 run" in readme and f"--out {run.as_posix()} --steps 1 --seed 2" in readme
    assert toy_model.toy_frames(toy_model.load_toy_pipeline(dest)(
        prompt="two blue squares", **{**toy_model.TOY_CALL, "num_inference_steps": 1})).shape == (4, 24, 24, 3)


def test_batch_workers_draw_the_same_data_as_the_training_loop():
    """``--workers`` only moves clip making to other processes: the batches are the same."""
    feed = toy_train._BatchFeed(seed=3, first=5, last=7, batch=2, drop=0.5, workers=1)
    try:
        made = list(feed)
    finally:
        feed.close()
    for step, (x0, captions, labels, categories) in zip((5, 6), made):
        want_x0, want_captions, want_labels, want_categories = toy_train.batch_clips(3, step, 2, 0.5)
        assert captions == want_captions and categories == want_categories
        assert torch.equal(x0, want_x0)
        assert torch.equal(labels, want_labels)


def test_learning_rate_schedule_warms_up_then_decays_to_the_final_fraction(tmp_path):
    lr = toy_train.learning_rate
    assert lr(0, 1e-3, 200, 1000) == pytest.approx(5e-6)
    assert lr(500, 1e-3, 200, 1000) == pytest.approx(1e-3)  # constant without decay_start
    assert lr(600, 1e-3, 200, 1000, decay_start=600) == pytest.approx(1e-3)
    assert lr(800, 1e-3, 200, 1000, decay_start=600) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert lr(1000, 1e-3, 200, 1000, decay_start=600) == pytest.approx(5e-5)
    steps = [lr(s, 1e-3, 200, 1000, decay_start=600) for s in range(600, 1001)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))  # never rises during the decay
    with pytest.raises(ValueError, match="decay_start=1000 must lie in"):
        toy_train.train(tmp_path, steps=1000, decay_start=1000, progress=False)


def _tiny_configs():
    t_cfg, e_cfg = toy_model.architecture("v2")
    return ({**t_cfg, "num_layers": 1, "ffn_dim": 32},
            {**e_cfg, "num_layers": 1, "d_ff": 32})


def test_weights_of_another_architecture_load_as_they_were_trained(tmp_path):
    """The architecture travels in info.json: load_toy_pipeline builds what the weights
    need, and loading them into a pipeline of another shape says so by field."""
    t_cfg, e_cfg = _tiny_configs()
    pipe = toy_model.build_pipeline(seed=4, transformer_config=t_cfg, text_encoder_config=e_cfg)
    toy_model.save_weights(pipe, tmp_path)
    loaded = toy_model.load_toy_pipeline(tmp_path)
    assert len(loaded.transformer.blocks) == 1 and loaded.transformer.config.ffn_dim == 32
    assert toy_model.pipeline_configs(loaded) == toy_model.pipeline_configs(pipe)
    with pytest.raises(ValueError, match=r"num_layers=1 \(the pipeline has 6\)"):
        toy_model.load_weights(toy_model.build_pipeline(), tmp_path)


def test_architectures_are_named_and_checked():
    t_cfg, e_cfg = toy_model.architecture("v3")
    assert t_cfg["num_layers"] == 8 and t_cfg["text_dim"] == e_cfg["d_model"] == 128
    assert toy_model.TRANSFORMER_CONFIG["num_layers"] == 6  # v2 untouched
    with pytest.raises(ValueError, match="architecture 'v9' is unknown"):
        toy_model.architecture("v9")
    with pytest.raises(ValueError, match="text_dim=64 differs from the text encoder's d_model=128"):
        toy_model.build_pipeline(transformer_config=toy_model.TRANSFORMER_CONFIG,
                                 text_encoder_config=e_cfg)


def test_a_run_keeps_its_architecture(tmp_path):
    toy_train.train(tmp_path, steps=1, seed=1, batch=1, progress=False)
    with pytest.raises(ValueError, match="arch='v3', but the run in .* trains 'v2'"):
        toy_train.train(tmp_path, steps=2, seed=1, batch=1, progress=False, arch="v3")
    with pytest.raises(ValueError, match="arch='v3', but the weights in .* are 'v2'"):
        toy_train.train(tmp_path / "new", steps=1, progress=False, arch="v3",
                        init_weights=toy_model.WEIGHTS_DIR)


def test_sigma_location_trains_on_noisier_steps_and_is_recorded(tmp_path, shipped):
    """--sigma-location shifts the same logit-normal draws to higher noise, and a shipped
    run's README repeats it in the training command."""
    seen = []
    transformer = shipped.transformer
    original = transformer.forward

    def record(*args, **kwargs):
        seen.append(kwargs["timestep"].clone())
        return original(*args, **kwargs)

    x0 = toy_model.frames_to_latents(np.stack([make_clip(s).frames for s in range(4)]))
    transformer.forward = record
    try:
        with torch.no_grad():
            for location in (0.0, 2.0):
                toy_train.flow_loss(shipped, x0, ["a red disc"] * 4, torch.Generator().manual_seed(3),
                                    sigma_location=location)
    finally:
        del transformer.forward
    centred, shifted = seen
    assert (shifted > centred).all() and float(shifted.mean()) > 750.0

    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=2, batch=2, progress=False, sigma_location=1.5)
    dest = tmp_path / "pkg"
    toy_train.ship(run, dest)
    assert "--sigma-location 1.5" in (dest / "README.md").read_text()


def test_foreground_weights_mark_objects_and_their_edges():
    """One object pixel in an otherwise empty frame: that pixel and its 8 neighbours get
    the weight, every other pixel (and the other frames) 1; weight 1 is the plain loss."""
    frames = np.empty((1, 2, 6, 6, 3), dtype=np.uint8)
    frames[...] = world.BACKGROUND
    frames[0, 1, 2, 3] = (220, 40, 40)
    w = toy_train.foreground_weights(toy_model.frames_to_latents(frames), 5.0)
    assert w.shape == (1, 1, 2, 6, 6)
    expected = torch.ones(2, 6, 6)
    expected[1, 1:4, 2:5] = 5.0
    assert torch.equal(w[0, 0], expected)
    with pytest.raises(ValueError, match="foreground_weight=0.5"):
        toy_train.foreground_weights(toy_model.frames_to_latents(frames), 0.5)


def test_foreground_weight_changes_the_loss_only_when_set_and_is_recorded(tmp_path, shipped):
    """Weight 1 gives the plain mean; a larger weight gives a different loss from the same
    draws (objects are predicted worse than the background); the run records the option."""
    x0 = toy_model.frames_to_latents(np.stack([make_clip(s).frames for s in range(4)]))

    def loss(weight):
        with torch.no_grad():
            return float(toy_train.flow_loss(shipped, x0, ["a red disc"] * 4, torch.Generator().manual_seed(3),
                                             foreground_weight=weight)[0])

    plain, same, weighted = loss(1.0), loss(1.0), loss(8.0)
    assert plain == same and weighted > plain
    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=2, batch=2, progress=False, foreground_weight=4.0)
    dest = tmp_path / "pkg"
    toy_train.ship(run, dest)
    assert "--foreground-weight 4.0" in (dest / "README.md").read_text()


def test_a_run_keeps_its_count_range_and_records_it(tmp_path):
    """--count-range small trains on that range's clips, is written into the weights'
    info.json (which the plain evaluation reads) and the shipped README's command; resuming
    with another range is refused."""
    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=1, batch=1, progress=False, counts_in="small")
    assert toy_model.weights_count_range(run / "weights") == "small"
    assert toy_model.weights_count_range() == "v2"  # the shipped weights
    with pytest.raises(ValueError, match="counts_in='v2', but the run in .* trains on count range 'small'"):
        toy_train.train(run, steps=2, seed=1, batch=1, progress=False, counts_in="v2")
    dest = tmp_path / "pkg"
    toy_train.ship(run, dest)
    assert "--count-range small" in (dest / "README.md").read_text()
    x0, captions, labels, categories = toy_train.batch_clips(1, 0, 8, 0.0, "small")
    assert max(len(c) for c in categories) <= 6
    # a fine-tune of those weights keeps their range unless told otherwise
    toy_train.train(tmp_path / "ft", steps=1, seed=1, batch=1, progress=False, init_weights=run / "weights")
    assert toy_model.weights_count_range(tmp_path / "ft" / "weights") == "small"
    toy_train.train(tmp_path / "ft2", steps=1, seed=1, batch=1, progress=False, init_weights=run / "weights",
                    counts_in="v2")
    assert toy_model.weights_count_range(tmp_path / "ft2" / "weights") == "v2"


def test_plain_evaluation_draws_prompts_from_the_weights_count_range(tmp_path, capsys):
    """`python -m numina_hooks.toy.evaluate` on weights trained with --count-range small
    draws that range's held-out prompts unless told otherwise, and says which."""
    from numina_hooks.toy import evaluate

    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=1, batch=1, progress=False, counts_in="small")
    out = tmp_path / "results" / "plain.json"  # a folder not made yet
    evaluate.main(["--weights", str(run / "weights"), "--n", "2", "--steps", "1", "--json", str(out)])
    import json

    res = json.loads(out.read_text())
    assert res["count_range"] == "small" and "(count range small)" in capsys.readouterr().out
    small = {world.combo_key(p.counts) for p in world.held_out_prompts(2, seed=0, counts_in="small")}
    assert {world.combo_key(r["asked"]) for r in res["rows"]} == small
    evaluate.main(["--weights", str(run / "weights"), "--n", "2", "--steps", "1", "--count-range", "v2",
                   "--json", str(out)])
    assert json.loads(out.read_text())["count_range"] == "v2"
