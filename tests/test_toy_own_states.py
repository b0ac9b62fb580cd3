"""The toy model's own sampling states and the instance-head loss on them."""

import json

import numpy as np
import pytest
import torch

from numina_hooks.toy import instance_head as ih
from numina_hooks.toy import model as toy_model
from numina_hooks.toy import own_states
from numina_hooks.toy import train as toy_train
from numina_hooks.toy import world


def test_patch_labels_of_a_world_clip_separate_its_objects_like_the_truth():
    """On a world clip (objects on the patch grid) every frame's labels hold one id per object,
    on exactly the patches of the true instances."""
    clip = world.make_clip(11, counts={"disc": 3, "square": 2})
    labels = own_states.frame_patch_labels(clip.frames).reshape(world.NUM_FRAMES, -1)
    truth = ih.patch_instances(clip.instances[None], world.PATCH)[0].reshape(world.NUM_FRAMES, -1)
    for f in range(world.NUM_FRAMES):
        ids = labels[f].unique()
        assert len(ids[ids > 0]) == 5
        # the same partition of the patches, up to the numbering
        pairs = {(int(a), int(b)) for a, b in zip(labels[f], truth[f])}
        assert len(pairs) == 6 and len({a for a, _ in pairs}) == 6


def test_a_patch_shared_by_two_objects_goes_to_the_one_holding_most_of_it():
    frames = np.zeros((1, 4, 6, 3), dtype=np.uint8)
    frames[:] = world.BACKGROUND
    frames[0, 0:2, 0:3] = world.CATEGORY_BY_NAME["disc"].rgb  # 4 pixels of patch (0, 0), 2 of (0, 1)
    frames[0, 0:2, 4:6] = world.CATEGORY_BY_NAME["square"].rgb  # patch (0, 2)
    frames[0, 0:2, 3] = world.CATEGORY_BY_NAME["square"].rgb  # 2 more pixels of patch (0, 1)
    frames[0, 2:4, 0:2] = world.CATEGORY_BY_NAME["square"].rgb  # a second square, patch (1, 0)
    frames[0, 3, 5] = world.CATEGORY_BY_NAME["disc"].rgb  # a one-pixel speck: not an object
    labels = own_states.frame_patch_labels(frames).reshape(2, 3)
    disc, square = labels[0, 0], labels[0, 2]
    assert disc > 0 and square > 0 and disc != square
    assert labels[0, 1] in (disc, square)  # a tie: either object, never the background
    assert labels[1, 0] > 0 and labels[1, 0] not in (disc, square)
    assert labels[1, 1] == 0 and labels[1, 2] == 0


def test_recorded_states_are_the_pipelines_own_latents_with_the_final_videos_objects():
    pipe = toy_model.load_toy_pipeline()
    captions = own_states.training_captions(2, seed=3)
    assert len(own_states.training_captions(40, seed=3)) == 40
    assert not any(world.is_held_out(c) for c in _counts(own_states.training_captions(40, seed=3)))
    data = own_states.record_states(pipe, captions, [5, 6], steps=[8, 19], batch=2)
    assert data["latents"].shape == (4, 3, world.NUM_FRAMES, world.SIZE, world.SIZE)
    assert data["captions"] == captions * 2
    timesteps = pipe.scheduler.timesteps
    assert data["timesteps"].tolist() == pytest.approx([float(timesteps[8])] * 2 + [float(timesteps[19])] * 2)
    # the final video of each sample, from the same noise, gives the labels
    frames = toy_model.toy_frames(pipe(prompt=captions[:1], generator=[torch.Generator().manual_seed(5)],
                                       **toy_model.TOY_CALL))
    assert torch.equal(data["labels"][0], own_states.frame_patch_labels(frames))
    assert torch.equal(data["labels"][0], data["labels"][2])
    # a state late in the trajectory is close to the video itself, an early one is not
    final = toy_model.frames_to_latents(frames)[0]
    late, early = data["latents"][2].float(), data["latents"][0].float()
    assert (late - final).abs().mean() < 0.5 * (early - final).abs().mean()


def test_bad_steps_are_refused_clearly():
    pipe = toy_model.load_toy_pipeline()
    with pytest.raises(ValueError, match=r"steps \[0, 20\] are outside 1..19"):
        own_states.record_states(pipe, ["a red disc"], [0], steps=[0, 20])


def test_training_on_own_states_records_their_loss(tmp_path):
    pipe = toy_model.load_toy_pipeline()
    data = own_states.record_states(pipe, own_states.training_captions(2, seed=4), [1, 2], steps=[8])
    states = tmp_path / "states.pt"
    torch.save(data, states)
    run = tmp_path / "run"
    toy_train.train(run, steps=1, seed=2, batch=2, progress=False, init_weights=toy_model.WEIGHTS_DIR,
                    instance_heads="3:2", own_states=str(states), own_states_batch=2)
    info = json.loads((run / "weights" / "info.json").read_text())
    assert info["train_args"]["own_states"] == str(states)
    assert info["own_states_loss_last_100"] > 0
    with pytest.raises(ValueError, match="own_states needs instance_heads"):
        toy_train.train(tmp_path / "run2", steps=1, own_states=str(states), progress=False)
    bad = tmp_path / "bad.pt"
    torch.save({"latents": data["latents"]}, bad)
    with pytest.raises(ValueError, match="not a states file"):
        own_states.load_states(bad)


def _counts(captions):
    from numina_hooks.numina.counts import parse_counts

    return [{world.category_of_noun(n): k for n, k in parse_counts(c).items()} for c in captions]


def test_the_command_makes_the_folder_of_its_output(tmp_path):
    """`--out toy-states/states-0.pt` in a fresh clone: the folder does not exist yet, and the
    states (minutes of sampling) are written, not lost to a missing folder at the end."""
    out = tmp_path / "toy-states" / "states-0.pt"
    own_states.main(["--out", str(out), "--n", "1", "--seed", "0", "--steps", "8"])
    data = own_states.load_states(out)
    assert len(data["captions"]) == 1 and data["latents"].shape[0] == 1


def test_training_captions_come_from_the_count_range():
    small = own_states.training_captions(40, seed=5, counts_in="small")
    assert small == own_states.training_captions(40, seed=5, counts_in="small")
    assert all(w not in ("five", "six") for c in small for w in c.split())
    assert any(w in ("five", "six") for c in own_states.training_captions(40, seed=5) for w in c.split())
