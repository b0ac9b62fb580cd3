"""A stand-in for the official Wan repositories' model and ``WanT2V`` (the real ones need CUDA).

Same module names (``blocks.N.self_attn``, ``blocks.N.cross_attn``), same call signatures
(``WanModel.forward(x, t, context, seq_len)`` with lists of per-sample tensors,
``WanSelfAttention.forward(x, seq_lens, grid_sizes, freqs)``,
``WanT2VCrossAttention.forward(x, context, context_lens)``), and a module-level
``flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0., softmax_scale=None, ...)``
taking ``[B, L, heads, head_dim]`` and called by keyword from self-attention, as in
``wan/modules/model.py``. The arithmetic is simpler (no RoPE, plain time embedding): this
exercises our description and driver, it is not a model of Wan's numerics.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                    causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """[B, Lq, N, d] x [B, Lk, N, d] -> [B, Lq, N, d] (CPU SDPA; the real one asserts CUDA)."""
    if q_scale is not None:
        q = q * q_scale
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=softmax_scale)
    return out.transpose(1, 2).type_as(q)


class WanSelfAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.window_size = (-1, -1)

    def forward(self, x, seq_lens, grid_sizes, freqs):
        b, s, n, d = *x.shape[:2], self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, s, n, d)
        k = self.norm_k(self.k(x)).view(b, s, n, d)
        v = self.v(x).view(b, s, n, d)
        x = flash_attention(q=q, k=k, v=v, k_lens=seq_lens, window_size=self.window_size)
        return self.o(x.flatten(2))


class WanT2VCrossAttention(WanSelfAttention):
    def forward(self, x, context, context_lens):
        b, n, d = x.size(0), self.num_heads, self.head_dim
        q = self.norm_q(self.q(x)).view(b, -1, n, d)
        k = self.norm_k(self.k(context)).view(b, -1, n, d)
        v = self.v(context).view(b, -1, n, d)
        x = flash_attention(q, k, v, k_lens=context_lens)
        return self.o(x.flatten(2))


class WanAttentionBlock(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.self_attn = WanSelfAttention(dim, num_heads)
        self.cross_attn = WanT2VCrossAttention(dim, num_heads)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, e, seq_lens, grid_sizes, freqs, context, context_lens):
        x = x + self.self_attn(self.norm1(x) * (1 + e), seq_lens, grid_sizes, freqs)
        x = x + self.cross_attn(self.norm3(x), context, context_lens)
        return x + self.ffn(x)


class WanModel(nn.Module):
    def __init__(self, in_dim=16, dim=24, num_heads=2, num_layers=2, text_dim=32, text_len=512, patch_size=(1, 2, 2)):
        super().__init__()
        self.patch_size, self.text_len, self.dim, self.out_dim = patch_size, text_len, dim, in_dim
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList([WanAttentionBlock(dim, num_heads) for _ in range(num_layers)])
        self.head = nn.Linear(dim, in_dim * math.prod(patch_size))

    def forward(self, x, t, context, seq_len, clip_fea=None, y=None):
        x = [self.patch_embedding(u.unsqueeze(0)) for u in x]
        grid_sizes = torch.stack([torch.tensor(u.shape[2:], dtype=torch.long) for u in x])
        x = [u.flatten(2).transpose(1, 2) for u in x]
        seq_lens = torch.tensor([u.size(1) for u in x], dtype=torch.long)
        x = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1) for u in x])
        e = self.time_embedding((t.float() / 1000).view(-1, 1)).unsqueeze(1)
        context = self.text_embedding(
            torch.stack([torch.cat([u, u.new_zeros(self.text_len - u.size(0), u.size(1))]) for u in context])
        )
        for block in self.blocks:
            x = block(x, e=e, seq_lens=seq_lens, grid_sizes=grid_sizes, freqs=None, context=context, context_lens=None)
        x = self.head(x)
        out = []
        for u, (f, h, w) in zip(x, grid_sizes.tolist()):
            u = u[: f * h * w].view(f, h, w, *self.patch_size, self.out_dim)
            u = torch.einsum("fhwpqrc->cfphqwr", u).reshape(self.out_dim, f * self.patch_size[0],
                                                               h * self.patch_size[1], w * self.patch_size[2])
            out.append(u)
        return [u.float() for u in out]


class HuggingfaceTokenizer:
    """Like wan/modules/tokenizers.py's: pads to ``seq_len``, cleans whitespace first."""

    def __init__(self, tokenizer, seq_len=512, clean="whitespace"):
        self.tokenizer, self.seq_len, self.clean = tokenizer, seq_len, clean

    def _clean(self, text):
        return " ".join(text.split())

    def __call__(self, sequence, return_mask=False, add_special_tokens=True):
        sequence = [self._clean(u) for u in ([sequence] if isinstance(sequence, str) else sequence)]
        ids = self.tokenizer(sequence, return_tensors="pt", padding="max_length", truncation=True,
                             max_length=self.seq_len, add_special_tokens=add_special_tokens)
        return (ids.input_ids, ids.attention_mask) if return_mask else ids.input_ids


class T5EncoderModel:
    """``text_encoder([prompt], device)`` -> list of ``[L_i, C]``, trimmed to each prompt's length."""

    def __init__(self, tokenizer, dim=32):
        self.tokenizer = HuggingfaceTokenizer(tokenizer)
        self.model = nn.Embedding(len(tokenizer), dim)

    def __call__(self, texts, device):
        ids, mask = self.tokenizer(texts, return_mask=True)
        seq_lens = mask.gt(0).sum(dim=1).long()
        context = self.model(ids.to(device))
        return [u[:v] for u, v in zip(context, seq_lens)]


class _VAEModel(nn.Module):
    z_dim = 16


class WanVAE:
    """``decode(list of [z, f, h, w]) -> list of [3, 4(f-1)+1, 8h, 8w]`` (nearest upsampling)."""

    def __init__(self):
        self.model = _VAEModel()

    def decode(self, zs):
        out = []
        for z in zs:
            rgb = z[:3].clamp(-1, 1)
            rgb = rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
            frames = torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(4, dim=1)], dim=1)
            out.append(frames)
        return out


class WanT2V:
    """The attributes of ``wan.text2video.WanT2V`` that its ``generate`` uses (Wan2.1 layout;
    ``two_experts=True``: Wan2.2 A14B's ``high_noise_model`` / ``low_noise_model``)."""

    def __init__(self, tokenizer, seed=0, two_experts=False, num_layers=2):
        torch.manual_seed(seed)
        self.device = torch.device("cpu")
        self.num_train_timesteps = 1000
        self.param_dtype = torch.float32
        self.t5_cpu = False
        self.text_len = 512
        self.vae_stride = (4, 8, 8)
        self.patch_size = (1, 2, 2)
        self.sp_size = 1
        self.rank = 0
        self.sample_neg_prompt = "blurry, static"
        self.text_encoder = T5EncoderModel(tokenizer)
        self.vae = WanVAE()
        if two_experts:
            self.boundary = 0.875
            self.high_noise_model = WanModel(num_layers=num_layers).eval()
            self.low_noise_model = WanModel(num_layers=num_layers).eval()
            self.init_on_cpu = True
        else:
            self.model = WanModel(num_layers=num_layers).eval()

    def _prepare_model_for_timestep(self, t, boundary, offload_model):
        return self.high_noise_model if t.item() >= boundary else self.low_noise_model


def euler_scheduler(t2v, sample_solver, sampling_steps, shift):
    """diffusers' flow-matching Euler scheduler, in place of Wan's UniPC (not importable here)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=t2v.num_train_timesteps, shift=shift)
    scheduler.set_timesteps(sampling_steps, device=t2v.device)
    return scheduler, scheduler.timesteps
