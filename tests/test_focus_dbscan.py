"""The focus mask's density clustering (``layout.dbscan_members``): the same pixels as
scikit-learn's DBSCAN on the patch coordinates, computed with grid filters."""

import numpy as np
import pytest
from sklearn.cluster import DBSCAN  # the reference (scikit-learn is in the test extra)

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import dbscan_members, focus_mask


def _sklearn_members(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    out = np.zeros_like(points)
    coords = np.argwhere(points)
    if len(coords):
        lab = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coords)
        keep = coords[lab >= 0]
        out[keep[:, 0], keep[:, 1]] = True
    return out


@pytest.mark.parametrize("eps", [1.0, 1.5, float(np.sqrt(2.0)), 2.0, 2.3, 3.2])
@pytest.mark.parametrize("min_samples", [1, 2, 3, 5, 9])
def test_members_match_sklearn_dbscan(eps, min_samples):
    rng = np.random.default_rng(int(eps * 10) * 100 + min_samples)
    for density in (0.05, 0.15, 0.35, 0.6):
        points = rng.random((15, 26)) < density
        np.testing.assert_array_equal(dbscan_members(points, eps, min_samples),
                                      _sklearn_members(points, eps, min_samples))


def test_isolated_specks_are_noise_and_a_blob_with_its_rim_is_kept():
    points = np.zeros((12, 12), dtype=bool)
    points[2:6, 2:6] = True  # a blob: every pixel is core
    points[9, 9] = True  # a lone speck
    points[6, 6] = True  # touches the blob's corner: a border pixel, kept
    got = dbscan_members(points, 1.5, 3)
    assert got[2:6, 2:6].all() and got[6, 6]
    assert not got[9, 9]
    assert got.sum() == 17


def test_focus_mask_of_a_blurry_map_with_a_speck():
    ys, xs = np.mgrid[0:20, 0:30]
    cross = np.exp(-((ys - 8) ** 2 + (xs - 10) ** 2) / 8.0)
    cross[17, 27] = 1.0  # one bright patch alone: density noise
    focus = focus_mask(cross.astype(np.float32), (20, 30), NuminaConfig())
    assert focus[8, 10] and not focus[17, 27]
    assert focus.sum() > 5
