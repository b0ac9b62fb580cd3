"""The toy's instance-head training loss (numina_hooks.toy.instance_head)."""

import math

import numpy as np
import pytest
import torch

from numina_hooks.toy import instance_head as ih
from numina_hooks.toy import model as toy_model
from numina_hooks.toy import train as toy_train


def test_patch_instances_labels_each_patch_with_its_object_in_token_order():
    inst = np.zeros((1, 2, 4, 4), dtype=np.int16)
    inst[0, 0, 0:2, 2:4] = 1  # frame 0, patch (0, 1)
    inst[0, 1, 3, 0] = 2  # frame 1, one pixel of patch (1, 0)
    labels = ih.patch_instances(inst, patch=2)
    assert labels.tolist() == [[0, 1, 0, 0, 0, 0, 2, 0]]


def test_cross_entropy_is_the_log_object_size_when_rows_attend_within_their_object():
    labels = torch.tensor([[1, 1, 0, 2, 2, 2]])
    inside = (labels[:, :, None] == labels[:, None, :]) & (labels[:, :, None] > 0)
    focused = torch.where(inside, 0.0, -1e4)
    # rows of object 1 spread over 2 patches, of object 2 over 3: mean of log 2 (x2) and log 3 (x3)
    want = (2 * math.log(2) + 3 * math.log(3)) / 5
    assert ih.instance_cross_entropy(focused, labels).item() == pytest.approx(want, abs=1e-4)
    uniform = torch.zeros(1, 6, 6)
    assert ih.instance_cross_entropy(uniform, labels).item() == pytest.approx(math.log(6), abs=1e-5)
    # frame-local target (3 tokens a frame): object 2 has one patch in frame 0 and two in frame 1
    labels2 = torch.tensor([[1, 1, 2, 2, 2, 0]])
    same = (labels2[:, :, None] == labels2[:, None, :]) & (labels2[:, :, None] > 0)
    local = same & (torch.arange(6)[:, None] // 3 == torch.arange(6)[None, :] // 3)
    logits = torch.where(local, 0.0, -1e4)
    assert ih.instance_cross_entropy(logits, labels2, tokens_per_frame=3).item() == pytest.approx(
        4 * math.log(2) / 5, abs=1e-4)
    # the whole-clip target asks row 2 for frame 1's patches as well: much higher
    assert ih.instance_cross_entropy(logits, labels2).item() > 100
    # with the background as one more object, row 2 (background) spreads over its one patch: log 1
    bg_logits = torch.where(labels[:, :, None] == labels[:, None, :], 0.0, -1e4)
    assert ih.instance_cross_entropy(bg_logits, labels, background=True).item() == pytest.approx(
        (2 * math.log(2) + 3 * math.log(3)) / 6, abs=1e-4)
    # background rows do not count; no object at all gives 0
    assert ih.instance_cross_entropy(uniform, torch.zeros(1, 6, dtype=torch.long)).item() == 0.0


def test_parse_heads_and_bad_heads_are_refused_clearly():
    assert ih.parse_heads("2:2, 3:1") == [(2, 2), (3, 1)]
    with pytest.raises(ValueError, match="expected BLOCK:HEAD"):
        ih.parse_heads("3")
    pipe = toy_model.build_pipeline(seed=0)
    with pytest.raises(ValueError, match=r"instance head 6:0 is outside the model \(6 blocks of 4 heads\)"):
        ih.InstanceHeadLoss(pipe.transformer, [(6, 0)])


def test_head_logits_are_the_probes_attention_and_the_loss_trains_that_head():
    """The loss reads the head the probe reads, and a few steps on it move that head's
    attention into the objects (and leave the other heads of the block alone)."""
    from numina_hooks.toy import evaluate

    torch.manual_seed(0)
    pipe = toy_model.build_pipeline(seed=0)
    x0, captions, labels, _ = toy_train.batch_clips(5, 0, 2, 0.0)
    x0, labels = x0[:1], labels[:1]
    sigma = torch.tensor([0.5])
    x = 0.5 * x0 + 0.5 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    aux = ih.InstanceHeadLoss(pipe.transformer, [(3, 1)])

    def run():
        text = toy_model.encode_text(pipe, captions[:1])
        with aux:
            pipe.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=text,
                             return_dict=False)
            return aux.loss(labels, sigma, max_sigma=0.8)

    probe = evaluate._self_attention_maps(pipe, x, 0.5, captions[0])[3]
    with aux:
        pipe.transformer(hidden_states=x, timestep=sigma * 1000,
                         encoder_hidden_states=toy_model.encode_text(pipe, captions[:1]), return_dict=False)
        attn, hidden, rotary = aux._captured[3]
        with torch.no_grad():
            logits = ih.head_logits(attn, hidden, rotary, 1)
        aux._captured.clear()
    torch.testing.assert_close(torch.softmax(logits[0], -1), probe[1], atol=1e-5, rtol=1e-4)

    before = run().item()
    opt = torch.optim.Adam(pipe.transformer.blocks[3].attn1.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        run().backward()
        opt.step()
    after = run().item()
    assert after < before - 0.5, (before, after)
    # above sigma_max the loss does not apply
    text = toy_model.encode_text(pipe, captions[:1])
    with aux:
        pipe.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=text, return_dict=False)
        assert aux.loss(labels, torch.tensor([0.9]), max_sigma=0.8).item() == 0.0


def test_a_training_step_with_instance_heads_records_them(tmp_path):
    run = tmp_path / "run"
    summary = toy_train.train(run, steps=1, seed=2, batch=2, progress=False, instance_heads="3:1",
                              instance_weight=0.01)
    assert summary["steps"] == 1
    import json

    info = json.loads((run / "weights" / "info.json").read_text())
    assert info["train_args"]["instance_heads"] == "3:1"
    assert info["instance_loss_last_100"] > 0


def test_a_run_started_from_weights_starts_from_them(tmp_path):
    """--init-weights: model and EMA start as the given weights (a zero learning rate keeps them)."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=2, batch=2, lr=0.0, progress=False,
                    init_weights=toy_model.WEIGHTS_DIR, instance_heads="3:2")
    start = load_file(str(toy_model.WEIGHTS_DIR / "model.safetensors"))
    written = load_file(str(run / "weights" / "model.safetensors"))
    assert start.keys() == written.keys()
    assert all(torch.equal(start[k], written[k]) for k in start)
