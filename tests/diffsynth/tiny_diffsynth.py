"""A tiny random-weight DiffSynth-Studio ``WanVideoPipeline``, built in memory on CPU.

Every part is DiffSynth's own class (``WanModel``, ``WanTextEncoder``, ``WanVideoVAE``,
``FlowMatchScheduler``, the pipeline and its units); only the UMT5 tokenizer is
replaced by one trained on the spot (:func:`numina_hooks.testing.tiny_tokenizer`),
wrapped in DiffSynth's ``HuggingfaceTokenizer`` as ``from_pretrained`` would.
A 64x64, 9-frame, 4-step generation takes about 0.2 s on one CPU thread.
"""

from __future__ import annotations

import torch

#: Call arguments of the tiny pipeline (tiled VAE decoding needs large frames).
CALL = dict(
    height=64, width=64, num_frames=9, num_inference_steps=4, cfg_scale=3.0, tiled=False,
    output_type="floatpoint", progress_bar_cmd=lambda timesteps: timesteps,
)


def tiny_tokenizer_wrapper(seq_len: int = 512):
    """DiffSynth's ``HuggingfaceTokenizer`` around a tokenizer trained on the spot (no hub)."""
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer

    from numina_hooks.testing import tiny_tokenizer

    wrapper = HuggingfaceTokenizer.__new__(HuggingfaceTokenizer)  # __init__ would download
    wrapper.name = "tiny-umt5"
    wrapper.seq_len = seq_len
    wrapper.clean = "whitespace"
    wrapper.tokenizer = tiny_tokenizer()
    wrapper.vocab_size = len(wrapper.tokenizer)
    return wrapper


def tiny_dit(num_layers: int = 2, heads: int = 2, head_dim: int = 12):
    from diffsynth.models.wan_video_dit import WanModel

    return WanModel(
        dim=heads * head_dim, in_dim=16, ffn_dim=48, out_dim=16, text_dim=32, freq_dim=16, eps=1e-6,
        patch_size=(1, 2, 2), num_heads=heads, num_layers=num_layers, has_image_input=False,
    ).eval()


def tiny_vae():
    """DiffSynth's ``WanVideoVAE`` with a small ``VideoVAE_`` inside (the default is 127M parameters)."""
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    vae = WanVideoVAE.__new__(WanVideoVAE)
    torch.nn.Module.__init__(vae)
    vae.mean, vae.std = torch.zeros(16), torch.ones(16)
    vae.scale = [vae.mean, 1.0 / vae.std]
    vae.model = VideoVAE_(dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).eval().requires_grad_(False)
    vae.upsampling_factor, vae.z_dim = 8, 16
    return vae


def tiny_pipeline(seed: int = 0, two_dits: bool = False, num_layers: int = 2):
    """A random-weight ``WanVideoPipeline`` (float32, CPU); ``two_dits=True`` adds ``dit2``
    (Wan2.2 A14B: the pipeline switches to it below ``switch_DiT_boundary``)."""
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer_wrapper()
    pipe = WanVideoPipeline(device="cpu", torch_dtype=torch.float32)
    pipe.tokenizer = tokenizer
    pipe.text_encoder = WanTextEncoder(
        vocab=tokenizer.vocab_size, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=1, num_buckets=8
    ).eval()
    pipe.dit = tiny_dit(num_layers=num_layers)
    if two_dits:
        pipe.dit2 = tiny_dit(num_layers=num_layers)
    pipe.vae = tiny_vae()
    return pipe
