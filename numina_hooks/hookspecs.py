"""The hook contract of numina-hooks.

Every plugin is a plain object whose methods are marked with
:data:`numina_hooks.hookimpl`; it implements any subset of the hooks below and,
for each hook, may accept only the keyword arguments it needs (pluggy calls
hooks by keyword, so a spec can grow without breaking plugins).

The hooks, in the order a generation meets them::

    on_generation_start(generation)            # once per pipeline call
        on_forward(call)                       # wrapper around one transformer forward
          on_attention(view)                   # in every hooked attention layer
      on_step(state)   phase="end"             # after each scheduler step (the only phase)
    on_generation_end(generation)              # once per pipeline call, also on error

Dispatch costs about a microsecond a hook; views are lazy, so a layer whose
plugins only look at ``view.layer`` costs nothing measurable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for type checkers only
    import torch

    from .context import ForwardCall, GenerationInfo, StepState
    from .views import AttentionView

PROJECT_NAME = "numina_hooks"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------- attention


@hookspec(firstresult=True)
def on_attention(view: "AttentionView") -> "torch.Tensor | None":
    """Called in every hooked attention layer, for every call of its kernel.

    Calling convention: **first result wins**. Plugins are called in LIFO
    registration order (the most recently registered first); the first one that
    returns a tensor stops the call and its tensor replaces the kernel's output.
    Returning ``None`` observes only.

    :param view: an :class:`~numina_hooks.views.AttentionView`: layer index,
        kind (``"self"`` or ``"cross"``; a joint CogVideoX layer, ``view.joint``, is
        offered once as each, ``view.site.kind == "joint"``), the call's context (step,
        timestep, branch, transformer), geometry, and ``q``/``k``/``v`` in the
        canonical layout ``[batch, heads, tokens, head_dim]`` exactly as the
        model's kernel receives them. Maps (``view.self_attention_map(frame)``,
        ``view.cross_attention_map(columns)``) are computed only when asked.
    :returns: ``None``, or a tensor shaped like the kernel output in the
        canonical layout ``[batch, heads, query_tokens, head_dim]`` (dtype and
        device of ``view.q``). For a joint (CogVideoX) layer the query tokens
        are the full ``[text | video]`` sequence. The adapter converts it back
        to the model's own layout; the layer's output projection still runs.
    """


# --------------------------------------------------------------------------- steps


@hookspec
def on_step(state: "StepState") -> None:
    """Called after each denoising step of a pipeline run through the handle
    (``state.phase`` is always ``"end"``: no framework offers a callback before a
    step; a plugin that needs the start of a step sees its first ``on_forward``).

    Calling convention: **all implementations are called**; results are
    ignored. A plugin may call ``state.request_stop(reason)`` to ask the driver to
    skip the remaining steps (diffusers' ``pipe._interrupt``); the pipeline then
    returns its current latents. ``state.latents`` is the scheduler's latent after
    the step and may be read, not modified; it is ``None`` on DiffSynth, whose loop
    does not hand it out.

    Only pipelines (not bare transformers) produce step events: a bare model
    has no scheduler loop to observe.
    """


# --------------------------------------------------------------------------- forward


@hookspec(firstresult=True)
def on_forward(call: "ForwardCall") -> Any:
    """Around one whole transformer forward (one model call of one step).

    Calling convention: **first result wins, and wrappers are welcome**.

    * A plain implementation returning a non-``None`` value skips the model:
      that value is used as the transformer's output (it must have the type the
      model returns, e.g. the ``(sample,)`` tuple for ``return_dict=False``).
    * A wrapper (``@hookimpl(wrapper=True)``) sees the whole call::

          @hookimpl(wrapper=True)
          def on_forward(self, call):
              if self.can_reuse(call):
                  call.skip_with(self.cached(call))   # the model will not run
              output = yield                          # the output, computed or not
              return output                           # may be replaced

      ``call.skip_with(output)`` before ``yield`` means the model is not run;
      ``call.skipped`` tells later code whether it ran.
    * The model itself runs as the last implementation (registered by
      numina-hooks with ``trylast=True``) unless something skipped it.

    ``call`` carries the context (transformer name, step, timestep, sigma,
    branch), the forward's ``args``/``kwargs`` and ``call.hidden_states`` (the
    latent input, ``[batch, channels, frames, height, width]``).
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def on_generation_start(generation: "GenerationInfo") -> None:
    """Once at the start of each call of an attached pipeline (before the first
    step). Calling convention: **all implementations are called**, results
    ignored. Plugins reset their per-generation state here.
    """


@hookspec
def on_generation_end(generation: "GenerationInfo", error: "BaseException | None") -> None:
    """Once at the end of each call of an attached pipeline, also when the call
    raised (``error`` is the exception, which still propagates afterwards).
    Calling convention: **all implementations are called**, results ignored.
    """
