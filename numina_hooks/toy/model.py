"""The tiny toy text-to-video model: a real diffusers ``WanPipeline`` over pixel latents.

Parts (all real diffusers / transformers classes, tiny configs):

- ``WanTransformer3DModel``: 6 layers, patch (1, 2, 2), 4 heads of 32, FFN 256, 3 input and
  output channels (RGB), text dim 64 (about 1.35M parameters);
- ``UMT5EncoderModel``: 2 layers, d_model 64, trained jointly with the transformer;
- a word-level tokenizer over the toy caption vocabulary (``tokenizers`` ``WordLevel``,
  lowercase, split on whitespace and punctuation, ``</s>`` appended like T5), wrapped as a
  ``PreTrainedTokenizerFast`` (offset mapping works, so noun -> token columns works);
- ``FlowMatchEulerDiscreteScheduler`` (shift 1), the training objective's sampler.

**Latents are pixels.** There is no VAE: the pipeline is built with ``vae=None``, so it
uses Wan's default factors (4 in time, 8 in space). A call for ``num_frames=13``,
``height=width=192`` therefore samples a latent grid [B, 3, 4, 24, 24], which *is* the
clip: 4 frames of 24x24 RGB scaled to [-1, 1] (:func:`frames_to_latents`). Always call
with ``output_type="latent"`` (``TOY_CALL`` holds the full set of arguments) and turn the
result into frames with :func:`toy_frames`. To the transformer, and to any attention hook,
this is an ordinary Wan call: 4 latent frames of 12x12 patches, text padded to
``MAX_TEXT_TOKENS`` tokens, cond and uncond branches in separate calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import world

WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_TEXT_TOKENS = 24
LATENT_FRAMES = world.NUM_FRAMES
# Wan's pipeline maps num_frames -> (num_frames - 1) // 4 + 1 latent frames and
# height -> height // 8 latent rows when it has no VAE to ask.
_WAN_TEMPORAL, _WAN_SPATIAL = 4, 8

TOY_CALL = {
    "num_frames": (LATENT_FRAMES - 1) * _WAN_TEMPORAL + 1,  # 13 -> 4 latent frames
    "height": world.SIZE * _WAN_SPATIAL,  # 192 -> 24 latent rows
    "width": world.SIZE * _WAN_SPATIAL,
    "num_inference_steps": 20,
    "guidance_scale": 4.0,
    "max_sequence_length": MAX_TEXT_TOKENS,
    "output_type": "latent",
}
"""Keyword arguments for ``pipe(prompt=..., generator=..., **TOY_CALL)``."""

TRANSFORMER_CONFIG = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 3,
    "out_channels": 3,
    "text_dim": 64,
    "freq_dim": 64,
    "ffn_dim": 256,
    "num_layers": 6,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 64,
}

TEXT_ENCODER_CONFIG = {
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 16,
    "relative_attention_max_distance": 32,
    "dropout_rate": 0.0,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

#: Named architectures (transformer config, text-encoder config). "v2" is the shipped
#: weights' (1.35M parameters); "v3" is wider where the text conditions the video (text
#: encoder 4 layers of width 128, text dim 128), deeper (8 blocks) and with a wider FFN, with
#: the same heads (4 of 32), patches and tokens: 2.9M parameters, about 1.5x the cost of a
#: training step.
ARCHITECTURES: dict[str, tuple[dict, dict]] = {
    "v2": (TRANSFORMER_CONFIG, TEXT_ENCODER_CONFIG),
    "v3": ({**TRANSFORMER_CONFIG, "num_layers": 8, "ffn_dim": 512, "text_dim": 128},
           {**TEXT_ENCODER_CONFIG, "d_model": 128, "num_heads": 8, "d_ff": 256, "num_layers": 4}),
}


def architecture(name: str) -> tuple[dict, dict]:
    """(transformer config, text-encoder config) of the named architecture
    (``ARCHITECTURES``)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is unknown; expected one of "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5


def build_tokenizer():
    """Word-level fast tokenizer over ``world.vocabulary()``; pad=0, eos=1, unk=2."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in world.vocabulary():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_TEXT_TOKENS,
    )


def build_pipeline(seed: int = 0, device: str = "cpu", arch: str = "v2",
                   transformer_config: dict | None = None, text_encoder_config: dict | None = None):
    """A freshly initialised toy ``WanPipeline`` (random weights, seeded) of the named
    architecture (``ARCHITECTURES``), or of the configs given (each default: the named
    architecture's)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    named_t, named_e = architecture(arch)
    t_cfg = dict(named_t if transformer_config is None else transformer_config)
    e_cfg = dict(named_e if text_encoder_config is None else text_encoder_config)
    t_cfg["patch_size"] = tuple(t_cfg["patch_size"])  # a list when read back from JSON
    if t_cfg["text_dim"] != e_cfg["d_model"]:
        raise ValueError(f"transformer text_dim={t_cfg['text_dim']} differs from the text "
                         f"encoder's d_model={e_cfg['d_model']}: the transformer reads the "
                         "encoder's states, so set both to the same width")
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**t_cfg)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **e_cfg))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None,
                       scheduler=scheduler, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def model_state(pipe) -> dict[str, torch.Tensor]:
    """The trainable weights of a toy pipeline as one flat state dict."""
    state = {f"transformer.{k}": v for k, v in pipe.transformer.state_dict().items()}
    state.update({f"text_encoder.{k}": v for k, v in pipe.text_encoder.state_dict().items()})
    return state


def load_model_state(pipe, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`model_state` (strict)."""
    for name in ("transformer", "text_encoder"):
        part = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        getattr(pipe, name).load_state_dict(part, strict=True)


def save_weights(pipe, weights_dir: str | Path, info: dict | None = None) -> None:
    """Write ``model.safetensors`` (fp16) and ``info.json`` to ``weights_dir``."""
    from safetensors.torch import save_file

    out = Path(weights_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model_state(pipe).items()}
    save_file(state, str(out / "model.safetensors"))
    t_cfg, e_cfg = pipeline_configs(pipe)
    meta = {"transformer": t_cfg, "text_encoder": e_cfg,
            "vocabulary": world.vocabulary(), **(info or {})}
    (out / "info.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")


def pipeline_configs(pipe) -> tuple[dict, dict]:
    """The architecture of a toy pipeline: (transformer config, text-encoder config), with
    the keys of ``TRANSFORMER_CONFIG`` and ``TEXT_ENCODER_CONFIG``."""
    t_cfg = {k: pipe.transformer.config[k] for k in TRANSFORMER_CONFIG}
    t_cfg["patch_size"] = tuple(t_cfg["patch_size"])
    e_cfg = {k: getattr(pipe.text_encoder.config, k) for k in TEXT_ENCODER_CONFIG}
    return t_cfg, e_cfg


def _read_info(weights_dir: str | Path) -> dict:
    """A weights folder's ``info.json`` ({} when it has none)."""
    info_file = Path(weights_dir) / "info.json"
    return json.loads(info_file.read_text()) if info_file.exists() else {}


def _configs_of(info: dict) -> tuple[dict, dict]:
    t_cfg = {**TRANSFORMER_CONFIG, **info.get("transformer", {})}
    t_cfg["patch_size"] = tuple(t_cfg["patch_size"])  # a list in JSON
    return t_cfg, {**TEXT_ENCODER_CONFIG, **info.get("text_encoder", {})}


def weights_configs(weights_dir: str | Path) -> tuple[dict, dict]:
    """The architecture a weights folder was trained with (its ``info.json``; the "v2"
    architecture where the file does not name one), comparable with ``==`` to an entry of
    ``ARCHITECTURES``."""
    return _configs_of(_read_info(weights_dir))


def weights_count_range(weights_dir: str | Path | None = None) -> str:
    """The name of the count range (``world.COUNT_RANGES``) a weights folder was trained on
    (its ``info.json``'s training arguments; "v2" where they do not name one, as for the
    shipped weights); ``None`` reads the shipped folder."""
    info = _read_info(WEIGHTS_DIR if weights_dir is None else weights_dir)
    return info.get("train_args", {}).get("counts_in", "v2")


def load_weights(pipe, weights_dir: str | Path) -> None:
    """Load the weights in ``weights_dir`` (``model.safetensors`` as written by
    :func:`save_weights`, fp16, loaded as fp32 on the pipeline's device) into ``pipe``,
    refusing weights trained on another caption vocabulary."""
    from safetensors.torch import load_file

    path = Path(weights_dir)
    file = path / "model.safetensors"
    if not file.exists():
        raise FileNotFoundError(
            f"no toy weights at {file}; train some with `python -m numina_hooks.toy.train "
            f"--out DIR` and pass weights_dir=DIR/weights")
    info = _read_info(path)
    if info:
        vocab = info.get("vocabulary")
        if vocab is not None and vocab != world.vocabulary():
            raise ValueError(f"weights in {path} were trained on another caption vocabulary; "
                             "retrain them for this version of numina_hooks.toy.world")
        want, have = _configs_of(info), pipeline_configs(pipe)
        for part, w, h in zip(("transformer", "text_encoder"), want, have):
            diff = {k: (w[k], h[k]) for k in w if k in h and w[k] != h[k]}
            if diff:
                raise ValueError(
                    f"weights in {path} are for another {part} architecture "
                    + ", ".join(f"{k}={a!r} (the pipeline has {b!r})" for k, (a, b) in diff.items())
                    + "; build the pipeline with load_toy_pipeline(weights_dir), which reads the "
                    "architecture from the weights' info.json")
    device = pipe.transformer.device
    load_model_state(pipe, {k: v.float().to(device) for k, v in load_file(str(file)).items()})


def load_toy_pipeline(weights_dir: str | Path | None = None, device: str = "cpu"):
    """The toy ``WanPipeline`` with trained weights (default: the shipped ones).

    ``weights_dir`` holds ``model.safetensors`` as written by :func:`save_weights` (or by
    ``python -m numina_hooks.toy.train``). Weights are stored in fp16 and loaded as fp32.
    Call the result with ``**TOY_CALL`` and convert with :func:`toy_frames`.
    """
    weights_dir = weights_dir if weights_dir is not None else WEIGHTS_DIR
    t_cfg, e_cfg = weights_configs(weights_dir)
    pipe = build_pipeline(transformer_config=t_cfg, text_encoder_config=e_cfg)
    load_weights(pipe, weights_dir)
    pipe.transformer.eval()
    pipe.text_encoder.eval()
    return pipe.to(device)


def frames_to_latents(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] (or [F, H, W, 3]) -> float32 latents [B, 3, F, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 4:
        x = x[None]
    return x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def toy_frames(pipe_output_latents) -> np.ndarray:
    """Latents from ``pipe(..., output_type="latent")`` -> uint8 frames.

    Accepts the pipeline output object, its ``.frames``, or a tensor [B, 3, F, H, W] or
    [3, F, H, W]. Returns [F, H, W, 3] for a batch of one (or an unbatched input), else
    [B, F, H, W, 3].
    """
    x = getattr(pipe_output_latents, "frames", pipe_output_latents)
    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"expected latents [B, 3, F, H, W], got shape {tuple(x.shape)}; "
                         "call the pipeline with output_type='latent'")
    out = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    return out[0] if out.shape[0] == 1 else out


def encode_text(pipe, captions: list[str]) -> torch.Tensor:
    """Text embeddings [B, MAX_TEXT_TOKENS, 64] exactly as ``WanPipeline`` makes them
    (padding positions zeroed), but with gradients, for training."""
    tok = pipe.tokenizer(captions, padding="max_length", max_length=MAX_TEXT_TOKENS,
                         truncation=True, add_special_tokens=True, return_tensors="pt")
    dev = pipe.text_encoder.device
    mask = tok.attention_mask.to(dev)
    hidden = pipe.text_encoder(tok.input_ids.to(dev), mask).last_hidden_state
    return hidden * mask[..., None].to(hidden.dtype)
