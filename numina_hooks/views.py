"""The attention view handed to ``on_attention`` plugins.

A view is cheap to build: it holds references to the kernel's q/k/v and a few
slices; what an adapter can leave to the tensors' shapes (a token slice covering
every token, the default scale) is worked out when a plugin first reads it, so an
observer that reads ``view.layer`` pays for none of it. Everything expensive
(attention maps) is computed on request, in
float32, one frame (and, for long key sequences, one group of heads) at a
time, so memory stays bounded by one frame's ``HW x keys`` block per head
group and the full ``tokens x tokens`` matrix is never built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .context import CallContext, Geometry

#: Elements of float32 scores materialised at once when computing maps.
MAP_CHUNK_ELEMENTS = 1 << 25  # 32M floats = 128 MB


class _EveryToken:
    """The token slice ``slice(0, n)`` over every query (or key) token of the view's tensors,
    for an adapter to pass without reading their shapes; the view reads them when a plugin
    first asks for the slice."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EVERY_TOKEN"


EVERY_TOKEN = _EveryToken()


def float32_copy(t: torch.Tensor) -> torch.Tensor:
    """A new contiguous float32 copy of ``t`` (any dtype and strides, same device) in one
    pass: ``float()`` keeps a strided view's strides, and a ``contiguous()`` after it copies
    again."""
    return torch.empty(t.shape, dtype=torch.float32, device=t.device).copy_(t)


@dataclass(frozen=True)
class Site:
    """One hooked attention layer.

    :ivar layer: 0-based transformer block index.
    :ivar kind: ``"self"``, ``"cross"`` or ``"joint"`` (CogVideoX: one softmax
        over ``[text | video]`` keys, offered to plugins as a self view and a
        cross view).
    :ivar name: the module's qualified name (``"blocks.3.attn2"``).
    :ivar transformer: the transformer's attribute name in its pipeline.
    """

    layer: int
    kind: str
    name: str
    transformer: str


class AttentionView:
    """One call of an attention kernel, as plugins see it.

    Tensor layout: ``q``, ``k``, ``v`` are ``[batch, heads, tokens, head_dim]``
    views of exactly what the kernel receives (after the model's norms and
    rotary embedding); no copy is made.

    Token positions:

    * ``video_queries``: slice of query tokens that are video tokens, ordered
      frame, row, column (all of them for Wan; after the text for CogVideoX).
    * ``text_keys``: slice of key tokens that are text tokens (``None`` for a
      Wan self-attention).
    * ``video_keys``: slice of key tokens that are video tokens (``None`` for a
      Wan cross-attention).

    ``kind`` is ``"self"`` or ``"cross"``. A joint layer is offered twice, first
    with ``kind="self"`` then ``kind="cross"``, both with ``joint=True`` and the
    full joint q/k/v; a replacement returned from either is the full joint
    output.

    Context parallelism (``shard`` is a :class:`~numina_hooks.shard.SequenceShard`): ``q``,
    ``k``, ``v`` are this rank's slice of the video tokens (the keys too for a self view;
    a cross view's text keys are whole) and ``video_queries`` / ``video_keys`` describe that
    slice (local token ``i`` is global token ``shard.offset + i``), while ``geometry`` and
    the maps are global: the map methods gather the slices first (``full_q``, ``full_k``), a
    collective that every rank must make at the same call. A replacement output covers the
    local rows only.
    """

    __slots__ = (
        "site",
        "kind",
        "context",
        "_scale",
        "_video_queries",
        "_text_keys",
        "_video_keys",
        "_q",
        "_k",
        "_v",
        "_layout",
        "shard",
        "_gathered",
    )

    def __init__(
        self,
        *,
        site: Site,
        kind: str,
        context: CallContext,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layout: str,
        scale: Optional[float],
        video_queries,
        text_keys,
        video_keys,
        shard=None,
    ):
        """``scale=None``: the kernels' default, ``1 / sqrt(head_dim)``. Each token slice is a
        ``slice``, ``None`` (no such tokens) or :data:`EVERY_TOKEN` (all the query, or key,
        tokens); the default scale and :data:`EVERY_TOKEN` are resolved when first read."""
        self._fill(site, kind, context, q, k, v, layout, scale, video_queries, text_keys, video_keys, shard)

    @classmethod
    def _of(cls, site: Site, kind: str, context: CallContext, q, k, v, layout: str, scale: Optional[float],
            video_queries, text_keys, video_keys) -> "AttentionView":
        """The view ``cls(site=site, kind=kind, ...)`` makes with no shard, built without the
        keyword call (adapters make one at every viewed kernel call)."""
        self = object.__new__(cls)
        self._fill(site, kind, context, q, k, v, layout, scale, video_queries, text_keys, video_keys, None)
        return self

    def _fill(self, site, kind, context, q, k, v, layout, scale, video_queries, text_keys, video_keys, shard):
        """Set every slot (the one place both constructors go through)."""
        self.site = site
        self.kind = kind
        self.context = context
        self._scale = scale
        self._video_queries = video_queries
        self._text_keys = text_keys
        self._video_keys = video_keys
        self._q, self._k, self._v = q, k, v
        self._layout = layout
        self.shard = shard
        self._gathered = None  # made by the first gather (context parallelism)

    # ------------------------------------------------------------------ facts
    @property
    def scale(self) -> float:
        """The softmax scale of the kernel call (``1 / sqrt(head_dim)`` unless the model passed one)."""
        scale = self._scale
        if scale is None:
            scale = self._scale = 1.0 / math.sqrt(self._q.shape[-1])
        return scale

    @property
    def video_queries(self) -> slice:
        """Slice of the query tokens that are video tokens (see the class docstring)."""
        return self._slice("_video_queries", self._q)

    @property
    def text_keys(self) -> Optional[slice]:
        """Slice of the key tokens that are text tokens, or None."""
        return self._slice("_text_keys", self._k)

    @property
    def video_keys(self) -> Optional[slice]:
        """Slice of the key tokens that are video tokens, or None."""
        return self._slice("_video_keys", self._k)

    def _slice(self, attr: str, t: torch.Tensor) -> Optional[slice]:
        """The token slice stored in ``attr``; ``EVERY_TOKEN`` becomes every token of ``t``
        (worked out on first read and kept)."""
        s = getattr(self, attr)
        if s is EVERY_TOKEN:
            s = slice(0, self._tokens(t))
            setattr(self, attr, s)
        return s

    def _tokens(self, t: torch.Tensor) -> int:
        return t.shape[2] if self._layout == "BHLD" else t.shape[1]

    @property
    def layer(self) -> int:
        """0-based block index within its transformer."""
        return self.site.layer

    @property
    def joint(self) -> bool:
        """True for a joint (text and video in one softmax) layer."""
        return self.site.kind == "joint"

    @property
    def transformer(self) -> str:
        return self.context.transformer

    @property
    def step(self) -> Optional[int]:
        return self.context.step

    @property
    def timestep(self) -> Optional[float]:
        return self.context.timestep

    @property
    def branch(self):
        return self.context.branch

    @property
    def geometry(self) -> Geometry:
        if self.context.geometry is None:  # pragma: no cover - adapters always set it
            raise RuntimeError("this call has no known geometry")
        return self.context.geometry

    @property
    def batch_size(self) -> int:
        return self._q.shape[0]

    @property
    def heads(self) -> int:
        return self._q.shape[1] if self._layout == "BHLD" else self._q.shape[2]

    def rows_of(self, branch: str) -> list[int]:
        """Batch rows that belong to ``branch`` (``"cond"`` / ``"uncond"``)."""
        names = self.context.branch_rows(self.batch_size)
        return [i for i, name in enumerate(names) if name == branch]

    # ------------------------------------------------------------------ tensors
    def _canonical(self, t: torch.Tensor) -> torch.Tensor:
        return t if self._layout == "BHLD" else t.transpose(1, 2)

    @property
    def q(self) -> torch.Tensor:
        """Queries ``[batch, heads, query_tokens, head_dim]``."""
        return self._canonical(self._q)

    @property
    def k(self) -> torch.Tensor:
        """Keys ``[batch, heads, key_tokens, head_dim]``."""
        return self._canonical(self._k)

    @property
    def v(self) -> torch.Tensor:
        """Values ``[batch, heads, key_tokens, head_dim]``."""
        return self._canonical(self._v)

    def full_q(self) -> torch.Tensor:
        """Queries of the whole sequence ``[batch, heads, tokens, head_dim]``: ``q`` itself,
        or under context parallelism every rank's slice gathered (a collective; cached)."""
        return self._full("q")

    def full_k(self) -> torch.Tensor:
        """Keys of the whole sequence, as :meth:`full_q` (a cross view's text keys are whole
        on every rank: ``k`` itself)."""
        return self._full("k")

    def _full(self, name: str) -> torch.Tensor:
        t = self.q if name == "q" else self.k
        if self.shard is None or (name == "k" and self.video_keys is None):
            return t
        gathered = self._gathered
        if gathered is None:
            gathered = self._gathered = {}
        if name not in gathered:
            gathered[name] = self.shard.gather(t, 2)
        return gathered[name]

    def set_shard(self, parallel_config) -> None:
        """Record which slice of the video tokens this call holds, from the kernel's
        ``parallel_config`` (diffusers' context parallelism); nothing without one."""
        from .shard import shard_from_parallel_config

        if parallel_config is None:
            return
        geo = self.geometry
        total = geo.frames * geo.frame_tokens
        local = self.video_queries.stop - self.video_queries.start
        if self.joint or self.video_queries.start != 0 or local != self.q.shape[2]:
            cp = getattr(parallel_config, "context_parallel_config", None)
            if cp is not None and (getattr(cp, "_world_size", None) or 1) > 1:
                raise NotImplementedError(
                    f"layer {self.layer} ({self.site.name}): context parallelism is supported where the attention "
                    "sequence is the video tokens alone (Wan); this call mixes text and video tokens")
            return
        self.shard = shard_from_parallel_config(parallel_config, local, total)

    def to_model_layout(self, out: torch.Tensor) -> torch.Tensor:
        """Convert a canonical ``[B, H, L, d]`` output to the kernel's own layout."""
        return out if self._layout == "BHLD" else out.transpose(1, 2)

    # ------------------------------------------------------------------ maps
    def self_attention_map(
        self, frame: int, batch: Optional[Sequence[int]] = None, heads: Optional[Sequence[int]] = None
    ) -> torch.Tensor:
        """Frame-local self-attention: ``[batch, heads, HW, HW]`` float32.

        Row ``i`` is the softmax, over the keys of the same latent ``frame``,
        of ``q_i . k_j * scale``: how video token ``i`` of that frame attends
        to the tokens of its own frame. Rows sum to 1.
        """
        q, k = self._frame_qk("self_attention_map", frame, batch, heads)
        return torch.softmax(torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale, dim=-1)

    def self_attention_qk(
        self, frame: int, batch: Optional[Sequence[int]] = None, heads: Optional[Sequence[int]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries and keys behind ``self_attention_map(frame)``: ``(q, k)``, each
        ``[batch, heads, HW, head_dim]`` in the model's dtype and on its device (slices of
        the kernel's tensors; no copy unless ``batch``/``heads`` pick rows).

        ``softmax(q @ k.transpose(-1, -2) * view.scale, -1)`` in float32 is the map; a reader
        that needs only some of its entries can compute them from these without building
        the ``[HW, HW]`` block of every head.
        """
        return self._frame_qk("self_attention_qk", frame, batch, heads)

    def _frame_qk(self, caller: str, frame: int, batch, heads) -> tuple[torch.Tensor, torch.Tensor]:
        if self.video_keys is None:
            raise ValueError(
                f"{caller}: layer {self.layer} ({self.site.name}) is a cross-attention; "
                "ask a view with kind 'self' (or a joint view)"
            )
        geo = self.geometry
        if not 0 <= frame < geo.frames:
            raise ValueError(f"frame={frame} is out of range: this call has {geo.frames} latent frames (0..{geo.frames - 1})")
        hw = geo.frame_tokens
        q0 = self.video_queries.start + frame * hw
        k0 = self.video_keys.start + frame * hw
        # the frame first: picking batch rows of the whole sequence would copy every frame
        q = self._select(self.full_q()[:, :, q0 : q0 + hw], batch, heads)
        k = self._select(self.full_k()[:, :, k0 : k0 + hw], batch, heads)
        return q, k

    def cross_attention_map(
        self,
        token_columns: Sequence[int],
        batch: Optional[Sequence[int]] = None,
        heads: Optional[Sequence[int]] = None,
    ) -> torch.Tensor:
        """Video-to-text attention on given text columns: ``[batch, heads, F, H, W]`` float32.

        ``token_columns`` index the text tokens (0 = first text token). The
        value is the mean over those columns of the attention probability,
        where the softmax runs over every key the model attends to: all text
        tokens for Wan's cross-attention, the whole ``[text | video]`` sequence
        for CogVideoX's joint attention (its video->text block).
        """
        return self.cross_attention_maps([token_columns], batch, heads)[0]

    def cross_attention_maps(
        self,
        token_columns: Sequence[Sequence[int]],
        batch: Optional[Sequence[int]] = None,
        heads: Optional[Sequence[int]] = None,
    ) -> list[torch.Tensor]:
        """:meth:`cross_attention_map` of several column sets (one per noun), each
        ``[batch, heads, F, H, W]`` float32, with each row's softmax normaliser computed
        once for all of them. Every map equals what ``cross_attention_map`` gives alone."""
        if self.text_keys is None:
            raise ValueError(
                f"cross_attention_map: layer {self.layer} ({self.site.name}) is a self-attention; "
                "ask a view with kind 'cross' (or a joint view)"
            )
        n_text = self.text_keys.stop - self.text_keys.start
        sets = [torch.as_tensor(list(c), dtype=torch.long) for c in token_columns]
        for cols in sets:
            if cols.numel() == 0:
                raise ValueError("cross_attention_map: token_columns is empty; pass the noun's text token indices")
            if int(cols.min()) < 0 or int(cols.max()) >= n_text:
                raise ValueError(
                    f"cross_attention_map: token_columns {cols.tolist()} out of range: the text has {n_text} tokens"
                )
        geo = self.geometry
        q = self._select(self.full_q(), batch, heads)
        k = self._select(self.full_k(), batch, heads)
        B, H = q.shape[0], q.shape[1]
        hw = geo.frame_tokens
        outs = [torch.empty(B, H, geo.frames, hw, dtype=torch.float32, device=q.device) for _ in sets]
        k_cols = [k.index_select(2, (cols + self.text_keys.start).to(k.device)).float().transpose(-1, -2)
                  for cols in sets]
        keys, multiplicity = distinct_keys(k)  # the normalisers need each distinct key once
        n_keys = keys.shape[2]
        head_chunk = max(1, min(H, MAP_CHUNK_ELEMENTS // max(1, B * hw * n_keys)))
        kt = keys.float().transpose(-1, -2)  # [B, H, d, Lk'], converted once for every frame
        for f in range(geo.frames):
            q0 = self.video_queries.start + f * hw
            for h0 in range(0, H, head_chunk):
                h1 = min(H, h0 + head_chunk)
                # float32, contiguous and scaled in two passes over one new tensor (the scale
                # on q: d, not Lk, products); ``float() * scale`` made two strided copies
                qf = float32_copy(q[:, h0:h1, q0 : q0 + hw]).mul_(self.scale)
                s = torch.matmul(qf, kt[:, h0:h1])  # [B, h, hw, Lk']
                top = s.amax(-1, keepdim=True)
                e = s.sub_(top).exp_()  # in place: no second [hw, Lk']
                total = e.sum(-1, keepdim=True) if multiplicity is None else torch.matmul(e, multiplicity)
                lse = top + total.log_()
                for out, kc in zip(outs, k_cols):
                    out[:, h0:h1, f] = torch.matmul(qf, kc[:, h0:h1]).sub_(lse).exp_().mean(-1)
        return [out.view(B, H, geo.frames, geo.height, geo.width) for out in outs]

    @staticmethod
    def _select(t: torch.Tensor, batch, heads) -> torch.Tensor:
        if batch is not None:
            t = t[list(batch)]
        if heads is not None:
            t = t[:, list(heads)]
        return t

    def __repr__(self) -> str:
        geo = self.context.geometry
        return (
            f"AttentionView(layer={self.layer}, kind={self.kind!r}, joint={self.joint}, step={self.step}, "
            f"branch={self.branch!r}, transformer={self.transformer!r}, q={tuple(self.q.shape)}, "
            f"k={tuple(self.k.shape)}, geometry={geo})"
        )


def distinct_keys(k: torch.Tensor, *, min_saving: float = 0.25
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The distinct key tokens of ``k`` ``[B, H, L, d]`` and how often each occurs.

    A softmax normaliser ``sum_j exp(q . k_j)`` needs each distinct key once, weighted by its
    count: exact, with fewer products. Wan pads its prompt with zeros to 512 tokens, and
    every padding token reaches the cross-attention as the same key (the text embedder and
    ``to_k``/``norm_k`` map equal inputs to equal keys), so a 20-token prompt has about 21
    distinct keys of 512. Tokens are equal when their keys are equal in every batch row and
    head. Returns ``(keys [B, H, L', d], counts)`` with ``counts`` float32 ``[L', 1]`` on
    ``k``'s device, or ``(k, None)`` when folding would save less than ``min_saving`` of the
    keys (the plain sum is then as cheap)."""
    B, H, L, d = k.shape
    if L < 2:
        return k, None
    tokens = k.permute(2, 0, 1, 3).reshape(L, B * H * d)
    # group the tokens by a fingerprint: equal tokens have equal fingerprints, so there are
    # at least as many distinct tokens as fingerprints (video keys end here)
    weight = torch.linspace(1.0, 2.0, B * H * d, device=k.device)
    _, inverse, counts = torch.unique(tokens.float() @ weight, return_inverse=True, return_counts=True)
    n = int(counts.numel())
    if n > (1.0 - min_saving) * L:
        return k, None
    # one representative per group (its first token); the groups are the distinct keys when
    # every token equals its representative, else (a fingerprint collision) sort the rows
    pick = _first_of_each_group(inverse, n)
    if not torch.equal(tokens, tokens.index_select(0, pick.index_select(0, inverse))):
        _, inverse, counts = torch.unique(tokens, dim=0, return_inverse=True, return_counts=True)
        n = int(counts.numel())
        pick = _first_of_each_group(inverse, n)
    return k.index_select(2, pick), counts.to(torch.float32).reshape(n, 1)


def _first_of_each_group(group: torch.Tensor, n: int) -> torch.Tensor:
    """For ``group`` long ``[L]`` (each position's group id in ``0..n-1``): the first position
    of every group, long ``[n]``."""
    positions = torch.arange(group.numel(), device=group.device)
    first = torch.full((n,), group.numel(), dtype=torch.long, device=group.device)
    return first.scatter_reduce_(0, group, positions, reduce="amin")
