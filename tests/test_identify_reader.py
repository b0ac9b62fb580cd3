"""The identify reader from q/k (no [heads, HW, HW] map) gives the layouts of the map path."""

import numpy as np
import pytest
import torch

import numina_hooks
from numina_hooks import testing
from numina_hooks.numina.attention_entries import MapSelfAttention, QKSelfAttention
from numina_hooks.numina.config import NuminaConfig
from numina_hooks.numina.identify import LayoutReader
from numina_hooks.numina.partition import (_containment_lift, fill_lift, partition_from_qk,
                                           partition_heads)


def scene_qk(grid, heads=6, dim=32, seed=0, dtype=torch.bfloat16):
    """q, k ``[heads, N, dim]`` of a frame with a few rectangular objects: tokens of one
    object share a random direction (stronger in some heads), plus noise."""
    g = torch.Generator().manual_seed(seed)
    H, W = grid
    labels = torch.zeros(H, W, dtype=torch.long)
    for obj in range(1, 4):
        y, x = torch.randint(0, H - 3, (1,), generator=g).item(), torch.randint(0, W - 3, (1,), generator=g).item()
        labels[y:y + 3, x:x + 2 + obj % 2] = obj
    base = torch.randn(4, dim, generator=g)
    strength = torch.linspace(0.3, 2.0, heads)[:, None, None]  # logits up to ~25
    emb = base[labels.reshape(-1)][None] * strength
    q = emb + torch.randn(heads, H * W, dim, generator=g)
    k = emb + torch.randn(heads, H * W, dim, generator=g)
    return q.to(dtype), k.to(dtype)


def softmax_map(q, k, scale):
    return torch.softmax(q.float() @ k.float().transpose(1, 2) * scale, -1)


def assert_same_partitions(want, got):
    np.testing.assert_array_equal(got.regions, want.regions)
    np.testing.assert_allclose(got.thresholds, want.thresholds, rtol=1e-5, atol=1e-5)
    for a, b in zip(want.lift, got.lift):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # -inf (sinks) compared as equal
    for a, b in zip(want.contrast, got.contrast):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(want.sink, got.sink):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("grid,seed,chunk", [((9, 13), 0, 1 << 20), ((12, 10), 1, 50), ((8, 11), 2, 11),
                                             ((9, 13), 3, 117 * 50)])
def test_partition_from_qk_matches_the_map(grid, seed, chunk, monkeypatch):
    import numina_hooks.numina.attention_entries as entries
    monkeypatch.setattr(entries, "CHUNK_ELEMENTS", chunk)  # all rows, one row, 50 + 50 + 17 rows
    q, k = scene_qk(grid, seed=seed)
    scale = q.shape[-1] ** -0.5
    maps = softmax_map(q, k, scale)
    want = partition_heads(maps, grid)
    fill_lift(want, maps, None, 4)
    got, source = partition_from_qk(q, k, scale, grid)
    fill_lift(got, source, None, 4)
    assert want.regions.max() >= 1, "the scene should give regions, else the check is empty"
    assert any(np.isfinite(x[1:]).any() for x in want.lift)
    assert_same_partitions(want, got)


def test_lift_of_a_region_is_the_attention_kept_inside_it_minus_the_moved_copy():
    grid = (6, 8)
    q, k = scene_qk(grid, heads=2, seed=3, dtype=torch.float32)
    maps = softmax_map(q, k, 0.3)
    regions = np.zeros((2, 48), dtype=np.int64)
    box = np.zeros((6, 8), dtype=bool)
    box[1:3, 2:5] = True  # 2 x 3 box: moves by 1 row down/up and 2 columns right/left
    regions[1][box.reshape(-1)] = 1
    inside = [np.flatnonzero(box)]
    moved = [np.flatnonzero(np.roll(box, s, axis=a)) for s, a in ((1, 0), (-1, 0), (2, 1), (-2, 1))]
    a = maps[1].double().numpy()
    keep = lambda pix: a[np.ix_(pix, pix)].sum(1).mean()  # noqa: E731
    want = keep(inside[0]) - np.mean([keep(p) for p in moved])
    for source in (MapSelfAttention(maps), QKSelfAttention(q, k, 0.3)):
        got, _ = _containment_lift(source, regions, sample=16, grid=grid)
        # float32 maps: the lift is a difference of two sums of ~0.5, so compare absolutely
        assert got[1][1] == pytest.approx(want, rel=0, abs=2e-6)


def test_a_region_too_large_to_move_is_compared_with_the_all_head_mean():
    grid = (5, 5)
    q, k = scene_qk(grid, heads=3, seed=4, dtype=torch.float32)
    maps = softmax_map(q, k, 0.25)
    cross = np.zeros((5, 5), dtype=bool)
    cross[2, :] = True
    cross[:, 2] = True  # spans the grid both ways: no move stays on it
    regions = np.zeros((3, 25), dtype=np.int64)
    regions[0][cross.reshape(-1)] = 1
    pix = np.flatnonzero(cross)
    a = maps.double().numpy()
    want = a[0][np.ix_(pix, pix)].sum(1).mean() - a.mean(0)[np.ix_(pix, pix)].sum(1).mean()
    for source in (MapSelfAttention(maps), QKSelfAttention(q, k, 0.25)):
        got, _ = _containment_lift(source, regions, sample=16, grid=grid)
        assert got[0][1] == pytest.approx(want, rel=1e-5)


def test_blocks_of_a_strided_map_equal_those_of_its_contiguous_copy():
    # the contiguous map is gathered through its flat view, a strided one with ``take``:
    # both must give A[head, rows, rows] exactly
    grid = (6, 8)
    q, k = scene_qk(grid, heads=3, seed=6, dtype=torch.float32)
    maps = softmax_map(q, k, 0.3)
    strided = maps.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not strided.is_contiguous()
    heads = torch.tensor([2, 0, 1])
    rows = torch.tensor([[0, 5, 9, 47], [3, 3, 10, 20], [1, 2, 3, 4]])
    want = torch.stack([maps[h][r][:, r] for h, r in zip(heads, rows)])
    for exclude in (False, True):
        a = MapSelfAttention(maps, exclude_own_key=exclude).blocks(heads, rows)
        b = MapSelfAttention(strided, exclude_own_key=exclude).blocks(heads, rows)
        assert torch.equal(a, b)
        if not exclude:
            assert torch.equal(a, want)


def test_large_regions_are_sampled_alike_from_the_map_and_from_qk():
    grid = (10, 10)
    q, k = scene_qk(grid, heads=2, seed=5, dtype=torch.float32)
    maps = softmax_map(q, k, 0.2)
    regions = np.zeros((2, 100), dtype=np.int64)
    regions[0, :30] = 1  # 30 members, 5 used
    regions[1, 50:53] = 2  # 3 members, all used
    want, _ = _containment_lift(MapSelfAttention(maps), regions, sample=5, grid=grid)
    got, _ = _containment_lift(QKSelfAttention(q, k, 0.2), regions, sample=5, grid=grid)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # shares of a row
    assert want[0][1] != 0 and want[1][2] != 0


def test_a_constant_self_attention_is_refused_naming_the_frame():
    q = torch.zeros(2, 16, 8)
    with pytest.raises(ValueError, match="self-attention of frame 3 is constant"):
        partition_from_qk(q, torch.randn(2, 16, 8), 0.5, (4, 4), name="self-attention of frame 3")


def test_bad_qk_shapes_and_scale_are_refused():
    with pytest.raises(ValueError, match=r"expected \[heads, 16, d\] for the grid 4x4"):
        partition_from_qk(torch.randn(2, 15, 8), torch.randn(2, 15, 8), 0.5, (4, 4))
    with pytest.raises(ValueError, match="must both be"):
        QKSelfAttention(torch.randn(2, 16, 8), torch.randn(2, 16, 4), 0.5)
    with pytest.raises(ValueError, match="scale=0"):
        QKSelfAttention(torch.randn(2, 16, 8), torch.randn(2, 16, 8), 0)


def _read_both(pipe, call, columns):
    readers = {}
    for source in ("maps", "qk"):
        r = LayoutReader(columns, step=1, layer=1, config=NuminaConfig())
        r.self_source = source
        readers[source] = r
    with numina_hooks.attach(pipe) as handle:
        for r in readers.values():
            handle.register(r)
        pipe.set_progress_bar_config(disable=True)
        pipe(prompt="three cats chasing two dogs", generator=torch.Generator().manual_seed(0),
             **{**call, "output_type": "latent", "num_inference_steps": 2})
    return readers["maps"], readers["qk"]


@pytest.mark.parametrize("build,call", [
    (lambda: testing.tiny_wan_pipeline(heads=4, head_dim=16), dict(testing.WAN_CALL, height=96, width=96)),
    (lambda: testing.tiny_cogvideox_pipeline(heads=4), testing.COGVIDEOX_CALL),
], ids=["wan", "cogvideox-joint"])
def test_the_reader_reads_the_same_layouts_from_qk_as_from_maps(build, call):
    maps, qk = _read_both(build(), call, {"cats": [1], "dogs": [4]})
    assert maps.done and qk.done and len(qk.frames) == len(maps.frames) >= 2
    assert any(fr.partitions.regions.max() > 0 for fr in maps.frames), "nothing to compare"
    for a, b in zip(maps.frames, qk.frames):
        assert_same_partitions(a.partitions, b.partitions)
        assert b.self_head == a.self_head
    for noun in maps.nouns:
        assert qk.nouns[noun].frame_counts == maps.nouns[noun].frame_counts
        for la, lb in zip(maps.nouns[noun].labels, qk.nouns[noun].labels):
            np.testing.assert_array_equal(lb, la)
    # the q/k (or maps) kept for the left-over focus (unclaimed_min_lift) are released once
    # the layout is built
    assert maps._layer_sources == {} and qk._layer_sources == {}


def test_an_unknown_self_source_is_a_clear_error():
    pipe = testing.tiny_wan_pipeline(heads=2, head_dim=8)
    r = LayoutReader({"cats": [1]}, step=0, layer=0, config=NuminaConfig())
    r.self_source = "map"
    with numina_hooks.attach(pipe) as handle:
        handle.register(r)
        pipe.set_progress_bar_config(disable=True)
        with pytest.raises(ValueError, match=r"self_source='map'; expected 'qk'"):
            pipe(prompt="three cats", **{**testing.WAN_CALL, "output_type": "latent",
                                          "num_inference_steps": 1})


def _view(kind, layout):
    from numina_hooks.context import CallContext, Geometry
    from numina_hooks.views import AttentionView, Site
    g = torch.Generator().manual_seed(7)
    geo = Geometry(frames=3, height=3, width=4, text_tokens=5)
    ctx = CallContext(transformer="transformer", step=0, num_steps=2, timestep=1.0, sigma=1.0,
                      branch=("uncond", "cond"), geometry=geo)
    q = torch.randn(2, 5 + 36, 3, 8, generator=g)  # [B, L, H, d]: 5 text tokens, then video
    if layout == "BHLD":
        q = q.transpose(1, 2)
    video = slice(5, 41)
    return AttentionView(site=Site(0, "joint", "blocks.0.attn", "transformer"), kind=kind, context=ctx,
                         q=q, k=q * 0.7 + 0.1, v=q, layout=layout, scale=0.4, video_queries=video,
                         text_keys=slice(0, 5) if kind == "cross" else None,
                         video_keys=video if kind == "self" else None)


@pytest.mark.parametrize("layout", ["BLHD", "BHLD"])
def test_self_attention_qk_gives_the_map_of_self_attention_map(layout):
    view = _view("self", layout)
    for frame in range(3):
        q, k = view.self_attention_qk(frame, batch=[1], heads=[0, 2])
        assert q.shape == k.shape == (1, 2, 12, 8)
        got = torch.softmax(q @ k.transpose(-1, -2) * view.scale, -1)
        torch.testing.assert_close(got, view.self_attention_map(frame, batch=[1], heads=[0, 2]))
    with pytest.raises(ValueError, match="frame=3 is out of range"):
        view.self_attention_qk(3)
    with pytest.raises(ValueError, match="is a cross-attention"):
        _view("cross", layout).self_attention_qk(0)


def test_cross_maps_of_several_nouns_equal_each_alone():
    pipe = testing.tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    seen = []

    class Grab:
        @numina_hooks.hookimpl
        def on_attention(self, view):
            if view.kind == "cross" and not seen:
                seen.append((view.cross_attention_maps([[1, 2], [4]], batch=[0]),
                             view.cross_attention_map([1, 2], batch=[0]), view.cross_attention_map([4], batch=[0])))

    with numina_hooks.attach(pipe, Grab()) as handle:
        handle(prompt="three cats chasing two dogs", generator=torch.Generator().manual_seed(0),
               **dict(testing.WAN_CALL, num_inference_steps=1, output_type="latent"))
    (both, one, two), = seen
    assert torch.equal(both[0], one) and torch.equal(both[1], two)


def _read_layers(pipe, call, columns, layer_sets):
    """One reader per entry of ``layer_sets`` (an int or a tuple of blocks), in one generation."""
    readers = [LayoutReader(columns, step=1, layer=layers, config=NuminaConfig()) for layers in layer_sets]
    with numina_hooks.attach(pipe) as handle:
        for r in readers:
            handle.register(r)
        pipe.set_progress_bar_config(disable=True)
        pipe(prompt="three cats chasing two dogs", generator=torch.Generator().manual_seed(0),
             **{**call, "output_type": "latent", "num_inference_steps": 2})
    return readers


def test_reading_several_blocks_pools_their_heads_and_averages_their_cross_attention():
    pipe = testing.tiny_wan_pipeline(num_layers=3, heads=4, head_dim=16)
    first, last, both = _read_layers(pipe, dict(testing.WAN_CALL, height=96, width=96),
                                     {"cats": [1], "dogs": [4]}, [0, 2, (2, 0)])
    assert both.layers == (0, 2) and both.done and len(both.frames) == len(first.frames) >= 2
    heads = first.frames[0].partitions.regions.shape[0]
    for f, fr in enumerate(both.frames):
        # every head of block 0, then every head of block 2, as each block alone reads them
        np.testing.assert_array_equal(fr.partitions.regions, np.concatenate(
            [first.frames[f].partitions.regions, last.frames[f].partitions.regions]))
    chosen = 0
    for noun, r in both.nouns.items():
        for f, (head, layer) in enumerate(zip(r.self_heads, r.self_layers)):
            # each noun's head is a head of one of the blocks read, shown by its regions
            assert (head, layer) == (-1, -1) or (layer in (0, 2) and 0 <= head < heads)
            if head >= 0:
                chosen += 1
                pooled = head + (heads if layer == 2 else 0)
                assert r.pca_rgb[f].shape == (*both.grid, 3)
                assert len(np.unique(r.pca_rgb[f].reshape(-1, 3), axis=0)) == len(
                    np.unique(both.frames[f].partitions.regions[pooled]))
    assert chosen > 0
    for noun in both.nouns:
        for f in range(len(both.frames)):
            want = (first.nouns[noun].cross_maps[f] + last.nouns[noun].cross_maps[f]) / 2
            np.testing.assert_allclose(both.nouns[noun].cross_maps[f], want, rtol=1e-5, atol=1e-7)


def test_reading_layers_resolve_to_consecutive_blocks_around_the_reference():
    assert NuminaConfig(reading_layers=3).resolve_layers(30) == (14, 15, 16)
    assert NuminaConfig(reading_layers=4, reference_layer=0.5).resolve_layers(6) == (2, 3, 4, 5)
    assert NuminaConfig(reading_layers=3, reference_layer=0).resolve_layers(6) == (0, 1, 2)
    assert NuminaConfig(reading_layers=9).resolve_layers(6) == (0, 1, 2, 3, 4, 5)
    assert NuminaConfig().resolve_layers(30) == (15,)
    with pytest.raises(ValueError, match="reading_layers=0.*int >= 1"):
        NuminaConfig(reading_layers=0)
    with pytest.raises(ValueError, match="reading_layers=3.*containment"):
        NuminaConfig.paper().__class__(**{**NuminaConfig.paper().__dict__, "reading_layers": 3})


def test_numina_reports_the_blocks_it_read():
    pipe = testing.tiny_wan_pipeline(num_layers=3, heads=4, head_dim=16)
    pipe.set_progress_bar_config(disable=True)
    with numina_hooks.attach(pipe, numina_hooks.Numina(NuminaConfig(reading_layers=2))) as handle:
        out = handle(prompt="three cats", generator=torch.Generator().manual_seed(0),
                     **{**testing.WAN_CALL, "output_type": "latent", "num_inference_steps": 3})
    report = out.numina
    assert report.reference_layer == 2 and report.reading_layers == [1, 2]
    assert report.summary()["reading_layers"] == [1, 2]
    assert list(report.self_heads) == list(report.self_layers) == ["cats"]
    assert all(layer in (1, 2) or head == -1
               for layer, head in zip(report.self_layers["cats"], report.self_heads["cats"]))
    assert report.summary()["self_layers"] == report.self_layers


def test_distinct_keys_fold_repeated_tokens_exactly():
    from numina_hooks.views import distinct_keys
    g = torch.Generator().manual_seed(3)
    k = torch.randn(2, 3, 40, 8, generator=g)
    k[:, :, 6:] = k[:, :, 6:7]  # a padded prompt: 6 prompt tokens, then 34 equal padding keys
    keys, counts = distinct_keys(k)
    assert keys.shape == (2, 3, 7, 8) and counts.shape == (7, 1)
    assert sorted(counts[:, 0].tolist()) == [1.0] * 6 + [34.0]
    q = torch.randn(2, 3, 5, 8, generator=g)
    want = torch.logsumexp(q @ k.transpose(-1, -2), -1, keepdim=True)
    got = torch.log(torch.exp(q @ keys.transpose(-1, -2)) @ counts)
    torch.testing.assert_close(got, want)
    # every key distinct: nothing to fold
    same, none = distinct_keys(torch.randn(1, 2, 30, 4, generator=g))
    assert none is None and same.shape == (1, 2, 30, 4)


def test_distinct_keys_are_exact_when_fingerprints_collide():
    from numina_hooks.views import distinct_keys
    # the fingerprint weighs the three entries 1, 1.5, 2: (0, 0, 0) and (1.5, -1, 0) collide
    a, b = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.5, -1.0, 0.0])
    k = torch.stack([a, b, a, a, b, a, a, a])[None, None]  # [1, 1, 8, 3]
    keys, counts = distinct_keys(k)
    assert keys.shape == (1, 1, 2, 3)
    by_key = {tuple(keys[0, 0, i].tolist()): float(counts[i, 0]) for i in range(2)}
    assert by_key == {(0.0, 0.0, 0.0): 6.0, (1.5, -1.0, 0.0): 2.0}


def test_cross_maps_over_a_padded_prompt_equal_the_softmax_over_every_key():
    from numina_hooks.context import CallContext, Geometry
    from numina_hooks.views import AttentionView, Site
    g = torch.Generator().manual_seed(5)
    geo = Geometry(frames=2, height=3, width=4, text_tokens=64)
    ctx = CallContext(transformer="transformer", step=0, num_steps=2, timestep=1.0, sigma=1.0,
                      branch="cond", geometry=geo)
    q = torch.randn(1, 24, 4, 16, generator=g)  # [B, L, H, d]
    text = torch.randn(1, 64, 4, 16, generator=g)
    text[:, 9:] = text[:, 9:10]  # 9 prompt tokens, then 55 equal padding keys
    view = AttentionView(site=Site(0, "cross", "blocks.0.attn2", "transformer"), kind="cross",
                         context=ctx, q=q, k=text, v=text, layout="BLHD", scale=0.25,
                         video_queries=slice(0, 24), text_keys=slice(0, 64), video_keys=None)
    got = view.cross_attention_maps([[1, 2], [12]])
    probs = torch.softmax(q.transpose(1, 2).double() @ text.transpose(1, 2).double().transpose(-1, -2) * 0.25, -1)
    for cols, maps in zip([[1, 2], [12]], got):
        want = probs[..., cols].mean(-1).reshape(1, 4, 2, 3, 4)
        torch.testing.assert_close(maps.double(), want, atol=1e-6, rtol=1e-5)


def test_row_scores_are_the_float32_products_whichever_kernel_runs(monkeypatch):
    from numina_hooks.numina import attention_entries

    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(70, 48, generator=g), torch.randn(130, 48, generator=g)
    want = q.double() @ k.double().T
    got = attention_entries.row_scores(q, k)
    assert got.dtype == torch.float32 and got.shape == (70, 130)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    # strided views (a transpose's transpose) give the same products
    strided = attention_entries.row_scores(q.t().contiguous().t(), k.t().contiguous().t())
    torch.testing.assert_close(strided.double(), want, rtol=1e-5, atol=1e-4)
    # a build without oneDNN's operator (or one that refuses the inputs): torch.mm, and the
    # operator is not tried again
    monkeypatch.setattr(attention_entries, "_ONEDNN", [True])

    def refuse(*args, **kwargs):
        raise RuntimeError("no oneDNN here")

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", refuse, raising=False)
    torch.testing.assert_close(attention_entries.row_scores(q, k).double(), want, rtol=1e-5, atol=1e-4)
    assert attention_entries._ONEDNN == [False]


def test_row_scores_keep_gradients_and_other_dtypes():
    from numina_hooks.numina.attention_entries import row_scores

    g = torch.Generator().manual_seed(4)
    q = torch.randn(5, 8, generator=g, requires_grad=True)
    k = torch.randn(6, 8, generator=g)
    row_scores(q, k).sum().backward()  # the gradient path (torch.mm)
    torch.testing.assert_close(q.grad, k.sum(0).expand(5, 8))
    qb, kb = q.detach().bfloat16(), k.bfloat16()
    assert row_scores(qb, kb).dtype == torch.bfloat16


@pytest.mark.parametrize("exclude", [False, True])
def test_a_nan_among_the_entries_read_from_a_map_is_refused_by_name(exclude):
    # the default layout does not scan the whole map beforehand (its row sums are sampled,
    # heads.attention_rows(sampled=True)): every entry read must be checked instead
    grid = (6, 8)
    q, k = scene_qk(grid, heads=3, seed=7, dtype=torch.float32)
    maps = softmax_map(q, k, 0.3)
    heads, rows = torch.tensor([1]), torch.tensor([[9, 10, 17, 18]])
    bad = maps.clone()
    bad[1, 10, 17] = float("nan")
    bad[2, 40, 3] = float("inf")
    reads = {"pairs": lambda s: s.pairs(torch.tensor([10]), torch.tensor([17])),
             "blocks": lambda s: s.blocks(heads, rows),
             "block_sums": lambda s: s.block_sums(heads, rows, torch.ones(1, 4)),
             "mean_rows": lambda s: s.mean_rows(torch.tensor([10, 11])),
             "diagonals": lambda s: s.diagonals((7,))}  # row 10's entry on 17
    for name, read in reads.items():
        assert torch.isfinite(read(MapSelfAttention(maps, exclude_own_key=exclude))[0]).all(), name
        with pytest.raises(ValueError, match="frame_map contains 2 NaN/inf"):
            read(MapSelfAttention(bad, exclude_own_key=exclude, name="frame_map"))
    own = maps.clone()
    own[0, 4, 4] = float("nan")  # the own key: read when it is left out of each row
    if exclude:
        with pytest.raises(ValueError, match="self_attn contains 1 NaN/inf"):
            MapSelfAttention(own, exclude_own_key=True)
    else:
        MapSelfAttention(own)  # nothing read yet


def test_the_default_layout_refuses_a_nan_outside_the_sampled_rows():
    # at 30x52 the row sums read 64 rows per head (every 24th): a NaN in row 5 is found
    # where the partition reads it (its neighbour bundle)
    from numina_hooks.numina.heads import ROW_SUM_SAMPLE_ROWS, attention_rows
    from numina_hooks.numina.layout import layout_from_attention
    grid = (30, 52)
    q, k = scene_qk(grid, heads=4, seed=8, dtype=torch.float32)
    maps = softmax_map(q, k, 0.3)
    assert attention_rows(maps, "self_attn", sampled=True) is maps  # no pass, no copy
    assert (grid[0] * grid[1]) // ROW_SUM_SAMPLE_ROWS > 5  # row 5 is not among the sampled
    bad = maps.clone()
    bad[2, 5, 6] = float("nan")
    cross = torch.rand(4, grid[0] * grid[1])
    with pytest.raises(ValueError, match="self_attn contains 1 NaN/inf"):
        layout_from_attention(bad, cross, grid)


@pytest.mark.parametrize("exclude", [False, True])
def test_diagonals_of_a_map_are_its_entries_with_zeros_off_the_map(exclude):
    q, k = scene_qk((5, 7), heads=3, seed=4, dtype=torch.float32)
    maps = softmax_map(q, k, 0.4)
    n = maps.shape[1]
    rows = maps / (1 - maps.diagonal(dim1=1, dim2=2))[:, :, None] if exclude else maps
    offsets = (-9, -1, 2, 7, 40)
    got = MapSelfAttention(maps, exclude_own_key=exclude).diagonals(offsets)
    assert got.shape == (3, len(offsets), n)
    for i, d in enumerate(offsets):
        for r in range(n):
            want = rows[:, r, r + d] if 0 <= r + d < n else torch.zeros(3)
            torch.testing.assert_close(got[:, i, r], want, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="offset 0 is each row's own key"):
        MapSelfAttention(maps).diagonals((0, 1))


@pytest.mark.parametrize("grid", [(6, 9), (1, 7), (7, 1), (2, 2)])
@pytest.mark.parametrize("band", [0, 1, 2])
def test_edge_weights_read_from_diagonals_equal_those_of_the_gathered_pairs(grid, band):
    # the map path reads whole diagonals and copies the bundles out of them; the pairs read
    # one by one (as the q/k source gives them) must give the same weights, bit for bit
    from numina_hooks.numina.partition import _bundle_weights, edge_pairs, edge_weights
    n = grid[0] * grid[1]
    maps = torch.softmax(torch.randn(4, n, n, generator=torch.Generator().manual_seed(band)) * 3, -1)
    for exclude in (False, True):
        source = MapSelfAttention(maps, exclude_own_key=exclude)
        rows, cols, valid, shapes = edge_pairs(grid, band)
        want = _bundle_weights(source.pairs(rows, cols), valid, shapes, grid, band)
        got = edge_weights(source, grid, band)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            assert torch.equal(a, b)
