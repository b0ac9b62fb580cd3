"""Region numbering of every head at once (``partition._ids_per_row``, and ``_relabel`` /
``_renumbered``, its one-row cases) and the per-head region contrast, against plain one-head
references."""

import numpy as np
import pytest

from numina_hooks.numina.partition import _ids_per_row, _regions_to_ids, _relabel, _renumbered


def _numbered_one_row(row, keep_sizes=None, zero_is_region=False):
    """The numbering written plainly: each kept label of ``row`` gets 1, 2, ... in the order
    of its first pixel."""
    out = np.zeros(len(row), dtype=np.int32)
    labels, first, size = np.unique(row, return_index=True, return_counts=True)
    kept = [(f, lab) for lab, f, n in zip(labels, first, size)
            if (zero_is_region or lab != 0) and (keep_sizes is None or keep_sizes[0] <= n <= keep_sizes[1])]
    for new, (_, lab) in enumerate(sorted(kept), start=1):
        out[row == lab] = new
    return out


def _contrast_one_head(lab, p, q, v):
    m = int(lab.max()) + 1
    lp, lq = lab[p], lab[q]
    inside = (lp == lq) & (lp > 0)
    n_in = np.bincount(lp[inside], minlength=m)
    s_in = np.bincount(lp[inside], weights=v[inside], minlength=m)
    cross = lp != lq
    ends = np.concatenate([lp[cross], lq[cross]])
    n_b = np.bincount(ends, minlength=m)
    s_b = np.bincount(ends, weights=np.concatenate([v[cross], v[cross]]), minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(n_in > 0, s_in / np.maximum(n_in, 1), 0.0) - np.where(n_b > 0, s_b / np.maximum(n_b, 1), 0.0)
    c[0] = 0.0
    return c


def test_component_ids_of_every_head_at_once_match_each_head_numbered_alone():
    rng = np.random.default_rng(0)
    # component ids as the graph search gives them: every pixel in one, ids shared by no two heads
    comp = np.stack([rng.integers(0, 40, 300) + 1000 * k for k in range(6)])
    comp[2] = 7  # a head that is one component
    for keep in ((1, 300), (4, 20), (12, 12)):
        got = _ids_per_row(comp, keep, zero_is_region=True)
        want = np.stack([_numbered_one_row(row, keep, zero_is_region=True) for row in comp])
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.stack([_relabel(row, keep) for row in comp]), want)


def test_region_maps_renumbered_at_once_match_each_head_numbered_alone():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 9, (5, 200)) * rng.integers(0, 2, (5, 200))  # 0 = no region
    labels[3] = 0  # a head with no region
    labels[4, :] = 0
    labels[4, 150] = 70  # one big id at the end
    want = np.stack([_numbered_one_row(r) for r in labels])
    np.testing.assert_array_equal(_ids_per_row(labels), want)
    np.testing.assert_array_equal(np.stack([_renumbered(r) for r in labels]), want)
    assert _ids_per_row(labels)[4, 150] == 1


def test_raster_order_of_first_pixel_not_id_order():
    labels = np.array([[0, 5, 5, 2, 2, 9], [3, 0, 1, 1, 3, 0]])
    np.testing.assert_array_equal(_ids_per_row(labels), [[0, 1, 1, 2, 2, 3], [1, 0, 2, 2, 1, 0]])
    # a 2-D map keeps its shape, numbered in raster order over the whole map
    np.testing.assert_array_equal(_renumbered(labels[0].reshape(2, 3)), [[0, 1, 1], [2, 2, 3]])
    keep = np.zeros(10, dtype=bool)
    keep[[2, 5, 9]] = True
    np.testing.assert_array_equal(_ids_per_row(labels)[0], _regions_to_ids(labels[0], keep))


def test_contrast_of_every_head_at_once_matches_each_head_alone():
    from numina_hooks.numina.partition import _grid_index, _region_contrast
    H, W = 6, 9
    idx = _grid_index(H, W)
    p = np.concatenate([idx[:, :-1].reshape(-1).numpy(), idx[:-1, :].reshape(-1).numpy()])
    q = np.concatenate([idx[:, 1:].reshape(-1).numpy(), idx[1:, :].reshape(-1).numpy()])
    rng = np.random.default_rng(2)
    regions = rng.integers(0, 4, (4, H * W)).astype(np.int32)
    regions[1] = 0  # no region at all
    values = rng.standard_normal((4, len(p)))
    got = _region_contrast(regions, values, p, q)
    assert [len(c) for c in got] == [int(r.max()) + 1 for r in regions]
    for k in range(4):
        np.testing.assert_allclose(got[k], _contrast_one_head(regions[k], p, q, values[k]), rtol=0, atol=1e-12)


# --- the counting stand-ins for np.unique (2026-12-05: ids counted per value, not sorted) ---

from hypothesis import given, settings, strategies as st  # noqa: E402

from numina_hooks.numina.order_stats import median, percentile  # noqa: E402
from numina_hooks.numina.partition import (_components, _sorted_runs, _sparse_components,  # noqa: E402
                                           _unique_first_counts, _unique_small)

id_arrays = st.lists(st.integers(0, 60), min_size=1, max_size=80).map(lambda v: np.asarray(v, dtype=np.int64))


@settings(max_examples=200, deadline=None)
@given(keys=id_arrays)
def test_the_counted_uniques_equal_numpy_unique(keys):
    uniq, first, inv, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    for got, want in zip(_unique_first_counts(keys), (uniq, first, inv, counts)):
        assert np.array_equal(got, want)
    small_uniq, small_inv = _unique_small(keys)
    assert np.array_equal(small_uniq, uniq) and np.array_equal(small_inv, inv)
    ordered = np.sort(keys)
    run_keys, run_start, run_length = _sorted_runs(ordered)
    want_keys, want_start, want_length = np.unique(ordered, return_index=True, return_counts=True)
    assert np.array_equal(run_keys, want_keys) and np.array_equal(run_start, want_start)
    assert np.array_equal(run_length, want_length)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=1, max_size=60),
       q=st.sampled_from([0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 100.0, 33.3]))
def test_the_layouts_percentiles_are_numpys_bit_for_bit(values, q):
    x = np.asarray(values)
    assert percentile(x, q) == float(np.percentile(x, q))
    assert median(values) == float(np.median(x))


def test_a_percentile_of_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        percentile(np.zeros(0), 90)
    with pytest.raises(ValueError, match="empty"):
        median([])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 80), data=st.data())
def test_components_of_few_edges_name_each_node_by_its_components_smallest_node(n, data):
    edges = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=120))
    src, dst = (np.asarray(v, dtype=np.int64) for v in zip(*edges))
    comp = _components(n, src, dst)  # scipy's labels: any id per component
    smallest = np.array([np.flatnonzero(comp == comp[i]).min() for i in range(n)])
    on_edge = np.zeros(n, dtype=bool)
    on_edge[src] = on_edge[dst] = True
    want = np.where(on_edge, smallest, np.arange(n))
    assert np.array_equal(_sparse_components(n, src, dst), want)


def test_ids_spread_far_beyond_their_number_fall_back_to_sorting():
    keys = np.array([5, 10**9, 5, 3], dtype=np.int64)  # counting per value would need 1e9 bins
    uniq, first, inv, counts = _unique_first_counts(keys)
    assert uniq.tolist() == [3, 5, 10**9] and first.tolist() == [3, 0, 1]
    assert inv.tolist() == [1, 2, 1, 0] and counts.tolist() == [1, 2, 1]
