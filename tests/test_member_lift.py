"""A region counts as an object only when its rows attend to each other, not each to itself
(``NuminaConfig.min_member_lift``, ``partition.fill_lift``), on hand-built maps with known
entries."""

import numpy as np
import torch

from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.partition import HeadPartitions, _as_source, _containment_lift, fill_lift

H, W = 12, 16
N = H * W


def _block(y0: int, x0: int, h: int, w: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(y0, y0 + h), np.arange(x0, x0 + w), indexing="ij")
    return (ys * W + xs).reshape(-1)


GROUP = _block(2, 2, 2, 3)  # 6 patches whose rows share 0.6 of their attention
SPIKES = _block(8, 10, 2, 3)  # 6 patches whose rows put 0.6 on their own key alone


def _frame() -> torch.Tensor:
    """One head ``[1, N, N]``: the rest of every row spread evenly over the frame."""
    a = np.full((N, N), 0.4 / N)
    a[np.ix_(GROUP, GROUP)] += 0.6 / len(GROUP)
    a[SPIKES, SPIKES] += 0.6
    rest = np.setdiff1d(np.arange(N), np.concatenate([GROUP, SPIKES]))
    a[rest] = 1.0 / N
    assert np.allclose(a.sum(1), 1.0)
    return torch.from_numpy(a[None]).float()


def _parts() -> HeadPartitions:
    regions = np.zeros((1, H, W), dtype=np.int32)
    regions.reshape(1, -1)[0, GROUP] = 1
    regions.reshape(1, -1)[0, SPIKES] = 2
    return HeadPartitions(regions=regions, lift=[np.full(3, np.nan)], contrast=[np.zeros(3)],
                          sink=[np.zeros(3, dtype=bool)], thresholds=np.zeros(1, np.float32),
                          sink_keys=np.zeros((1, N), dtype=bool))


def test_lift_from_other_members_tells_a_group_from_self_spikes():
    lift, members = _containment_lift(_as_source(_frame()), _parts().regions.reshape(1, -1), 16, (H, W))
    # both keep 0.6 of a row inside themselves, well above a copy moved by half their box
    # (which overlaps them by one row or column)
    assert lift[0][1] > 0.4 and lift[0][2] > 0.3
    # on the other members the group keeps most of it, the spikes nothing beyond the copy
    assert members[0][1] > 0.4
    assert members[0][2] <= 0.0


def test_the_member_check_drops_a_region_of_self_spikes_that_the_lift_alone_keeps():
    # opt-in since 2026-12-03 (a share of a row, it also removed a diffuse head's objects)
    assert NuminaConfig().min_member_lift is None
    min_lift = NuminaConfig().min_lift
    plain = _parts()
    fill_lift(plain, _frame(), None, 16, min_member_lift=None)
    assert (plain.lift[0][1:] > min_lift).all()  # without the check both pass as objects
    checked = _parts()
    fill_lift(checked, _frame(), None, 16, min_member_lift=0.005)
    assert checked.lift[0][1] > min_lift
    assert checked.lift[0][2] == -np.inf


def _exact_lifts(a: np.ndarray, regions: np.ndarray) -> tuple[dict, dict]:
    """The containment lift and member lift of every (head, region), every member read, from
    their definition: what a region's rows keep inside it minus the mean over the moves by
    half its box that stay on the grid (``a``: [heads, N, N], ``regions``: [heads, N])."""
    lifts, members = {}, {}
    for k in range(a.shape[0]):
        for r in range(1, int(regions[k].max()) + 1):
            pix = np.nonzero(regions[k] == r)[0]
            if len(pix) == 0:
                continue
            ys, xs = pix // W, pix % W
            bh, bw = (ys.max() - ys.min() + 2) // 2, (xs.max() - xs.min() + 2) // 2
            moves = [(dy, dx) for dy, dx, ok in ((bh, 0, ys.max() + bh < H), (-bh, 0, ys.min() - bh >= 0),
                                                 (0, bw, xs.max() + bw < W), (0, -bw, xs.min() - bw >= 0)) if ok]
            assert moves, "a region too large to move is compared with the all-head mean"

            def kept(p):
                block = a[k][np.ix_(p, p)]
                return block.sum() / len(p), (block.sum() - np.trace(block)) / len(p)
            inside = kept(pix)
            moved = [kept(pix + dy * W + dx) for dy, dx in moves]
            lifts[k, r] = inside[0] - np.mean([m[0] for m in moved])
            members[k, r] = inside[1] - np.mean([m[1] for m in moved])
    return lifts, members


def test_lifts_of_regions_of_every_size_match_their_definition():
    # regions of 1 to 30 members in 3 heads, read on blocks of different widths at once
    rng = np.random.default_rng(0)
    a = torch.softmax(torch.from_numpy(rng.normal(0, 2.0, size=(3, N, N))), -1).float()
    regions = np.zeros((3, N), dtype=np.int64)
    boxes = [(0, 0, 1, 1), (0, 3, 2, 2), (4, 0, 3, 3), (1, 7, 3, 4), (6, 6, 5, 6)]
    for k in range(3):
        for r, (y0, x0, h, w) in enumerate(boxes[k:], start=1):
            regions[k, _block(y0, x0, h, w)] = r
    lift, member = _containment_lift(_as_source(a), regions, 64, (H, W))
    want_lift, want_member = _exact_lifts(a.double().numpy(), regions)
    assert len(want_lift) == 12
    for (k, r), v in want_lift.items():
        assert abs(lift[k][r] - v) < 1e-5, (k, r)
        assert abs(member[k][r] - want_member[k, r]) < 1e-5, (k, r)
