"""diffusers' context parallelism (Ulysses, 2 CPU processes over gloo) with numina-hooks attached:
every rank sees the same maps, layouts and guided steps as one process, and the same video."""

import socket

import pytest
import torch

pytest.importorskip("diffusers.models._modeling_parallel", reason="this diffusers has no context parallelism")
if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import context_parallel_worker as worker  # noqa: E402

WORLD = 2
JOBS = [
    ("observe", "observe", None),
    ("numina", "numina", {}),
    ("spread", "numina", {"boost_mode": "logit_spread"}),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every job on 2 ranks with Ulysses attention, and in one process."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("cp")
    mp.spawn(worker.run_rank, args=(WORLD, _free_port(), str(out), JOBS), nprocs=WORLD, join=True)
    from numina_hooks.numina.config import NuminaConfig

    results = {}
    for name, mode, fields in JOBS:
        single = worker.generate(worker.build_pipeline(), mode, NuminaConfig(**fields) if fields is not None else None)
        ranks = [torch.load(out / f"{name}.{r}.pt", weights_only=False) for r in range(WORLD)]
        results[name] = (single, ranks)
    return results


def test_observers_see_the_whole_frame_on_every_rank(runs):
    single, ranks = runs["observe"]
    for got in ranks:
        torch.testing.assert_close(got["frames"], single["frames"], rtol=0, atol=1e-5)
        for kind in ("self", "cross"):
            # the maps of the whole sequence, not of this rank's half
            assert got["maps"][kind].shape == single["maps"][kind].shape
            torch.testing.assert_close(got["maps"][kind], single["maps"][kind], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["numina", "spread"])
def test_numina_reads_and_guides_as_one_process(runs, name):
    single, ranks = runs[name]
    assert single["phase2_ran"] and single["guided_steps"], "the case must need guidance"
    assert any(e.get("added_copy") for e in single["edits"].values()), "template copies read rows of both ranks"
    for got in ranks:
        for key in ("found", "phase2_ran", "guided_steps", "edits", "layouts_after"):
            assert got[key] == single[key], key
        torch.testing.assert_close(got["frames"], single["frames"], rtol=0, atol=1e-4)


def test_uneven_slices_give_every_rank_its_own_size():
    from numina_hooks.shard import SequenceShard, slice_sizes

    # 10 tokens over 3 ranks: tensor.chunk 4, 4, 2; tensor_split ("anything" configs) 4, 3, 3
    assert slice_sizes(10, 3) == (4, 4, 2)
    assert slice_sizes(10, 3, anything=True) == (4, 3, 3)
    assert slice_sizes(8, 2) == slice_sizes(8, 2, anything=True) == (4, 4)
    last = SequenceShard(rank=2, sizes=(4, 3, 3))
    assert (last.offset, last.length, last.total) == (7, 3, 10)
    held, local = last.local_rows(torch.tensor([0, 6, 7, 9]))
    assert held.tolist() == [False, False, True, True] and local.tolist() == [0, 2]
