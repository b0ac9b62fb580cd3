"""``peaks.flood_peaks``: the vectorised watershed behind ``layout.cross_peaks`` gives what a
pixel-by-pixel flood gives, ties and borders included, and splits bumps only at deep saddles."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from numina_hooks.numina.peaks import flood_peaks

EIGHT = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def flood_one_by_one(img, base, rise):
    """The flood written out pixel by pixel, highest first (ties: lower raster index), as
    ``flood_peaks`` documents it: the reference the vectorised version must equal."""
    H, W = img.shape
    flat = img.reshape(-1)
    above = np.flatnonzero(flat >= base)
    order = above[np.argsort(-flat[above], kind="stable")]
    part, peak_of_pixel, alias, top, kept = {}, {}, {}, {}, set()

    def root(a):
        while part[a] != a:
            a = part[a]
        return a

    def resolve(p):
        while p in alias:
            p = alias[p]
        return p

    for i in order.tolist():
        y, x = divmod(i, W)
        near = [(y + dy) * W + x + dx for dy, dx in EIGHT
                if 0 <= y + dy < H and 0 <= x + dx < W and (y + dy) * W + x + dx in part]
        if not near:
            part[i], peak_of_pixel[i], top[i] = i, i, i
            continue
        way_up = max(near, key=lambda j: (flat[j], -j))
        peak_of_pixel[i] = peak_of_pixel[way_up]
        roots = sorted({root(j) for j in near}, key=lambda r: (-flat[top[r]], top[r]))
        part[i] = roots[0]
        for low in roots[1:]:
            part[low] = roots[0]
            low_peak = top.pop(low)
            if flat[low_peak] - flat[i] >= rise:
                kept.add(low_peak)
            else:
                alias[low_peak] = top[roots[0]]
    kept |= {p for p in top.values() if flat[p] - base >= rise}
    ids = {p: k for k, p in enumerate(sorted(kept), start=1)}
    out = np.zeros(H * W, dtype=np.int64)
    for i, p in peak_of_pixel.items():
        out[i] = ids.get(resolve(p), 0)
    return out.reshape(H, W)


def _maps():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (15, 26), (1, 9), (9, 1), (2, 2), (12, 12)]:
        for k in range(12):
            m = rng.random(shape)
            if k % 3 == 1:
                m = gaussian_filter(m, 1.5)
            elif k % 3 == 2:
                m = np.round(m * 4) / 4  # plateaus: ties everywhere
            yield m


@pytest.mark.parametrize("base_share,rise_share", [(0.0, 0.1), (0.3, 0.2), (0.5, 0.0), (0.1, 0.05)])
def test_equals_the_pixel_by_pixel_flood(base_share, rise_share):
    for m in _maps():
        lo, hi = float(m.min()), float(m.max())
        base, rise = lo + base_share * (hi - lo), rise_share * (hi - lo)
        np.testing.assert_array_equal(flood_peaks(m, base, rise), flood_one_by_one(m, base, rise))


def _two_bumps():
    """Two Gaussian bumps of height 1 on a 20x40 grid, and how deep their saddle (at 0.25)
    lies under them."""
    y, x = np.mgrid[0:20, 0:40]
    left = np.exp(-((y - 10) ** 2 + (x - 15) ** 2) / 18.0)
    right = np.exp(-((y - 10) ** 2 + (x - 25) ** 2) / 18.0)
    img = np.maximum(left, right)
    return img, 1.0 - img[10, 20]


def test_deep_saddle_splits_and_shallow_saddle_joins():
    img, depth = _two_bumps()
    two = flood_peaks(img, 0.1, depth - 0.05)
    assert two.max() == 2
    assert two[10, 15] != two[10, 25] and two[10, 15] > 0 and two[10, 25] > 0
    one = flood_peaks(img, 0.1, depth + 0.05)  # too shallow: one bump, kept (0.9 over the base)
    assert one.max() == 1 and one[10, 15] == one[10, 25] == 1
    assert one[0, 0] == 0  # under the base


def test_nothing_above_the_base_and_a_low_lone_bump():
    img, _ = _two_bumps()
    assert flood_peaks(img, 2.0, 0.1).max() == 0
    # a bump that rises less than ``rise`` above the base is not kept
    assert flood_peaks(img * 0.2, 0.15, 0.1).max() == 0
    assert flood_peaks(img * 0.2, 0.02, 0.1).max() == 2
