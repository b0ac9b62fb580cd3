"""Tiny, real diffusers pipelines built in memory (random weights, no hub).

Used by the test suite, the benchmarks and ``numina tour`` (a random-weight Wan). The
tokenizer is trained on the spot with ``tokenizers`` (Unigram, T5 special
tokens: pad=0, eos=1, unk=2) and wrapped as a ``T5TokenizerFast``, so offset
mappings and padding behave as with the real UMT5 / T5 tokenizers.
"""

from __future__ import annotations

from typing import Optional

import torch

from .hookspecs import hookimpl

_CORPUS = [
    "three cats chasing two dogs in a park",
    "a red ball and four blue cubes on a table",
    "two fire-breathing dragons flying over five hot air balloons",
    "a lone astronaut floating in space with one small satellite",
    "six birds sitting on a wire while a dog barks",
    "seven apples and eight oranges in a basket",
    "a pair of swans gliding on a lake at sunset",
    "a dozen eggs in a carton next to three spoons",
    "four hikers planting two flags on the summit",
    "a wolf and a fox running through the snow covered forest",
    "red discs blue squares yellow triangles drifting moving",
    "one two three four five six seven eight nine ten eleven twelve",
]


class ViewRecorder:
    """A plugin that records ``(transformer, layer, kind, step, branch, geometry)`` of every
    attention view in ``calls``: what a test checks the hooks saw."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def on_attention(self, view):
        self.calls.append((view.transformer, view.layer, view.kind, view.step, view.branch, view.geometry))


def tiny_tokenizer(extra_sentences: Optional[list[str]] = None, vocab_size: int = 400):
    """A T5-style fast tokenizer trained on a small corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    corpus = _CORPUS + list(extra_sentences or [])
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def tiny_wan_pipeline(
    seed: int = 0,
    num_layers: int = 2,
    heads: int = 2,
    head_dim: int = 12,
    two_transformers: bool = False,
    expand_timesteps: bool = False,
    rope_max_seq_len: int = 32,
):
    """A random-weight diffusers ``WanPipeline`` (64x64, 9 frames in well under a second a step).

    ``two_transformers=True`` builds a Wan2.2 A14B-style pipeline with
    ``transformer`` and ``transformer_2`` split at ``boundary_ratio=0.5``;
    ``expand_timesteps=True`` a Wan2.2 TI2V-5B-style one (a timestep per token).
    ``rope_max_seq_len`` bounds the latent frames, rows and columns (patches) it can take
    (64 for Wan2.1's 480x832, 81 frames: 21 x 30 x 52).
    """
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    ).eval()

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=rope_max_seq_len,
        ).eval()

    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    extra = {"expand_timesteps": True} if expand_timesteps else {}
    if two_transformers:
        extra = dict(transformer_2=transformer(), boundary_ratio=0.5)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer(), **extra
    )


def tiny_cogvideox_pipeline(seed: int = 0, num_layers: int = 2, heads: int = 2, head_dim: int = 16, rope: bool = False):
    """A random-weight diffusers ``CogVideoXPipeline`` (text length 16; 9 frames -> 3 latent frames)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    ).eval()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=num_layers, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=rope,
    ).eval()
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()
    scheduler = CogVideoXDDIMScheduler()
    return CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


#: Call arguments that make the tiny pipelines fast and deterministic.
WAN_CALL = dict(height=64, width=64, num_frames=9, num_inference_steps=4, guidance_scale=3.0, max_sequence_length=24,
                output_type="pt")
COGVIDEOX_CALL = dict(height=64, width=64, num_frames=9, num_inference_steps=4, guidance_scale=3.0,
                      max_sequence_length=16, output_type="pt")


def scalar_reads():
    """A torch dispatch mode counting reads of a tensor's value into Python (``item``,
    ``float``, ``int``: on a GPU each one waits for the device): ``with scalar_reads() as r:
    ...; r.count``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ScalarReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                self.count += 1
            return func(*args, **(kwargs or {}))

    return ScalarReads()
