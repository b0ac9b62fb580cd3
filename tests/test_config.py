"""NuminaConfig: defaults, validation, fractions, the delta(t) schedule."""

import dataclasses

import pytest

from numina_hooks.numina.config import NuminaConfig


def test_paper_defaults_resolve_to_paper_step_and_layer():
    cfg = NuminaConfig()
    assert cfg.resolve_step(50) == 20 and cfg.resolve_layer(30) == 15
    assert cfg.resolve_layer(40) == 20 and cfg.resolve_layer(42) == 21
    assert cfg.tau == 0.2 and cfg.lam == 8.0 and cfg.boost_k == 0.8 and cfg.peak_ratio == 0.1


def test_absolute_indices_and_out_of_range():
    cfg = NuminaConfig(reference_step=20, reference_layer=15)
    assert cfg.resolve_step(50) == 20 and cfg.resolve_layer(30) == 15
    with pytest.raises(ValueError, match="reference_layer=15.*0..9"):
        cfg.resolve_layer(10)
    with pytest.raises(ValueError, match="number of steps"):
        cfg.resolve_step(0)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        NuminaConfig().tau = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("field, value, words", [
    ("reference_step", 1.5, "between 0 and 1"),
    ("reference_step", -2, "non-negative"),
    ("reference_layer", "half", "fraction"),
    ("cross_head", "median", "'max', 'mean'"),
    ("focus_clustering", "kmeans", "dbscan"),
    ("guidance", "full", "sparse"),
    ("target_mode", "x", "per_head"),
    ("tau", 0.0, "(0.0, 1.0]"),
    ("tau", 1.5, "(0.0, 1.0]"),
    ("peak_ratio", 1.0, "(0.0, 1.0)"),
    ("gamma", float("nan"), "> 0"),
    ("lam", -1.0, "> 0"),
    ("block_size", 0, "int >= 1"),
    ("placement_stride", 1.5, "int >= 1"),
    ("suppress_bias", 5.0, "negative"),
    ("boost_k", -0.1, ">= 0"),
    ("delta_floor", 2.0, "(0.0, 1.0]"),
])
def test_invalid_values_name_field_value_and_expectation(field, value, words):
    with pytest.raises(ValueError) as err:
        NuminaConfig(**{field: value})
    msg = str(err.value)
    assert f"NuminaConfig.{field}=" in msg and repr(value) in msg and words in msg


def test_delta_is_decreasing_in_unit_interval_and_floor_covers_about_half():
    cfg = NuminaConfig()
    ds = [cfg.delta(s, 50) for s in range(50)]
    assert ds[0] == 1.0 and all(0 < d <= 1 for d in ds)
    assert all(a >= b for a, b in zip(ds, ds[1:]))
    active = sum(cfg.guidance_active(s, 50) for s in range(50))
    assert 0.4 * 50 <= active <= 0.6 * 50
    assert cfg.delta(3, 50, sigma=0.7) == 0.7 and cfg.delta(3, 50, sigma=1.3) == 1.0
    with pytest.raises(ValueError, match="step 50 outside"):
        cfg.delta(50, 50)
