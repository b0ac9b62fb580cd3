"""Train the toy text-to-video model on procedural toy-world clips.

    python -m numina_hooks.toy.train --out toy-train-run --steps 10000 --seed 0

Objective: rectified flow. For a clean clip x0 (pixels in [-1, 1], see
``model.frames_to_latents``), noise e and sigma ~ logit-normal(0, 1), the transformer sees
x = (1 - sigma) x0 + sigma e at timestep 1000 sigma and predicts e - x0, which is what
``FlowMatchEulerDiscreteScheduler`` integrates. The text encoder is trained jointly; 10% of
captions are replaced by "" (the pipeline's default negative prompt) so classifier-free
guidance works. AdamW, linear warm-up then constant learning rate, gradient clipping at 1,
EMA of the weights (the EMA weights are what ships).

Determinism and resumption: the clips and the noise of step k are functions of (seed, k)
only, so a resumed run draws the same data as an uninterrupted one. ``OUT/checkpoint.pt``
(rewritten every ``--ckpt-every`` steps and at the end) holds the weights and EMA in fp16
and Adam's second moment in bf16 (about 8 MB, small enough to commit); resuming restarts
Adam's first moment from zero. So a resumed run continues the same run closely but not
bit-for-bit. Each checkpoint also writes ``OUT/loss.png`` and the EMA weights for shipping
in ``OUT/weights/`` (``model.safetensors`` + ``info.json``, loadable with
``load_toy_pipeline(OUT/weights)``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import instance_head, noun_maps
from . import model as toy_model
from . import world

CHECKPOINT = "checkpoint.pt"
INSTANCE_TARGETS = ("frame-background", "frame", "clip")


class Batch(NamedTuple):
    """One training batch."""

    x0: torch.Tensor  #: frames as latents [B, 3, F, H, W]
    captions: list  #: B captions ("" where dropped)
    labels: torch.Tensor  #: each video token's object id, long [B, F * h * w], 0 = background
    categories: list  #: per clip, the category name of object k at index k - 1


def batch_clips(seed: int, step: int, batch: int, drop: float, counts_in: str = "v2") -> Batch:
    """Training batch of step ``step``, clips of the count range ``counts_in``
    (``world.COUNT_RANGES``); the object ids and categories feed the instance-head and
    noun-map losses."""
    rng = np.random.default_rng([seed, step, 0xDA7A])
    clips = [world.make_clip(int(s), counts_in=counts_in) for s in rng.integers(0, 2**62, size=batch)]
    captions = ["" if rng.random() < drop else c.caption for c in clips]
    frames = np.stack([c.frames for c in clips])
    labels = instance_head.patch_instances(np.stack([c.instances for c in clips]), world.PATCH)
    return Batch(toy_model.frames_to_latents(frames), captions, labels, [list(c.categories) for c in clips])


def flow_loss(pipe, x0: torch.Tensor, captions: list[str], gen: torch.Generator,
              aux: "instance_head.InstanceHeadLoss | None" = None, labels: torch.Tensor | None = None,
              aux_max_sigma: float = 0.8, sigma_location: float = 0.0,
              nouns: "tuple[noun_maps.NounMapLoss, torch.Tensor, torch.Tensor, float] | None" = None,
              foreground_weight: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Rectified-flow loss of one batch (mean squared error on the velocity e - x0), the
    instance-head loss when ``aux`` is given (with the batch's token ``labels``), else None,
    and the noun-map loss when ``nouns`` = (loss, token categories, noun columns, max sigma)
    is given (:mod:`numina_hooks.toy.noun_maps`), else None.

    sigma is drawn logit-normal(``sigma_location``, 1): 0 centres it on 0.5, a positive
    location trains more on the noisy steps where a sample's layout is decided.

    ``foreground_weight`` W > 1 weighs the squared error of object pixels (and their
    8-neighbours, see :func:`foreground_weights`) W times a background pixel's, normalised
    by the mean weight so the loss keeps its scale; 1 is the plain mean.

    The noise is drawn on the CPU from ``gen`` (so a step's noise does not depend on the
    device) and moved to the transformer's device with ``x0``.
    """
    b = x0.shape[0]
    dev = pipe.transformer.device
    noise = torch.randn(x0.shape, generator=gen).to(dev)
    sigma = torch.sigmoid(torch.randn(b, generator=gen) + sigma_location).to(dev)
    x0 = x0.to(dev)
    s = sigma.view(b, 1, 1, 1, 1)
    x = (1 - s) * x0 + s * noise
    text = toy_model.encode_text(pipe, captions)
    with contextlib.ExitStack() as stack:
        for ctx in (aux, nouns[0] if nouns is not None else None):
            if ctx is not None:
                stack.enter_context(ctx)
        pred = pipe.transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=text,
                                return_dict=False)[0]
        extra = None if aux is None else aux.loss(labels, sigma, aux_max_sigma)
        noun_extra = None if nouns is None else nouns[0].loss(nouns[1], nouns[2], sigma, nouns[3])
    err = (pred - (noise - x0)) ** 2
    if foreground_weight == 1.0:
        return torch.mean(err), extra, noun_extra
    w = foreground_weights(x0, foreground_weight).expand_as(err)
    return (err * w).sum() / w.sum(), extra, noun_extra


def check_foreground_weight(weight: float) -> None:
    """ValueError unless ``weight`` >= 1 (NaN refused too)."""
    if not weight >= 1.0:
        raise ValueError(f"foreground_weight={weight}: expected a number >= 1 (1 = the plain "
                         "mean squared error, larger weighs object pixels more)")


def foreground_weights(x0: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, F, H, W] for clean latents ``x0`` [B, 3, F, H, W]:
    ``weight`` on pixels that differ from the world's background colour and on their
    8-neighbours in the frame (the object's edge), 1 elsewhere.

    The toy's objects cover a few percent of a frame, so under the plain mean squared
    error an empty frame is a cheap answer; weighting their pixels makes drawing them count.
    """
    check_foreground_weight(weight)
    bg = torch.tensor(world.BACKGROUND, dtype=x0.dtype, device=x0.device).view(1, 3, 1, 1, 1) / 127.5 - 1.0
    fg = ((x0 - bg).abs().amax(dim=1, keepdim=True) > 0.5 / 127.5).to(x0.dtype)
    fg = torch.nn.functional.max_pool3d(fg, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    return 1.0 + (weight - 1.0) * fg


def own_states_loss(pipe, states: dict, index: np.ndarray, aux: "instance_head.InstanceHeadLoss"
                    ) -> torch.Tensor:
    """The instance-head loss on the model's own sampling states ``states["latents"][index]``
    (see :mod:`numina_hooks.toy.own_states`), each pulled towards the objects of the video its
    trajectory ended in. Conditional branch only, at each state's own timestep."""
    dev = pipe.transformer.device
    idx = torch.as_tensor(index)
    x = states["latents"][idx].to(dev, torch.float32)
    t = states["timesteps"][idx].to(dev)
    text = toy_model.encode_text(pipe, [states["captions"][i] for i in index])
    with aux:
        pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
        return aux.loss(states["labels"][idx], torch.zeros(len(index)), 1.0)


def _params(pipe) -> list[torch.nn.Parameter]:
    return list(pipe.transformer.parameters()) + list(pipe.text_encoder.parameters())


def _saved_args(ckpt: Path) -> dict | None:
    """The training arguments a run's checkpoint holds; None without a checkpoint (a new run)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True)["args"] if ckpt.exists() else None


def _run_architecture(ckpt: Path, saved_args: dict | None, init_weights, arch: str | None) -> str:
    """The architecture name a run trains: its checkpoint's (``saved_args``, those of
    ``ckpt``) when resuming, else the one of ``init_weights``, else ``arch`` (default "v2").
    ValueError when ``arch`` asks for another."""
    if saved_args is not None:
        saved = saved_args.get("arch", "v2")
        if arch is not None and arch != saved:
            raise ValueError(f"arch={arch!r}, but the run in {ckpt.parent} trains {saved!r}: "
                             "resume it without --arch (or with its own), or train into a new --out folder")
        return saved
    if init_weights is not None:
        found = toy_model.weights_configs(init_weights)
        names = [n for n, cfgs in toy_model.ARCHITECTURES.items() if cfgs == found]
        if not names:
            raise ValueError(f"the weights in {init_weights} are of no named architecture "
                             f"({', '.join(toy_model.ARCHITECTURES)}): start a run from one of those")
        if arch is not None and arch not in names:
            raise ValueError(f"arch={arch!r}, but the weights in {init_weights} are {names[0]!r}: "
                             "leave --arch out, or start from weights of that architecture")
        return names[0]
    toy_model.architecture(arch or "v2")  # refuses an unknown name
    return arch or "v2"


def _run_count_range(ckpt: Path, saved_args: dict | None, counts_in: str | None, init_weights=None) -> str:
    """The count range a run trains on: its checkpoint's (``saved_args``, those of ``ckpt``)
    when resuming (another is refused), else ``counts_in``, else the one ``init_weights`` were
    trained on, else "v2"."""
    if saved_args is not None:
        saved = saved_args.get("counts_in", "v2")
        if counts_in is not None and counts_in != saved:
            raise ValueError(f"counts_in={counts_in!r}, but the run in {ckpt.parent} trains on count "
                             f"range {saved!r}: resume it without --count-range (or with its own), or "
                             "train into a new --out folder")
        return saved
    if counts_in is None and init_weights is not None:
        counts_in = toy_model.weights_count_range(init_weights)
    return world.count_range(counts_in or "v2").name  # refuses an unknown name


def save_checkpoint(path: Path, pipe, ema: list[torch.Tensor], opt, step: int, losses: list[float],
                    args: dict) -> None:
    """Compact checkpoint (see the module docstring); written atomically."""
    params = _params(pipe)
    exp_avg_sq = [opt.state[p]["exp_avg_sq"].to("cpu", torch.bfloat16) if p in opt.state else None
                  for p in params]
    state = {
        "step": step,
        "args": args,
        "model": {k: v.to("cpu", torch.float16) for k, v in toy_model.model_state(pipe).items()},
        "ema": [e.to("cpu", torch.float16) for e in ema],
        "exp_avg_sq": exp_avg_sq,
        "losses": torch.tensor(losses, dtype=torch.float32),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, pipe, ema: list[torch.Tensor], opt) -> tuple[int, list[float]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    toy_model.load_model_state(pipe, {k: v.float() for k, v in state["model"].items()})
    for e, saved in zip(ema, state["ema"]):
        e.copy_(saved.float())
    for p, sq in zip(_params(pipe), state["exp_avg_sq"]):
        if sq is not None:
            opt.state[p] = {"step": torch.tensor(float(state["step"])),
                            "exp_avg": torch.zeros_like(p), "exp_avg_sq": sq.to(p.device, torch.float32)}
    return int(state["step"]), state["losses"].tolist()


def plot_losses(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(losses)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(np.arange(1, len(y) + 1), y, lw=0.4, alpha=0.35, label="per step")
    if len(y) >= 50:
        k = 50
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k, len(y) + 1), smooth, lw=1.2, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_ema_weights(pipe, ema: list[torch.Tensor], out: Path, info: dict) -> None:
    """Save the EMA weights as shippable toy weights in ``out``."""
    params = _params(pipe)
    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
        toy_model.save_weights(pipe, out, info)
        for p, v in zip(params, live):
            p.copy_(v)


class _BatchFeed:
    """Training batches in step order, made ``workers`` processes ahead (0: in this process).

    Every batch is ``batch_clips(seed, step, ...)``, a function of the step alone, so the
    data do not depend on the number of workers.
    """

    def __init__(self, seed: int, first: int, last: int, batch: int, drop: float, workers: int,
                 counts_in: str = "v2"):
        self._steps = range(first, last)
        self._pool = None
        if workers > 0:
            import multiprocessing as mp

            self._pool = mp.get_context("spawn").Pool(workers, initializer=_one_thread)
            self._it = self._pool.imap(_batch_for_step, [(seed, s, batch, drop, counts_in) for s in self._steps],
                                       chunksize=4)
        else:
            self._it = (batch_clips(seed, s, batch, drop, counts_in) for s in self._steps)

    def __iter__(self):
        return self._it

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()


def _one_thread() -> None:
    torch.set_num_threads(1)  # many workers, each with all cores' threads, starve each other


def _batch_for_step(a: tuple) -> tuple:
    return batch_clips(*a)


def learning_rate(step: int, lr: float, warmup: int, steps: int,
                  decay_start: int | None = None, final_lr: float = 0.05) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warm-up to ``lr`` over ``warmup`` steps; constant after it, or, from
    ``decay_start`` on, a half cosine from ``lr`` to ``final_lr * lr`` reached at ``steps``.
    A function of the step alone, so a resumed run follows the same schedule.
    """
    rate = lr * min(1.0, (step + 1) / warmup)
    if decay_start is not None and step >= decay_start:
        frac = min(1.0, (step - decay_start) / max(steps - decay_start, 1))
        rate = lr * (final_lr + (1 - final_lr) * 0.5 * (1 + math.cos(math.pi * frac)))
    return rate


def train(out: str | Path, steps: int, seed: int = 0, batch: int = 16, lr: float = 1e-3,
          warmup: int = 200, ema_decay: float = 0.995, caption_dropout: float = 0.1,
          ckpt_every: int = 250, progress: bool = True, device: str = "cpu",
          workers: int = 0, decay_start: int | None = None, final_lr: float = 0.05,
          init_weights: str | Path | None = None, instance_heads: str = "",
          instance_weight: float = 0.01, instance_max_sigma: float = 0.8,
          instance_target: str = "frame-background", own_states: str = "",
          own_states_weight: float = 0.03, own_states_batch: int = 8,
          arch: str | None = None, sigma_location: float = 0.0, noun_blocks: str = "",
          noun_weight: float = 0.02, noun_max_sigma: float = 0.9,
          foreground_weight: float = 1.0, counts_in: str | None = None) -> dict:
    """Train (or resume) until ``steps`` optimizer steps are done; returns a summary.

    The learning rate warms up linearly over ``warmup`` steps and then stays at ``lr``; with
    ``decay_start`` it follows a cosine from ``lr`` at that step down to ``final_lr * lr``
    at ``steps`` (see ``learning_rate``).

    ``device`` is where the model trains ("cuda" on a GPU: the same run, a few minutes);
    ``workers`` > 0 makes the clips in that many processes ahead of the training loop.

    ``init_weights`` (a weights folder, as shipped) starts a new run from trained weights
    (model and EMA) instead of a random initialisation; a resumed run ignores it.
    ``instance_heads`` ("BLOCK:HEAD,...") adds ``instance_weight`` times the instance-head
    loss of :mod:`numina_hooks.toy.instance_head` on those heads, for clips noised to at most
    ``instance_max_sigma``; ``instance_target`` is what an object row is pulled towards:
    "frame-background" (its object in its frame, the background being one more object: the
    default), "frame" (background rows free) or "clip" (its object in every frame).
    ``own_states`` (comma-separated files of :mod:`numina_hooks.toy.own_states`) adds
    ``own_states_weight`` times the same loss, with the frame-background target, on
    ``own_states_batch`` of the model's own sampling states a step, each pulled towards the
    objects its video ended with.
    ``arch`` names the architecture (``toy.model.ARCHITECTURES``; default "v2", or the one
    of ``init_weights``); a resumed run keeps its checkpoint's and refuses another.
    ``sigma_location`` shifts the logit-normal noise levels of the flow loss (see
    :func:`flow_loss`).
    ``noun_blocks`` ("3" or "2,3") adds ``noun_weight`` times the noun-map loss of
    :mod:`numina_hooks.toy.noun_maps` on those blocks' cross-attention, for captioned clips
    noised to at most ``noun_max_sigma``.
    ``foreground_weight`` > 1 weighs the flow loss of object pixels more (see
    :func:`foreground_weights`).
    ``counts_in`` names the count range of the training clips (``world.COUNT_RANGES``;
    default: that of ``init_weights``, else "v2"); a resumed run keeps its checkpoint's and
    refuses another.
    """
    from tqdm import tqdm

    if decay_start is not None and not 0 <= decay_start < steps:
        raise ValueError(f"decay_start={decay_start} must lie in [0, steps={steps}): it is "
                         "the step where the cosine decay of the learning rate begins")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args = {"steps": steps, "seed": seed, "batch": batch, "lr": lr, "warmup": warmup,
            "ema_decay": ema_decay, "caption_dropout": caption_dropout}
    if decay_start is not None:
        args.update(decay_start=decay_start, final_lr=final_lr)
    if sigma_location:
        args.update(sigma_location=sigma_location)
    if foreground_weight != 1.0:
        check_foreground_weight(foreground_weight)  # before any work, not at the first step
        args.update(foreground_weight=foreground_weight)
    heads = instance_head.parse_heads(instance_heads)
    if heads:
        if instance_target not in INSTANCE_TARGETS:
            raise ValueError(f"instance_target={instance_target!r}: expected one of "
                             f"{', '.join(INSTANCE_TARGETS)}")
        args.update(instance_heads=instance_heads, instance_weight=instance_weight,
                    instance_max_sigma=instance_max_sigma, instance_target=instance_target)
    blocks = noun_maps.parse_blocks(noun_blocks)
    if blocks:
        args.update(noun_blocks=noun_blocks, noun_weight=noun_weight, noun_max_sigma=noun_max_sigma)
    if init_weights is not None:
        args.update(init_weights=Path(init_weights).as_posix())
    states = None
    if own_states:
        if not heads:
            raise ValueError("own_states needs instance_heads: the states train those heads")
        from .own_states import load_states

        parts = [load_states(f) for f in own_states.split(",") if f.strip()]
        states = {"latents": torch.cat([d["latents"] for d in parts]),
                  "timesteps": torch.cat([d["timesteps"] for d in parts]),
                  "labels": torch.cat([d["labels"] for d in parts]),
                  "captions": [c for d in parts for c in d["captions"]]}
        args.update(own_states=own_states, own_states_weight=own_states_weight,
                    own_states_batch=own_states_batch)
    saved_args = _saved_args(out / CHECKPOINT)  # read once: the arguments a resumed run keeps
    arch = _run_architecture(out / CHECKPOINT, saved_args, init_weights, arch)
    if arch != "v2":  # runs before architectures had names are v2 runs: their args stay as they were
        args.update(arch=arch)
    counts_in = _run_count_range(out / CHECKPOINT, saved_args, counts_in, init_weights)
    if counts_in != "v2":  # likewise: runs before count ranges had names trained on v2's
        args.update(counts_in=counts_in)
    pipe = toy_model.build_pipeline(seed=seed, device=device, arch=arch)
    tokens_per_frame = None if instance_target == "clip" else (world.SIZE // world.PATCH) ** 2
    aux = (instance_head.InstanceHeadLoss(pipe.transformer, heads, tokens_per_frame,
                                          background=instance_target == "frame-background")
           if heads else None)
    own_aux = (instance_head.InstanceHeadLoss(pipe.transformer, heads, (world.SIZE // world.PATCH) ** 2,
                                              background=True)
               if states is not None else None)
    noun_aux = noun_maps.NounMapLoss(pipe.transformer, blocks) if blocks else None
    category_names = [c.name for c in world.CATEGORIES]
    pipe.transformer.train()
    pipe.text_encoder.train()
    params = _params(pipe)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    step, losses = 0, []
    ckpt = out / CHECKPOINT
    aux_losses: list[float] = []
    own_losses: list[float] = []
    noun_losses: list[float] = []
    if ckpt.exists():
        step, losses = load_checkpoint(ckpt, pipe, ema, opt)
        print(f"resumed from {ckpt} at step {step}", file=sys.stderr)
    elif init_weights is not None:
        toy_model.load_weights(pipe, init_weights)
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.copy_(p)
        print(f"started from the weights in {init_weights}", file=sys.stderr)

    def finish_checkpoint(at: int) -> None:
        save_checkpoint(ckpt, pipe, ema, opt, at, losses, args)
        plot_losses(losses, out / "loss.png")
        recent = float(np.mean(losses[-100:])) if losses else math.nan
        info = {"steps": at, "seed": seed, "train_args": args, "loss_last_100": recent}
        if aux_losses:
            info["instance_loss_last_100"] = float(np.mean(aux_losses[-100:]))
        if own_losses:
            info["own_states_loss_last_100"] = float(np.mean(own_losses[-100:]))
        if noun_losses:
            info["noun_map_loss_last_100"] = float(np.mean(noun_losses[-100:]))
        write_ema_weights(pipe, ema, out / "weights", info)

    bar = tqdm(total=steps, initial=step, disable=not progress, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    t0, done_here = time.time(), 0
    feed = _BatchFeed(seed, step, steps, batch, caption_dropout, workers, counts_in)
    batches = iter(feed)
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, lr, warmup, steps, decay_start, final_lr)
        x0, captions, labels, categories = next(batches)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 0xF10]).integers(2**62)))
        nouns = None
        if noun_aux is not None:
            nouns = (noun_aux, noun_maps.token_categories(labels, categories, category_names),
                     noun_maps.column_masks(pipe.tokenizer, captions, category_names, toy_model.MAX_TEXT_TOKENS),
                     noun_max_sigma)
        loss, extra, noun_extra = flow_loss(pipe, x0, captions, gen, aux, labels, instance_max_sigma,
                                            sigma_location, nouns, foreground_weight)
        opt.zero_grad(set_to_none=True)
        total = loss if extra is None else loss + instance_weight * extra
        if noun_extra is not None:
            noun_losses.append(float(noun_extra.detach()))
            total = total + noun_weight * noun_extra
        if states is not None:
            pick = np.random.default_rng([seed, step, 0x0575]).choice(
                len(states["captions"]), size=own_states_batch, replace=False)
            own = own_states_loss(pipe, states, pick, own_aux)
            own_losses.append(float(own.detach()))
            total = total + own_states_weight * own
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - ema_decay)
        step += 1
        done_here += 1
        losses.append(float(loss.detach()))
        if extra is not None:
            aux_losses.append(float(extra.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}",
                        **({"instance": f"{np.mean(aux_losses[-50:]):.3f}"} if aux_losses else {}),
                        **({"own": f"{np.mean(own_losses[-50:]):.3f}"} if own_losses else {}),
                        **({"nouns": f"{np.mean(noun_losses[-50:]):.3f}"} if noun_losses else {}),
                        s_per_step=f"{(time.time() - t0) / done_here:.2f}", refresh=False)
        if step % ckpt_every == 0 or step == steps:
            finish_checkpoint(step)
    bar.close()
    feed.close()
    if done_here == 0 and not (out / "weights" / "model.safetensors").exists():
        finish_checkpoint(step)
    return {"steps": step, "loss_last_100": float(np.mean(losses[-100:])) if losses else math.nan,
            "seconds_per_step": (time.time() - t0) / max(done_here, 1)}


_WEIGHTS_README = """# Toy model weights

`model.safetensors` (fp16) holds the EMA weights (decay {ema_decay}) of the toy transformer
and text encoder. `info.json` holds the configs, the caption vocabulary and the training
arguments. Load them with `numina_hooks.toy.model.load_toy_pipeline()`.

**Current weights: step {steps} of the seed-{seed} run in `{run}/`**
(target {target} steps). The mean training loss over the last 100 steps was {loss:.4f}.
They were produced by:

```
nice -n 19 env OMP_NUM_THREADS=1 python -m numina_hooks.toy.train --out {run} --steps {target} --seed {seed}{extra}
python -m numina_hooks.toy.train --out {run} --ship
```

Every run of the first command resumes from `{run}/checkpoint.pt`. The second
command copies `{run}/weights/` here and rewrites this file.
"""


def _command_extras(a: dict) -> str:
    """The training command's options beyond the basic ones, from a run's ``train_args``."""
    extra = ""
    for key, default in (("lr", 1e-3), ("warmup", 200)):
        if a.get(key, default) != default:
            extra += f" --{key} {a[key]}"
    if a.get("arch", "v2") != "v2" and not a.get("init_weights"):
        extra += f" --arch {a['arch']}"
    if a.get("sigma_location"):
        extra += f" --sigma-location {a['sigma_location']}"
    if a.get("counts_in", "v2") != "v2":
        extra += f" --count-range {a['counts_in']}"
    if a.get("foreground_weight", 1.0) != 1.0:
        extra += f" --foreground-weight {a['foreground_weight']}"
    if a.get("noun_blocks"):
        extra += (f" --noun-blocks {a['noun_blocks']} --noun-weight {a['noun_weight']}"
                  f" --noun-max-sigma {a['noun_max_sigma']}")
    if a.get("decay_start") is not None:
        extra += f" --decay-start {a['decay_start']} --final-lr {a['final_lr']}"
    if a.get("init_weights"):
        extra += f" --init-weights {a['init_weights']}"
    if a.get("instance_heads"):
        extra += (f" --instance-heads {a['instance_heads']} --instance-weight {a['instance_weight']}"
                  f" --instance-max-sigma {a['instance_max_sigma']}"
                  f" --instance-target {a.get('instance_target', 'frame-background')}")
    if a.get("own_states"):
        extra += (f" --own-states {a['own_states']} --own-states-weight {a['own_states_weight']}"
                  f" --own-states-batch {a['own_states_batch']}")
    return extra


def ship(run_dir: str | Path, dest: str | Path = toy_model.WEIGHTS_DIR) -> dict:
    """Copy a run's EMA weights into the package (``dest``) and write its README."""
    import shutil

    src = Path(run_dir) / "weights"
    info = json.loads((src / "info.json").read_text())
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "info.json"):
        shutil.copyfile(src / name, dest / name)
    a = info["train_args"]
    (dest / "README.md").write_text(_WEIGHTS_README.format(
        steps=info["steps"], seed=info["seed"], target=a["steps"], ema_decay=a["ema_decay"],
        loss=info["loss_last_100"], run=Path(run_dir).as_posix(),
        extra=_command_extras(a)))
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m numina_hooks.toy.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (checkpoint, loss.png, weights/)")
    p.add_argument("--steps", type=int, help="total optimizer steps to reach")
    p.add_argument("--ship", action="store_true",
                   help="do not train: copy OUT/weights into numina_hooks/toy/weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-start", type=int, default=None,
                   help="step where a cosine decay of the learning rate to --final-lr * lr "
                        "(reached at --steps) begins; default: constant after warm-up")
    p.add_argument("--final-lr", type=float, default=0.05,
                   help="final learning rate of the decay, as a fraction of --lr")
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay per step")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help='where to train: "cpu" or "cuda"')
    p.add_argument("--workers", type=int, default=0,
                   help="processes making the clips ahead of the training loop (0: none)")
    p.add_argument("--init-weights", default=None,
                   help="start a new run from these trained weights (a weights folder) instead of "
                        "a random initialisation")
    p.add_argument("--instance-heads", default="",
                   help='self-attention heads trained to attend within objects, "BLOCK:HEAD,..." '
                        "(numina_hooks.toy.instance_head); default: none")
    p.add_argument("--instance-weight", type=float, default=0.01,
                   help="weight of the instance-head loss against the flow loss")
    p.add_argument("--instance-max-sigma", type=float, default=0.8,
                   help="the instance-head loss applies to clips noised to at most this sigma")
    p.add_argument("--instance-target", default="frame-background", choices=INSTANCE_TARGETS,
                   help="what an object row of an instance head is pulled towards (see train())")
    p.add_argument("--own-states", default="",
                   help="comma-separated files of the model's own sampling states "
                        "(python -m numina_hooks.toy.own_states) on which the instance heads are "
                        "also trained; default: none")
    p.add_argument("--own-states-weight", type=float, default=0.03,
                   help="weight of the instance-head loss on the own states")
    p.add_argument("--own-states-batch", type=int, default=8, help="own states per step")
    p.add_argument("--arch", default=None, choices=sorted(toy_model.ARCHITECTURES),
                   help="model architecture of a new run (default v2, or that of --init-weights)")
    p.add_argument("--sigma-location", type=float, default=0.0,
                   help="location of the logit-normal noise levels of the flow loss (0: centred on "
                        "sigma 0.5; positive: more training on the noisy steps that decide the layout)")
    p.add_argument("--noun-blocks", default="",
                   help="blocks whose cross-attention learns to put each object's patches on its noun "
                        "(toy.noun_maps), e.g. '3'")
    p.add_argument("--noun-weight", type=float, default=0.02, help="weight of the noun-map loss")
    p.add_argument("--noun-max-sigma", type=float, default=0.9,
                   help="noun-map loss only on clips noised to at most this sigma")
    p.add_argument("--foreground-weight", type=float, default=1.0,
                   help="weight of object pixels (and their edges) in the flow loss against "
                        "background pixels (1: plain mean squared error)")
    p.add_argument("--count-range", default=None, choices=sorted(world.COUNT_RANGES),
                   help="how many objects the training clips hold (toy.world.COUNT_RANGES; default: "
                        "that of --init-weights, else v2: 1-6 a category, 8 in all; a resumed run "
                        "keeps its own)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.ship:
        info = ship(a.out)
        print(f"shipped step {info['steps']} weights from {a.out} to {toy_model.WEIGHTS_DIR}")
        return
    if a.steps is None:
        p.error("--steps is required unless --ship")
    if a.threads:
        torch.set_num_threads(a.threads)
    summary = train(a.out, a.steps, a.seed, a.batch, a.lr, a.warmup, a.ema, a.caption_dropout,
                    a.ckpt_every, progress=not a.no_progress, device=a.device,
                    workers=a.workers, decay_start=a.decay_start, final_lr=a.final_lr,
                    init_weights=a.init_weights, instance_heads=a.instance_heads,
                    instance_weight=a.instance_weight, instance_max_sigma=a.instance_max_sigma,
                    instance_target=a.instance_target, own_states=a.own_states,
                    own_states_weight=a.own_states_weight, own_states_batch=a.own_states_batch,
                    arch=a.arch, sigma_location=a.sigma_location, noun_blocks=a.noun_blocks,
                    noun_weight=a.noun_weight, noun_max_sigma=a.noun_max_sigma,
                    foreground_weight=a.foreground_weight, counts_in=a.count_range)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
