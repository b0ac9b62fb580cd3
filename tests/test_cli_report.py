"""What NUMINA's report shows a person: a short repr, the cache per phase (zeros included),
layout pictures with titles, gaps and a legend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import numina_hooks
from numina_hooks.toy.model import TOY_CALL, load_toy_pipeline

PROMPT = "three red discs and two blue squares"


@pytest.fixture(scope="module")
def cached_run():
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with numina_hooks.attach(pipe, numina_hooks.EasyCache(error_threshold=0.0), config=numina_hooks.NuminaConfig()) as h, \
            torch.no_grad():
        out = h(prompt=PROMPT, generator=torch.Generator().manual_seed(0), **dict(TOY_CALL, num_inference_steps=5))
    return out.numina


def test_repr_is_a_short_summary(cached_run):
    text = repr(cached_run)
    assert len(text) < 1000 and len(text.splitlines()) <= 8
    assert "counts_asked={'discs': 3, 'squares': 2}" in text and cached_run.reason in text
    assert ".summary()" in text  # where the details are


def test_cache_lists_every_phase_that_ran_zeros_included(cached_run):
    phases = ["phase1", "phase2"] if cached_run.phase2_ran else ["phase1"]
    assert sorted(cached_run.cache) == phases
    for phase in phases:  # tau=0 skips nothing, and the report says so
        assert cached_run.cache[phase] == {"skipped_calls": 0, "skipped_steps": 0}


def test_no_cache_no_cache_entry():
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    with numina_hooks.attach(pipe) as h, torch.no_grad():
        report = h.read_layout(prompt=PROMPT, generator=torch.Generator().manual_seed(0),
                               **dict(TOY_CALL, num_inference_steps=5))
    assert report.cache == {}


def test_layout_pictures_have_gaps_titles_and_a_legend(cached_run, tmp_path):
    cached_run.save(tmp_path)
    img = np.asarray(Image.open(tmp_path / "frame_00.png").convert("RGB")).astype(int)
    tiles = 1 + 3 * 2  # self head, then cross/before/after for two nouns
    tile = 12 * 8  # 12 x 12 patches, 8 px each
    assert img.shape[1] >= tiles * tile + (tiles - 1) * 10  # space between panels
    dark = (img < 120).all(axis=-1)
    title_rows, legend_rows = dark[:20], dark[20 + tile + 8:]
    assert title_rows.sum() > 100 and legend_rows.sum() > 300  # titles above, legend below
