"""The per-call context reads the timestep's value once per step, not once per forward.

Reading a device tensor's value (``float(t)``) waits for the device; a pipeline with
classifier-free guidance makes two forwards a step (cond, uncond) on views of the same
scheduler timestep, so the second read must come from what the first one found.
"""

from __future__ import annotations

import torch

import numina_hooks
from numina_hooks import hookimpl, testing


class Contexts:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_attention(self, view):
        self.seen.append((view.context.step, view.context.branch, view.context.timestep))


def _reads(pipe, steps):
    kwargs = dict(testing.WAN_CALL, output_type="latent", num_inference_steps=steps)
    with testing.scalar_reads() as reads:
        pipe(prompt="three cats", generator=torch.Generator().manual_seed(0), **kwargs)
    return reads.count


def test_timestep_is_read_once_per_step_not_per_forward():
    pipe = testing.tiny_wan_pipeline(num_layers=1)
    pipe.set_progress_bar_config(disable=True)
    steps = 3
    plain = _reads(pipe, steps)
    seen = Contexts()
    with numina_hooks.attach(pipe) as handle:
        handle.register(seen)
        hooked = _reads(pipe, steps)
    assert {branch for _, branch, _ in seen.seen} == {"cond", "uncond"}  # two forwards a step
    assert hooked - plain <= steps, f"{hooked - plain} value reads for {steps} steps of two forwards"
    # and the contexts still carry each step's own timestep
    per_step = {}
    for step, _, t in seen.seen:
        per_step.setdefault(step, set()).add(t)
    timesteps = pipe.scheduler.timesteps.tolist()
    assert sorted(per_step) == list(range(steps))
    assert all(ts == {float(timesteps[s])} for s, ts in per_step.items())


def test_a_changed_timestep_tensor_is_read_again():
    """The kept value is for that memory as it was: writing into it in place reads again."""
    pipe = testing.tiny_wan_pipeline(num_layers=1)
    handle = numina_hooks.attach(pipe)
    try:
        t = torch.tensor([500.0])
        assert handle._hub._timestep_value(t.expand(2)) == 500.0
        t.fill_(250.0)
        assert handle._hub._timestep_value(t.expand(2)) == 250.0
        assert handle._hub._timestep_value(torch.tensor([1.0, 7.0])) == 7.0
        assert handle._hub._timestep_value(3) == 3.0 and handle._hub._timestep_value(None) is None
    finally:
        handle.detach()


def test_attached_with_no_plugin_reads_nothing():
    """No plugin reads a call context: the forward hook builds none, so the timestep is not
    read at all (and the outputs are the plain pipeline's)."""
    pipe = testing.tiny_wan_pipeline(num_layers=1)
    pipe.set_progress_bar_config(disable=True)
    plain = _reads(pipe, 3)
    with numina_hooks.attach(pipe):
        hooked = _reads(pipe, 3)
    assert hooked == plain
