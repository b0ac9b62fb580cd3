"""The toy world: deterministic clips, no overlaps, captions that say the counts,
and an exact counter."""

import re

import numpy as np
import pytest

from numina_hooks.toy import world
from numina_hooks.toy.counter import count_objects, label_objects
from numina_hooks.toy.world import CATEGORIES, held_out_prompts, is_held_out, make_clip

_WORD_VALUE = {w: i for i, w in enumerate(world.NUMBER_WORDS)} | {"a": 1, "single": 1}
_NOUNS = {c.noun: c.name for c in CATEGORIES} | {c.plural: c.name for c in CATEGORIES}


def parse_caption(text: str) -> dict[str, int]:
    """A deliberately independent reading of a caption: '<count> <colour> <noun>'."""
    out = {}
    words = re.findall(r"[a-z]+", text)
    for i, w in enumerate(words):
        if w in _NOUNS:
            det = words[i - 2]  # the word before the colour
            out[_NOUNS[w]] = _WORD_VALUE[det]
    return out


def test_same_seed_same_clip_and_different_seed_differs():
    a, b, c = make_clip(11), make_clip(11), make_clip(12)
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    assert np.array_equal(a.instances, b.instances) and a.counts == b.counts
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("seed", range(60))
def test_clip_truth_is_consistent(seed):
    clip = make_clip(seed, split="any")
    f, h, w, _ = clip.frames.shape
    assert (f, h, w) == (world.NUM_FRAMES, world.SIZE, world.SIZE)
    assert clip.frames.dtype == np.uint8
    # Objects never overlap: every object keeps its whole sprite in every frame.
    for k, name in enumerate(clip.categories, start=1):
        area = int(world.CATEGORY_BY_NAME[name].sprite.sum())
        assert [(clip.instances[i] == k).sum() for i in range(f)] == [area] * f
    # Requested counts, caption and objects agree.
    assert parse_caption(clip.caption) == clip.counts
    assert {n: clip.categories.count(n) for n in set(clip.categories)} == clip.counts
    # Corners sit on the patch grid; motion is -1, 0 or +1 patch a frame per axis.
    for k in range(1, len(clip.categories) + 1):
        tops = np.array([np.argwhere(clip.instances[i] == k).min(axis=0) for i in range(f)])
        assert (tops % world.PATCH == 0).all()
        step = np.diff(tops, axis=0)
        assert set(np.unique(step)) <= {-world.PATCH, 0, world.PATCH}
        assert (step == step[0]).all()  # constant velocity


@pytest.mark.parametrize("seed", range(150))
def test_counting_is_well_posed_at_the_patch_grid(seed):
    """Each object covers 9 patches and the 8-connected components of each category's
    patch mask are exactly its objects, in every frame."""
    from scipy import ndimage

    clip = make_clip(seed, split="any")
    masks = world.patch_masks(clip)
    assert set(masks) == set(clip.counts)
    g = world.SIZE // world.PATCH
    for name, mask in masks.items():
        assert mask.shape == (world.NUM_FRAMES, g, g)
        ids = [k for k, n in enumerate(clip.categories, start=1) if n == name]
        for f in range(world.NUM_FRAMES):
            labels, n = ndimage.label(mask[f], structure=np.ones((3, 3)))
            assert n == clip.counts[name]
            for k in ids:
                px = (clip.instances[f] == k).reshape(g, world.PATCH, g, world.PATCH).any(axis=(1, 3))
                assert px.sum() >= 9
                assert len(np.unique(labels[px])) == 1  # one object, one component


@pytest.mark.parametrize("seed", range(200))
def test_counter_is_exact_on_world_clips(seed):
    clip = make_clip(seed, split="any")
    want = {c.name: clip.counts.get(c.name, 0) for c in CATEGORIES}
    assert count_objects(clip.frames) == [want] * world.NUM_FRAMES


def test_counter_separates_touching_objects_of_different_categories():
    frames = np.empty((world.SIZE, world.SIZE, 3), np.uint8)
    frames[:] = world.BACKGROUND
    frames[2:7, 2:7] = CATEGORIES[1].rgb  # blue square
    frames[2:7, 7:12] = CATEGORIES[1].rgb  # a second one touching: one component
    frames[7:12, 2:7] = CATEGORIES[0].rgb  # red block touching the squares
    frames[20, 20] = CATEGORIES[0].rgb  # a one-pixel speck is not an object
    assert count_objects(frames) == [{"disc": 1, "square": 1, "triangle": 0}]
    labels = label_objects(frames)
    assert labels["square"][4, 4] == labels["square"][4, 9] == 1


def test_worlds_show_touching_and_nearly_touching_objects():
    close = 0
    for seed in range(100):
        clip = make_clip(seed, split="any")
        inst = clip.instances[0]
        # Is some pixel of one object within 3 px (Chebyshev) of another object, i.e. at
        # most one patch of background between them?
        for k in range(1, len(clip.categories) + 1):
            grown = np.zeros_like(inst, dtype=bool)
            for r, c in np.argwhere(inst == k):
                grown[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4] = True
            if ((inst != k) & (inst > 0) & grown).any():
                close += 1
                break
    assert close >= 40


def test_held_out_split():
    combos = world.all_combinations()
    held = [c for c in combos if is_held_out(c)]
    assert 0.05 < len(held) / len(combos) < 0.25
    for seed in range(50):
        assert not is_held_out(make_clip(seed).counts)
    prompts = held_out_prompts(30, seed=1)
    assert prompts == held_out_prompts(30, seed=1)
    assert len(prompts) == 30 and all(is_held_out(p.counts) for p in prompts)
    assert all(parse_caption(p.text) == p.counts for p in prompts)
    assert len({world.combo_key(p.counts) for p in prompts}) == min(30, len(held))


def test_fixed_counts_and_bad_counts():
    clip = make_clip(4, counts={"triangle": 6, "disc": 2})
    assert count_objects(clip.frames)[0] == {"disc": 2, "square": 0, "triangle": 6}
    with pytest.raises(ValueError, match="count for 'disc'"):
        make_clip(0, counts={"disc": world.MAX_PER_CATEGORY + 1})
    with pytest.raises(ValueError, match="unknown category"):
        make_clip(0, counts={"cat": 1})


def test_vocabulary_covers_captions():
    vocab = set(world.vocabulary())
    for seed in range(100):
        words = make_clip(seed, split="any").caption.replace(",", " , ").split()
        assert set(words) <= vocab


def test_training_prompts_hold_only_trained_combinations():
    """Prompts of combinations the model trained on: none held out, reproducible, captions
    that parse to their counts, more than one combination; a negative n refused."""
    prompts = world.training_prompts(40, seed=3)
    assert prompts == world.training_prompts(40, seed=3)
    assert len(prompts) == 40 and not any(is_held_out(p.counts) for p in prompts)
    assert all(parse_caption(p.text) == p.counts for p in prompts)
    assert len({world.combo_key(p.counts) for p in prompts}) > 10
    with pytest.raises(ValueError, match="n=-1"):
        world.training_prompts(-1)


def test_small_count_range_draws_fewer_objects_and_keeps_the_split():
    """The "small" range (1-4 a category, 6 in all) draws only such clips; its held-out
    combinations are exactly v2's that fit in it, so one model's figures on either are
    comparable; a count outside the range is refused naming it."""
    small = world.count_range("small")
    for seed in range(40):
        clip = make_clip(seed, counts_in="small")
        assert max(clip.counts.values()) <= small.max_per_category
        assert sum(clip.counts.values()) <= small.max_objects
        assert len(clip.categories) == sum(clip.counts.values())
        assert not is_held_out(clip.counts)
    fits = [c for c in world.all_combinations("v2") if is_held_out(c)
            and max(c.values()) <= 4 and sum(c.values()) <= 6]
    assert [c for c in world.all_combinations("small") if is_held_out(c)] == fits
    assert {world.combo_key(p.counts) for p in held_out_prompts(30, seed=1, counts_in="small")} == \
        {world.combo_key(c) for c in fits}
    with pytest.raises(ValueError, match=r"count for 'disc' must be in 1..4 \(count range 'small'\), got 5"):
        make_clip(0, counts={"disc": 5}, counts_in="small")
    with pytest.raises(ValueError, match=r"count range 'huge' is unknown: expected one of \['small', 'v2'\]"):
        held_out_prompts(3, counts_in="huge")
    assert make_clip(3).counts == make_clip(3, counts_in="v2").counts  # the default is v2


def test_toy_prompts_follow_the_shipped_weights_count_range(monkeypatch):
    """`numina eval --model toy` and `numina demo` draw the held-out prompts of the range the
    shipped weights were trained on (v2 today): weights of the small range get its prompts."""
    from numina_hooks.demo import demo_prompts
    from numina_hooks.eval.benchmark import toy_benchmark
    from numina_hooks.toy import model as toy_model

    def keys(prompts):
        return [world.combo_key(p.counts) for p in prompts]

    assert keys(demo_prompts(12)) == keys(held_out_prompts(12, seed=0, counts_in="v2"))
    monkeypatch.setattr(toy_model, "weights_count_range", lambda weights_dir=None: "small")
    small = held_out_prompts(12, seed=0, counts_in="small")
    assert keys(demo_prompts(12)) == keys(small) != keys(held_out_prompts(12, seed=0))
    assert [item.prompt for item in toy_benchmark(12)] == [p.text for p in small]
