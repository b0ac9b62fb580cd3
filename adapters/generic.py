"""One adapter for models outside diffusers, driven by a :class:`ModelDescription`.

The pattern: these models call a module-level
attention function (``flash_attention``) that takes no bias. So:

* each attention module named by the description gets a forward pre-hook that
  marks the *site* in ``hooking._active_site`` and a forward hook
  (``always_call=True``) that unmarks it, both removable;
* the attention function is tapped (:class:`~numina_hooks.hooking.KernelTap`):
  outside a marked site it is the original function, inside one it builds a
  view and lets plugins observe or replace the output;
* the forward entry named by the description (DiffSynth's ``pipe.model_fn``, or
  the model's ``forward``) is wrapped as an instance attribute, so that
  ``on_forward`` runs around each transformer call and the call's facts
  (transformer, step, branch, timestep, geometry) are read from its arguments.

State is keyed by module *name*, never by module object: DiffSynth's VRAM
management may deep-copy layers per call, and a copy of a hooked module carries
the same hooks, which know their site by name.

Attach with a description of your own (a fork that renamed its modules)::

    from dataclasses import replace
    from numina_hooks.adapters.descriptions import DIFFSYNTH_WAN
    mine = replace(DIFFSYNTH_WAN, model_classes=("myfork.dit.WanModel",))
    handle = numina_hooks.attach(pipe, description=mine)
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import re
import threading
from typing import Any, Optional

import torch

from numina_hooks.context import Geometry, current_call
from numina_hooks.hooking import KernelTap, SiteCall, _active_site
from numina_hooks.views import AttentionView, Site

from .base import Adapter
from .descriptions import ForwardEntry, ModelDescription

#: The denoising step of the pipeline call now running, when the adapter's
#: ``call_pipeline`` knows it from the pipeline's own loop: a one-item list holding
#: ``(index, num_steps)`` or ``None`` (outside the loop).
_loop_step: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("numina_hooks_loop_step", default=None)


def _qualified_names(obj: Any) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}


def is_instance_of(obj: Any, names: tuple) -> bool:
    """True when ``obj``'s class or a base is one of the fully qualified ``names`` (no import)."""
    return bool(names) and not _qualified_names(obj).isdisjoint(names)


class _FlatHeadsView(AttentionView):
    """A view over a kernel whose tensors are ``[B, S, heads * head_dim]``: q/k/v are
    unflattened (no copy) to ``[B, S, heads, head_dim]``, and a replacement is
    flattened back."""

    __slots__ = ()

    def to_model_layout(self, out: torch.Tensor) -> torch.Tensor:
        return out.transpose(1, 2).flatten(2)


class GenericAdapter(Adapter):
    """Adapter for any model family described by a :class:`ModelDescription`.

    Subclasses set :attr:`description` (and return their framework's
    :class:`~numina_hooks.driver.PipelineDriver` from ``driver()``); an
    instance may also be given a description directly (``attach(..., description=...)``).
    """

    description: ModelDescription

    def __init__(self, target: Any, description: Optional[ModelDescription] = None):
        if description is not None:
            self.description = description
        desc = self.description
        self.name = desc.name
        self.accepts = desc.accepts
        self.layout = desc.attention.layout
        self.target = target
        self.pipeline = None if is_instance_of(target, desc.model_classes) else target
        self._site_heads: dict[str, int] = {}

    @classmethod
    def matches(cls, target: Any) -> bool:
        desc = cls.description
        if is_instance_of(target, desc.model_classes):
            return True
        if desc.pipeline_classes and is_instance_of(target, desc.pipeline_classes):
            return True
        return False

    # -------------------------------------------------------------- discovery
    def transformers(self):
        desc = self.description
        if self.pipeline is None:
            return [(desc.transformer_attributes[0], self.target)]
        found = []
        for name in desc.transformer_attributes:
            model = getattr(self.pipeline, name, None)
            if model is not None and is_instance_of(model, desc.model_classes):
                found.append((name, model))
        if not found:
            raise TypeError(
                f"{type(self.pipeline).__name__} has no transformer to hook: none of the attributes "
                f"{desc.transformer_attributes} holds a {' / '.join(desc.model_classes)}. Load the model first."
            )
        return found

    def sites(self, transformer_name, transformer):
        desc = self.description
        compiled = [(p, re.compile(p.pattern)) for p in desc.sites]
        out = []
        for mname, module in transformer.named_modules():
            for pattern, rx in compiled:
                m = rx.fullmatch(mname)
                if m is not None:
                    out.append((Site(int(m.group(1)), pattern.kind, mname, transformer_name), module))
        if not out:
            raise TypeError(
                f"{desc.name}: no attention module of {type(transformer).__name__} matches "
                f"{[p.pattern for p in desc.sites]}; is this the model the description is for?"
            )
        out.sort(key=lambda pair: (pair[0].layer, pair[0].kind != "self"))
        return out

    def kernel_taps(self):
        fn = self.description.attention
        try:
            owner = importlib.import_module(fn.module)
        except ImportError as exc:
            raise ImportError(
                f"{self.description.name}: cannot import {fn.module!r}, the module whose {fn.attribute} the "
                f"attention layers call ({exc}). Is the framework installed in this environment?"
            ) from exc
        if not callable(getattr(owner, fn.attribute, None)):
            raise TypeError(f"{fn.module}.{fn.attribute} is not a function; the description does not fit this version")
        return [KernelTap(owner, fn.attribute, fn.layout, read_arguments=self._read_kernel_arguments)]

    def _read_kernel_arguments(self, args: tuple, kwargs: dict):
        fn = self.description.attention
        q, k, v = (fn.q.read(args, kwargs), fn.k.read(args, kwargs), fn.v.read(args, kwargs))
        scale = fn.scale.read(args, kwargs) if fn.scale is not None else None
        if fn.layout == "BS(HD)":
            heads = int(fn.heads.read(args, kwargs))
            q, k, v = (t.unflatten(-1, (heads, -1)) for t in (q, k, v))
        return q, k, v, scale

    # -------------------------------------------------------------- installing
    def install_site(self, hub, site: Site, attn: torch.nn.Module):
        expected = next(
            p.kernel_call for p in self.description.sites if p.kind == site.kind and re.fullmatch(p.pattern, site.name)
        )
        local = threading.local()

        def begin(module, args):
            stack = getattr(local, "stack", None)
            if stack is None:
                stack = local.stack = []
            if not hub._wants_attention:
                stack.append(None)
                return None
            ctx = current_call.get()
            if ctx is None:
                ctx = hub._fallback_context(site.transformer)
            site_call = SiteCall(site, hub, ctx, expected)
            stack.append((site_call, _active_site.set(site_call)))
            return None

        def end(module, args, output):
            stack = getattr(local, "stack", None)
            if not stack:
                return None
            entry = stack.pop()
            if entry is None:
                return None
            site_call, token = entry
            _active_site.reset(token)
            if not site_call.tapped and hub._wants_attention:  # (a plugin unregistered during the call: no view due)
                hub._warn_untapped(site, module)
            return None

        pre = attn.register_forward_pre_hook(begin)
        post = attn.register_forward_hook(end, always_call=True)

        def undo():
            pre.remove()
            post.remove()

        return undo

    def install_forward(self, hub, name: str, model: torch.nn.Module):
        if self.pipeline is not None and self.description.pipeline_entry is not None:
            return lambda: None  # the pipeline's entry is wrapped once, in install_pipeline
        entry = self.description.model_entry
        return _wrap_attribute(model, entry.attribute, self._entry_wrapper(hub, entry, model, name))

    def install_pipeline(self, hub):
        entry = self.description.pipeline_entry
        if self.pipeline is None or entry is None:
            return None
        return _wrap_attribute(self.pipeline, entry.attribute, self._entry_wrapper(hub, entry, None, None))

    def _entry_wrapper(self, hub, entry: ForwardEntry, model, model_name):
        names = {id(m): n for n, m in self.transformers()}

        def make(original):
            try:
                signature = inspect.signature(original)
            except (TypeError, ValueError):  # pragma: no cover
                signature = None

            @functools.wraps(original)
            def numina_forward(*args, **kwargs):
                module = model if model is not None else entry.model.read(args, kwargs)
                tname = model_name if model is not None else names.get(id(module))
                if tname is None:  # a model this hub does not hook (e.g. a VACE or LongCat DiT)
                    return original(*args, **kwargs)
                ctx = self._forward_context(hub, tname, module, entry, args, kwargs)
                # the latent input first, so that ForwardCall.hidden_states is it
                latents, rest_args, rest_kwargs = _split_latents(signature, entry, args, kwargs)

                def run(latents, *more, **kw):
                    return _call_with_latents(original, signature, entry, latents, more, kw)

                token = current_call.set(ctx)
                try:
                    return hub._run_forward(ctx, module, (latents,) + rest_args, rest_kwargs, run)
                finally:
                    current_call.reset(token)

            numina_forward.__numina_entry__ = True
            return numina_forward

        return make

    # -------------------------------------------------------------- per call
    def _forward_context(self, hub, tname, module, entry: ForwardEntry, args, kwargs):
        """The :class:`CallContext` of one entry call, from the call's own arguments:
        latents, timestep and text as the description names them, the branch from the
        entry's cfg flags, the step from the pipeline's loop (``_loop_step``) or the
        scheduler's timesteps."""
        latents = entry.latents.read(args, kwargs)
        timestep = entry.timestep.read(args, kwargs)
        text = entry.text.read(args, kwargs)
        batch = _batch_of(latents)
        if text is not None:
            batch = max(batch, _batch_of(text))  # DiffSynth's cfg_merge repeats the latents inside
        geometry = self._geometry(module, latents, text)
        branch = None
        if entry.batched_cfg is not None and entry.batched_cfg.read(args, kwargs, False):
            branch = tuple(entry.batched_rows)
        elif entry.positive is not None:
            positive = entry.positive.read(args, kwargs)
            if positive is not None:
                branch = "cond" if positive else "uncond"
        holder = _loop_step.get()
        loop = holder[0] if holder is not None else None
        t_float = hub._timestep_value(timestep)  # read once per step, not per call
        if loop is not None:
            step, num_steps = loop
        else:
            step, num_steps = self.step_from_timestep(t_float, timestep)
            if step is None:
                step, n = self.step_from_timestep(t_float)
                num_steps = num_steps or n
        return hub.context_for(tname, step=step, num_steps=num_steps, timestep=t_float, sigma=self.sigma_at(step),
                               branch=self.branch(branch, batch), geometry=geometry)

    def _geometry(self, module, latents, text) -> Geometry:
        p_t, p_h, p_w = tuple(getattr(module, self.description.patch_size))
        shape = latents[0].shape if isinstance(latents, (list, tuple)) else latents.shape[1:]
        _, f, h, w = shape
        if text is None:
            n_text = 0
        else:
            n_text = int(text[0].shape[0]) if isinstance(text, (list, tuple)) else int(text.shape[1])
            # the official WanModel pads a list context to its text_len inside forward
            n_text = max(n_text, int(getattr(module, "text_len", 0) or 0))
        return Geometry(frames=f // p_t, height=h // p_h, width=w // p_w, text_tokens=n_text)

    def branch(self, cache_name, batch):
        if isinstance(cache_name, tuple):
            if len(cache_name) != batch:
                return None
            return cache_name
        return super().branch(cache_name, batch)

    def sigma_at(self, step: Optional[int]) -> Optional[float]:
        """The scheduler's sigma at ``step`` (None: unknown)."""
        return None

    def make_views(self, site: Site, context, q, k, v, layout, scale):
        # q/k/v arrive as [B, L, H, d] (a "BS(HD)" kernel's tensors are unflattened by the reader)
        n_q, n_k = q.shape[1], k.shape[1]
        geo = context.geometry
        n_video = geo.video_tokens if geo is not None and geo.video_tokens <= n_q else n_q
        if site.kind == "self":
            slices = dict(video_queries=slice(0, n_video), text_keys=None, video_keys=slice(0, min(n_video, n_k)))
        else:
            slices = dict(video_queries=slice(0, n_video), text_keys=slice(0, n_k), video_keys=None)
        cls = _FlatHeadsView if layout == "BS(HD)" else AttentionView
        yield cls(site=site, kind=site.kind, context=context, q=q, k=k, v=v, layout="BLHD", scale=scale, **slices)


def _batch_of(x) -> int:
    return len(x) if isinstance(x, (list, tuple)) else int(x.shape[0])


def _split_latents(signature, entry: ForwardEntry, args, kwargs):
    """``(latents, other positional args, other kwargs)`` of an entry call."""
    name, pos = entry.latents.name, entry.latents.position
    if name in kwargs:
        rest = dict(kwargs)
        return rest.pop(name), tuple(args), rest
    if pos is not None and len(args) > pos:
        return args[pos], tuple(args[:pos]) + tuple(args[pos + 1 :]), dict(kwargs)
    return None, tuple(args), dict(kwargs)


def _call_with_latents(original, signature, entry: ForwardEntry, latents, args, kwargs):
    """Call ``original`` with ``latents`` put back where the caller passed it."""
    name, pos = entry.latents.name, entry.latents.position
    if pos is not None and len(args) >= pos and name not in kwargs:
        return original(*args[:pos], latents, *args[pos:], **kwargs)
    return original(*args, **{name: latents}, **kwargs)


def _wrap_attribute(owner, attribute: str, make):
    """Set ``owner.<attribute>`` (an instance attribute) to ``make(current)``; returns the undo,
    which deletes the instance attribute again when there was none, or puts the old one back."""
    had_own = attribute in vars(owner)
    previous = vars(owner).get(attribute)
    current = getattr(owner, attribute)
    wrapper = make(current)
    setattr(owner, attribute, wrapper) if not isinstance(owner, torch.nn.Module) else owner.__dict__.__setitem__(
        attribute, wrapper
    )

    def undo():
        if vars(owner).get(attribute) is not wrapper:
            import warnings

            warnings.warn(
                f"{type(owner).__name__}.{attribute} was replaced after numina-hooks wrapped it; leaving the newer one",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        if had_own:
            owner.__dict__[attribute] = previous
        else:
            del owner.__dict__[attribute]

    return undo


def adapter_for_description(description: ModelDescription, target: Any) -> GenericAdapter:
    """The adapter for ``target`` described by ``description`` (for forks and stand-ins):
    the registered adapter of the description's family when there is one (so pipeline
    calls keep their framework's driver), else the plain :class:`GenericAdapter`.
    ``numina_hooks.attach(target, ..., description=description)`` uses it."""
    from .base import registered_adapters

    if not isinstance(description, ModelDescription):
        raise TypeError(f"description={description!r}: expected a numina_hooks.adapters.descriptions.ModelDescription")
    cls = GenericAdapter
    for candidate in registered_adapters():
        if issubclass(candidate, GenericAdapter) and candidate.description.name == description.name:
            cls = candidate
            break
    return cls(target, description=description)
