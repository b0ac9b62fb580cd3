"""The partition reads self-attention rows without each token's own key (``own_key``).

A head whose queries and keys share a per-token component spends much of every row on the
row's own key; how much varies from token to token, which scales each row's affinities to its
neighbours by a different factor. Left out and the rest renormalised, the rows read the same
whatever that share is."""

import numpy as np
import pytest
import torch

from numina_hooks.numina.attention_entries import MapSelfAttention, QKSelfAttention
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.layout import layout_from_attention
from numina_hooks.numina.partition import partition_from_qk, partition_heads
from test_identify_v2 import GRID, _cross, _heads


def _without_own_key(maps: torch.Tensor) -> torch.Tensor:
    n = maps.shape[-1]
    out = maps.double().masked_fill(torch.eye(n, dtype=torch.bool), 0.0)
    return out / out.sum(-1, keepdim=True)


def _qk(heads=3, n=40, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, n, d, generator=g)
    k = 0.5 * q + torch.randn(heads, n, d, generator=g)  # q and k share a per-token part
    return q, k


def _entries(source, n, heads):
    rows = torch.tensor([0, 3, 7, 7, 12, 39])
    cols = torch.tensor([1, 3, 2, 7, 30, 0])  # two own keys among them
    block_heads = torch.tensor([0, 2])
    block_rows = torch.tensor([[5, 6, 9, 5], [0, 1, 2, 3]])  # a repeated member included
    pick = torch.tensor([4, 8, 15])
    return source.pairs(rows, cols), source.blocks(block_heads, block_rows), source.mean_rows(pick), (
        rows, cols, block_heads, block_rows, pick)


@pytest.mark.parametrize("seed", [0, 1])
def test_both_sources_read_the_rows_without_their_own_key(seed):
    q, k = _qk(seed=seed)
    scale = 0.7
    exact = torch.softmax(q.double() @ k.double().transpose(1, 2) * scale, -1)
    maps = exact.float()
    want = _without_own_key(exact).float()
    assert exact.diagonal(dim1=1, dim2=2).mean() > 0.1  # the own keys take a good share
    heads, n = maps.shape[:2]
    for source in (MapSelfAttention(maps, exclude_own_key=True),
                   QKSelfAttention(q, k, scale, exclude_own_key=True)):
        pairs, blocks, mean, (rows, cols, bh, br, pick) = _entries(source, n, heads)
        torch.testing.assert_close(pairs, want[:, rows, cols], rtol=1e-4, atol=1e-7)
        assert (pairs[:, rows == cols] == 0).all()
        torch.testing.assert_close(blocks, want[bh[:, None, None], br[:, :, None], br[:, None, :]],
                                   rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mean, want[:, pick].mean(1), rtol=1e-4, atol=1e-7)



@pytest.mark.parametrize("exclude", [False, True])
def test_block_sums_are_the_weighted_row_sums_of_the_blocks(exclude):
    """``block_sums`` (the containment lift's reads) gives what reducing ``blocks`` gives, on
    both sources, with padding slots (weight 0, repeating a member) in the blocks; and a row
    holding nearly all of its mass on its own key keeps the rest as ``blocks`` does when
    that key is left out (it is left out before the sum, not subtracted after it)."""
    q, k = _qk(heads=3, n=40, d=8, seed=2)
    q[1, 5] *= 1.7  # token 5 of head 1 keeps all but 4e-5 of its row on itself
    k[1, 5] = q[1, 5]
    scale = 0.7
    exact = torch.softmax(q.double() @ k.double().transpose(1, 2) * scale, -1)
    assert 1e-5 < 1 - exact[1, 5, 5] < 1e-4
    want_map = _without_own_key(exact) if exclude else exact
    heads = torch.tensor([1, 0, 2])
    rows = torch.tensor([[5, 6, 9, 5], [0, 1, 2, 3], [7, 20, 21, 7]])  # slot 3: padding in rows 0, 2
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    real = weights > 0  # the padding rows' own sums are not meaningful
    block = want_map[heads[:, None, None], rows[:, :, None], rows[:, None, :]]  # [3, 4, 4]
    want_sums = (block * weights.double()[:, None, :]).sum(-1)
    want_own = block.diagonal(dim1=1, dim2=2)
    spiked = torch.zeros_like(real)
    spiked[0, 0] = True  # the float32 map resolves 1 - A[5, 5] to a few percent only
    for source in (MapSelfAttention(exact.float(), exclude_own_key=exclude),
                   QKSelfAttention(q, k, scale, exclude_own_key=exclude)):
        sums, own = source.block_sums(heads, rows, weights)
        ok = real & ~spiked if isinstance(source, MapSelfAttention) else real
        torch.testing.assert_close(sums[ok].double(), want_sums[ok], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(own[real].double(), want_own[real], rtol=1e-4, atol=1e-7)
        from_blocks = (source.blocks(heads, rows) * weights[:, None, :]).sum(-1)
        torch.testing.assert_close(sums[real], from_blocks[real], rtol=1e-5, atol=1e-9)
        # the spiked row, on the float32 map too: what it keeps off its own key to rounding
        torch.testing.assert_close(sums[spiked].double(), want_sums[spiked], rtol=1e-2, atol=0.0)

def test_kept_own_key_reads_the_softmax_rows_as_they_are():
    q, k = _qk()
    maps = torch.softmax(q @ k.transpose(1, 2) * 0.7, -1)
    for source in (MapSelfAttention(maps), QKSelfAttention(q, k, 0.7)):
        pairs, _, mean, (rows, cols, _, _, pick) = _entries(source, 40, 3)
        torch.testing.assert_close(pairs, maps[:, rows, cols], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(mean, maps[:, pick].mean(1), rtol=1e-4, atol=1e-7)


def test_partition_from_qk_without_own_key_matches_the_map():
    grid = (6, 9)
    q, k = _qk(heads=4, n=54, d=16, seed=3)
    maps = torch.softmax(q @ k.transpose(1, 2) * 0.5, -1)
    want = partition_heads(MapSelfAttention(maps, exclude_own_key=True), grid)
    got, _ = partition_from_qk(q, k, 0.5, grid, exclude_own_key=True)
    np.testing.assert_array_equal(got.regions, want.regions)
    np.testing.assert_allclose(got.thresholds, want.thresholds, rtol=1e-4, atol=1e-5)


def _spiked(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Every row moved a random share (0.5-0.98) of the way onto its own key."""
    n = maps.shape[1]
    g = torch.Generator().manual_seed(seed)
    share = 0.5 + 0.48 * torch.rand(maps.shape[0], n, 1, generator=g, dtype=torch.float64)
    return ((1 - share) * maps.double() + share * torch.eye(n, dtype=torch.float64)).float()


def test_own_key_spikes_do_not_change_the_layout():
    labels = np.zeros(GRID, dtype=np.int64)
    labels[1:4, 1:4] = 1
    labels[4:7, 7:11] = 2
    sa = _heads(labels, 2, ["positional", "diffuse", "instance", "positional"])
    cross = _cross(labels, 4)
    clean = layout_from_attention(sa, cross, GRID)
    assert clean.count == 2 and clean.self_head == 2
    kept_counts = []
    for seed in range(5):
        spiked = _spiked(sa, seed)
        layout = layout_from_attention(spiked, cross, GRID)
        assert layout.self_head == 2
        np.testing.assert_array_equal(layout.labels, clean.labels)
        kept_counts.append(layout_from_attention(spiked, cross, GRID, NuminaConfig(own_key="kept")).count)
    # the rows as the softmax gives them lose an object or both on some of these seeds
    assert any(c != 2 for c in kept_counts), kept_counts


def test_own_key_setting_is_checked_and_the_paper_keeps_it():
    with pytest.raises(ValueError, match="own_key"):
        NuminaConfig(own_key="dropped")
    assert NuminaConfig().own_key == "excluded"
    assert NuminaConfig.paper().own_key == "kept"


def test_a_one_token_frame_without_its_own_key_is_refused():
    q = torch.randn(2, 1, 4)
    with pytest.raises(ValueError, match="more than one"):
        QKSelfAttention(q, q, 0.5, exclude_own_key=True)
