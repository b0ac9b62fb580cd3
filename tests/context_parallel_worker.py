"""One rank of a context-parallel run (tests/test_context_parallel.py): a tiny Wan pipeline
with diffusers' Ulysses context parallelism over gloo, attached, generating as asked; each
rank saves what it saw for the test to compare with one process."""

from __future__ import annotations

import os

import torch

CALL = dict(output_type="latent", num_inference_steps=4, height=96, width=96)
PROMPT = "three cats chasing two dogs"


def build_pipeline():
    from numina_hooks import testing

    pipe = testing.tiny_wan_pipeline(heads=4, head_dim=16)
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.set_attention_backend("native")  # a backend with context parallelism
    return pipe


class MapRecorder:
    """Keeps, at step 1 and the last block, frame 1's self-attention map and the cats' cross map."""

    def __init__(self):
        self.maps = {}

    from numina_hooks import hookimpl

    @hookimpl
    def on_attention(self, view):
        if view.step != 1 or view.layer != 1:
            return None
        cond = view.rows_of("cond")
        if view.kind == "self":
            self.maps["self"] = view.self_attention_map(1, batch=cond)
        else:
            self.maps["cross"] = view.cross_attention_map([1], batch=cond)
        return None


def generate(pipe, mode: str, config=None) -> dict:
    """``mode``: "observe" (a map recorder) or "numina" (NUMINA with ``config``)."""
    import numina_hooks
    from numina_hooks.testing import WAN_CALL

    call = dict(WAN_CALL, **CALL)
    generator = torch.Generator().manual_seed(0)
    if mode == "observe":
        rec = MapRecorder()
        with numina_hooks.attach(pipe, rec):
            frames = pipe(prompt=PROMPT, generator=generator, **call).frames
        return {"frames": frames, "maps": rec.maps}
    with numina_hooks.attach(pipe, numina_hooks.Numina(config)) as handle:
        out = handle(prompt=PROMPT, counts={"cats": 3, "dogs": 2}, generator=generator, **call)
    r = out.numina
    return {"frames": out.frames, "found": r.counts_found, "phase2_ran": r.phase2_ran,
            "guided_steps": r.guided_steps, "edits": r.edits,
            "layouts_after": {n: v.tolist() for n, v in r.layouts_after.items()}}


def run_rank(rank: int, world: int, port: int, out_dir: str, jobs: list) -> None:
    """``jobs``: (name, mode, NuminaConfig fields or None); saves ``out_dir/name.rank.pt``."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    # diffusers picks the rank's device as rank % device_count(), which is 0 without an
    # accelerator; on CPU every rank uses the CPU
    torch.accelerator.device_count = lambda: 1
    try:
        from diffusers import ContextParallelConfig

        from numina_hooks.numina.config import NuminaConfig

        pipe = build_pipeline()
        pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
        for name, mode, fields in jobs:
            config = NuminaConfig(**fields) if fields is not None else None
            torch.save(generate(pipe, mode, config), os.path.join(out_dir, f"{name}.{rank}.pt"))
    finally:
        dist.destroy_process_group()
