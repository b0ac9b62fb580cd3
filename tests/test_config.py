"""NuminaConfig: defaults, validation, fractions, the delta(t) schedule, renamed fields."""

import dataclasses
import json
import warnings

import pytest

from numina_hooks.numina.config import RENAMED_FIELDS, NuminaConfig


def test_paper_defaults_resolve_to_paper_step_and_layer():
    cfg = NuminaConfig()
    assert cfg.resolve_step(50) == 20 and cfg.resolve_layer(30) == 15
    assert cfg.resolve_layer(40) == 20 and cfg.resolve_layer(42) == 21
    assert cfg.focus_overlap == 0.2 and cfg.temporal_weight == 8.0 and cfg.boost_bias == 0.8
    assert cfg.sobel_weight == 1.0 and cfg.guidance_floor == 0.5 and cfg.peak_ratio == 0.1


def test_absolute_indices_and_out_of_range():
    cfg = NuminaConfig(reference_step=20, reference_layer=15)
    assert cfg.resolve_step(50) == 20 and cfg.resolve_layer(30) == 15
    with pytest.raises(ValueError, match="reference_layer=15.*0..9"):
        cfg.resolve_layer(10)
    with pytest.raises(ValueError, match="number of steps"):
        cfg.resolve_step(0)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        NuminaConfig().focus_overlap = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        NuminaConfig().tau = 0.5  # type: ignore[misc]  (the old name cannot write either)


@pytest.mark.parametrize("field, value, words", [
    ("reference_step", 1.5, "between 0 and 1"),
    ("reference_step", -2, "non-negative"),
    ("reference_layer", "half", "fraction"),
    ("cross_head", "median", "'max', 'mean'"),
    ("focus_clustering", "kmeans", "dbscan"),
    ("guidance", "full", "sparse"),
    ("target_mode", "x", "per_head"),
    ("focus_overlap", 0.0, "(0.0, 1.0]"),
    ("focus_overlap", 1.5, "(0.0, 1.0]"),
    ("peak_ratio", 1.0, "(0.0, 1.0)"),
    ("sobel_weight", float("nan"), "> 0"),
    ("temporal_weight", -1.0, "> 0"),
    ("block_size", 0, "int >= 1"),
    ("placement_stride", 1.5, "int >= 1"),
    ("boost_bias", -0.1, ">= 0"),
    ("guidance_floor", 2.0, "(0.0, 1.0]"),
    ("unclaimed_min_lift", -0.1, "[0, 1) or None"),
    ("unclaimed_min_size", 0, "int >= 1"),
    # old names: the error names the value as the user wrote it, and the new name
    ("tau", 1.5, "deprecated name of 'focus_overlap'"),
    ("gamma", float("nan"), "deprecated name of 'sobel_weight'"),
    ("lam", -1.0, "deprecated name of 'temporal_weight'"),
    ("boost_k", -0.1, "deprecated name of 'boost_bias'"),
    ("delta_floor", 2.0, "deprecated name of 'guidance_floor'"),
])
def test_invalid_values_name_field_value_and_expectation(field, value, words):
    with pytest.raises(ValueError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        NuminaConfig(**{field: value})
    msg = str(err.value)
    assert f"NuminaConfig.{field}=" in msg and repr(value) in msg and words in msg


# --- renamed fields: the old names keep working, with a warning that names the new one ------
OLD_VALUES = {"tau": 0.35, "gamma": 2.5, "lam": 3.0, "delta_floor": 0.25, "boost_k": 1.7}


@pytest.mark.parametrize("old, new", sorted(RENAMED_FIELDS.items()))
def test_old_keyword_warns_and_sets_the_new_field(old, new):
    value = OLD_VALUES[old]
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated, use '{new}'"):
        cfg = NuminaConfig(**{old: value})
    assert getattr(cfg, new) == value and cfg == NuminaConfig(**{new: value})
    assert old not in cfg.as_dict() and cfg.as_dict()[new] == value


@pytest.mark.parametrize("old, new", sorted(RENAMED_FIELDS.items()))
def test_old_attribute_reads_the_new_field_with_a_warning(old, new):
    cfg = NuminaConfig(**{new: OLD_VALUES[old]})
    with pytest.warns(DeprecationWarning, match=f"use '{new}'"):
        assert getattr(cfg, old) == OLD_VALUES[old]


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = NuminaConfig(**{new: OLD_VALUES[old] for old, new in RENAMED_FIELDS.items()})
        dataclasses.replace(cfg, focus_overlap=0.5)
        NuminaConfig.from_dict(cfg.as_dict())


def test_replace_with_an_old_name_changes_only_that_field():
    cfg = NuminaConfig(focus_overlap=0.3, temporal_weight=2.0, cross_head="max")
    with pytest.warns(DeprecationWarning, match="use 'temporal_weight'"):
        changed = dataclasses.replace(cfg, lam=5.0)
    assert changed == NuminaConfig(focus_overlap=0.3, temporal_weight=5.0, cross_head="max")
    with pytest.warns(DeprecationWarning, match="use 'focus_overlap'"):
        assert NuminaConfig.paper(tau=0.4) == NuminaConfig.paper(focus_overlap=0.4)


def test_json_with_old_names_reads_back_with_a_warning():
    """A config saved before the renames (as older run.json files hold it) still loads."""
    saved = json.loads('{"tau": 0.3, "lam": 4.0, "boost_k": 0.8, "suppress_bias": -10000.0, '
                       '"cross_head": "max"}')
    with pytest.warns(DeprecationWarning) as record:
        cfg = NuminaConfig.from_dict(saved)
    assert cfg == NuminaConfig(focus_overlap=0.3, temporal_weight=4.0, boost_bias=0.8, cross_head="max")
    said = " ".join(str(w.message) for w in record)
    assert all(name in said for name in ("focus_overlap", "temporal_weight", "boost_bias", "no effect"))
    assert NuminaConfig.from_dict(cfg.as_dict()) == cfg


def test_giving_an_old_name_and_its_new_name_differently_is_refused():
    with pytest.raises(TypeError, match="give 'focus_overlap' alone"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        NuminaConfig(tau=0.3, focus_overlap=0.5)


@pytest.mark.parametrize("make", [lambda: NuminaConfig(taus=0.2), lambda: NuminaConfig.from_dict({"taus": 0.2}),
                                  lambda: dataclasses.replace(NuminaConfig(), taus=0.2)])
def test_unknown_names_fail_listing_the_valid_ones(make):
    with pytest.raises(TypeError, match="unknown field 'taus'; valid fields: reference_step, .*focus_overlap"):
        make()


def test_suppress_bias_is_deprecated_because_suppression_is_always_minus_infinity():
    """The field was never read: suppressed columns leave the softmax (bias -inf). Giving it
    warns that it has no effect, reading it says what is used, and it changes nothing."""
    with pytest.warns(DeprecationWarning, match="no effect"):
        cfg = NuminaConfig(suppress_bias=-5.0)
    assert cfg == NuminaConfig() and "suppress_bias" not in cfg.as_dict()
    with pytest.warns(DeprecationWarning, match="no effect"):
        assert cfg.suppress_bias == float("-inf")


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


def test_cli_config_json_accepts_old_names_with_a_warning():
    """``numina generate --config '{"tau": 0.3}'`` keeps working (it warns), unknown names still fail."""
    from numina_hooks import cli

    with pytest.warns(DeprecationWarning, match="use 'focus_overlap'"):
        assert cli.parse_config_arg('{"tau": 0.3}') == NuminaConfig(focus_overlap=0.3)
    with pytest.raises(cli.CliError, match="unknown field 'taus'"):
        cli.parse_config_arg('{"taus": 0.3}')
