"""Declarative descriptions of model families outside diffusers.

A :class:`ModelDescription` is data, not code: it says where a family's
attention layers are, which module-level attention function they call and how
that function takes its tensors, where a forward gets its latents, timestep and
text, and how the conditional and unconditional branches are told apart. One
generic adapter (:mod:`numina_hooks.adapters.generic`) reads it and installs
everything from it, so supporting a fork that renamed a module is a
``dataclasses.replace`` of a description, not a new adapter.

Two families are described here:

* :data:`DIFFSYNTH_WAN`: DiffSynth-Studio's ``WanVideoPipeline`` / ``WanModel``
  (written against diffsynth 2.1.12, tested in CI on a tiny random-weight model);
* :data:`OFFICIAL_WAN`: the official Wan2.1 / Wan2.2 repositories' ``WanModel``
  (``wan/modules/model.py``); tested in CI only on a stand-in module tree with the
  same module names and call signatures, never on the real repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: Kernel tensor layouts a description may name.
#: ``"BS(HD)"``: ``[batch, tokens, heads * head_dim]`` with the head count passed
#: to the function (DiffSynth's ``flash_attention(q, k, v, num_heads)``);
#: ``"BLHD"``: ``[batch, tokens, heads, head_dim]`` (the official ``flash_attention``).
LAYOUTS = ("BS(HD)", "BLHD")


@dataclass(frozen=True)
class Argument:
    """One argument of a function: its keyword name and, when it may be passed
    positionally, its position (0-based)."""

    name: str
    position: Optional[int] = None

    def read(self, args: tuple, kwargs: dict, default=None):
        if self.name in kwargs:
            return kwargs[self.name]
        if self.position is not None and len(args) > self.position:
            return args[self.position]
        return default


@dataclass(frozen=True)
class AttentionFunction:
    """The module-level attention function the attention modules call.

    :ivar module: importable module whose global the attention modules look up
        at call time (``"diffsynth.models.wan_video_dit"``).
    :ivar attribute: the function's name in that module (``"flash_attention"``).
    :ivar layout: one of :data:`LAYOUTS`.
    :ivar q, k, v: where the query, key and value tensors are passed.
    :ivar heads: where the head count is passed (``"BS(HD)"`` only).
    :ivar scale: where the softmax scale is passed, if the function takes one
        (``None`` or absent means ``1 / sqrt(head_dim)``).
    """

    module: str
    attribute: str
    layout: str
    q: Argument = Argument("q", 0)
    k: Argument = Argument("k", 1)
    v: Argument = Argument("v", 2)
    heads: Optional[Argument] = None
    scale: Optional[Argument] = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"AttentionFunction.layout={self.layout!r}: expected one of {LAYOUTS}")
        if self.layout == "BS(HD)" and self.heads is None:
            raise ValueError("AttentionFunction with layout 'BS(HD)' needs heads= (where the head count is passed)")


@dataclass(frozen=True)
class SitePattern:
    """Attention modules of one kind, by qualified module name.

    :ivar kind: ``"self"`` or ``"cross"``.
    :ivar pattern: a regular expression matched in full against the names of
        ``transformer.named_modules()``; its first group is the block index
        (``r"blocks\\.(\\d+)\\.self_attn\\.attn"``).
    :ivar kernel_call: which call of the attention function, within one call of
        the module, is the one to view (0 = first).
    """

    kind: str
    pattern: str
    kernel_call: int = 0


@dataclass(frozen=True)
class ForwardEntry:
    """The function one transformer forward goes through, and where its facts are.

    :ivar owner: ``"pipeline"`` (an instance attribute of the pipeline, such as
        DiffSynth's ``model_fn``) or ``"model"`` (the transformer's ``forward``).
    :ivar attribute: the attribute that is wrapped (``"model_fn"``, ``"forward"``).
    :ivar latents: the latent input: ``[B, C, F, H, W]``, or a list of
        ``[C, F, H, W]`` (official Wan).
    :ivar timestep: the timestep argument (a tensor with one value per batch row,
        or per token for Wan2.2 TI2V: the call's timestep is the max).
    :ivar text: the text context (``[B, L, C]``, or a list of ``[L, C]``).
    :ivar model: the argument naming the transformer (``"dit"``), when the entry
        is not the model's own method.
    :ivar positive: a boolean argument that is true on the conditional branch
        (DiffSynth's ``positive=``).
    :ivar batched_cfg: a boolean argument that is true when both branches run in
        one batch, rows named by :attr:`batched_rows`.
    """

    owner: str
    attribute: str
    latents: Argument
    timestep: Argument
    text: Argument
    model: Optional[Argument] = None
    positive: Optional[Argument] = None
    batched_cfg: Optional[Argument] = None
    batched_rows: tuple = ("cond", "uncond")


@dataclass(frozen=True)
class ModelDescription:
    """Everything the generic adapter needs to know about one model family.

    :ivar name: adapter name shown in errors and reports.
    :ivar accepts: what may be attached, for error messages.
    :ivar model_classes: fully qualified class names of the transformer
        (``"diffsynth.models.wan_video_dit.WanModel"``); a class or base class
        with one of these names is accepted.
    :ivar pipeline_classes: fully qualified class names of the pipeline, if any.
    :ivar transformer_attributes: the pipeline attributes holding transformers,
        in order (``("dit", "dit2")``); a bare model is named by the first.
    :ivar sites: the self- and cross-attention modules.
    :ivar attention: the attention function.
    :ivar pipeline_entry: the forward entry when a pipeline is attached.
    :ivar model_entry: the forward entry when a bare transformer is attached.
    :ivar patch_size: the transformer attribute holding ``(p_t, p_h, p_w)``.
    :ivar text_length: text tokens the model attends to (prompts are padded or
        truncated to it).
    :ivar notes: facts worth knowing, shown in the docs.
    """

    name: str
    accepts: str
    model_classes: tuple
    sites: tuple
    attention: AttentionFunction
    model_entry: ForwardEntry
    pipeline_classes: tuple = ()
    transformer_attributes: tuple = ("transformer",)
    pipeline_entry: Optional[ForwardEntry] = None
    patch_size: str = "patch_size"
    text_length: int = 512
    notes: tuple = field(default=())


# ----------------------------------------------------------------------------- DiffSynth-Studio

DIFFSYNTH_WAN = ModelDescription(
    name="diffsynth-wan",
    accepts="DiffSynth-Studio WanVideoPipeline (Wan2.1 / Wan2.2 T2V) or its WanModel (diffsynth 2.1.12)",
    model_classes=("diffsynth.models.wan_video_dit.WanModel",),
    pipeline_classes=("diffsynth.pipelines.wan_video.WanVideoPipeline",),
    transformer_attributes=("dit", "dit2"),
    sites=(
        # `module.` appears when VRAM management wraps each DiTBlock in an AutoWrappedModule
        SitePattern("self", r"blocks\.(\d+)\.(?:module\.)?self_attn\.attn"),
        # the image context of I2V models is attended outside `.attn`, so the `.attn`
        # call is always the text one
        SitePattern("cross", r"blocks\.(\d+)\.(?:module\.)?cross_attn\.attn"),
    ),
    attention=AttentionFunction(
        module="diffsynth.models.wan_video_dit",
        attribute="flash_attention",
        layout="BS(HD)",
        heads=Argument("num_heads", 3),
    ),
    # the pipeline never calls WanModel.forward: each denoising call goes through
    # the pipeline's `model_fn` instance attribute (model_fn_wan_video), by keyword
    pipeline_entry=ForwardEntry(
        owner="pipeline",
        attribute="model_fn",
        latents=Argument("latents"),
        timestep=Argument("timestep"),
        text=Argument("context"),
        model=Argument("dit"),
        positive=Argument("positive"),
        batched_cfg=Argument("cfg_merge"),
        batched_rows=("cond", "uncond"),  # cfg_merge concatenates (positive, negative)
    ),
    model_entry=ForwardEntry(
        owner="model",
        attribute="forward",
        latents=Argument("x", 0),
        timestep=Argument("timestep", 1),
        text=Argument("context", 2),
    ),
    text_length=512,
    notes=(
        "TeaCache may skip the blocks of a step: no attention call is seen there",
        "VRAM management may deep-copy layers per call: sites are keyed by module name",
    ),
)


# ----------------------------------------------------------------------------- official Wan repos

OFFICIAL_WAN = ModelDescription(
    name="official-wan",
    accepts="the official Wan2.1 / Wan2.2 repositories' WanModel (wan.modules.model), or a WanT2V object",
    model_classes=("wan.modules.model.WanModel",),
    pipeline_classes=("wan.text2video.WanT2V",),
    # Wan2.1 WanT2V.model; Wan2.2 A14B WanT2V.high_noise_model / low_noise_model
    transformer_attributes=("model", "high_noise_model", "low_noise_model"),
    sites=(
        SitePattern("self", r"blocks\.(\d+)\.self_attn"),
        SitePattern("cross", r"blocks\.(\d+)\.cross_attn"),  # I2V: text first, then image
    ),
    attention=AttentionFunction(
        module="wan.modules.model",  # model.py does `from .attention import flash_attention`
        attribute="flash_attention",
        layout="BLHD",
        scale=Argument("softmax_scale", 5),
    ),
    # WanT2V.generate calls self.model(x_list, t=timestep, context=..., seq_len=...) for cond then
    # uncond; which is which is a fact only the caller knows: our driver names it
    # (numina_hooks.official_wan) with handle.context(branch=..., step=...)
    model_entry=ForwardEntry(
        owner="model",
        attribute="forward",
        latents=Argument("x", 0),
        timestep=Argument("t", 1),
        text=Argument("context", 2),
    ),
    text_length=512,
    notes=(
        "import wan fails on a CPU-only machine (t5.py queries a CUDA device at import)",
        "flash_attention asserts CUDA and takes no bias: views and replacements come from the tap",
        "sequence parallel replaces self_attn.forward with a version that does not call flash_attention",
    ),
)
