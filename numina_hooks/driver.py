"""The public protocol between a multi-pass method and the pipeline it runs.

NUMINA (and any method that runs a pipeline more than once: seed search, layout-aware
seeds) needs a few things from the framework that runs the model: which tokenizer
encodes the prompt, how many denoising steps a call makes, how to replay the same noise,
how to run one call with the step hooks wired, and how to clean up after a call was
stopped. :class:`PipelineDriver` is that contract. Each adapter supplies one for the
pipelines it accepts (``handle.driver``; ``None`` when a bare model is attached), so a
method never reaches into the adapter that maps attention to views.

A method reads the driver from the handle::

    driver = handle.driver
    kwargs, rewind, seed = driver.fix_noise(kwargs)
    tokenizer = driver.tokenizer()

and runs the pipeline through ``handle.run_pipeline(...)``, which calls
:meth:`PipelineDriver.run` between the lifecycle hooks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional


class PipelineDriver:
    """What a multi-pass method needs from the runner of one pipeline.

    Subclass it for a framework and override every method that raises here. A driver
    holds the pipeline object (``pipeline``) and nothing of the handle: methods that
    need the hooks receive the handle as an argument.
    """

    def __init__(self, pipeline: Any):
        #: the pipeline object the user attached
        self.pipeline = pipeline

    def run(self, handle, args: tuple, kwargs: dict) -> Any:
        """Run the pipeline once with ``on_step`` wired to its loop; returns its output.

        ``handle`` is the :class:`~numina_hooks.attach.Handle` (``handle.hook.on_step``
        runs the step hooks; a :class:`~numina_hooks.context.StepState` whose
        ``stop_requested`` is set must end the loop early)."""
        raise NotImplementedError(f"{type(self).__name__}.run")

    def tokenizer(self) -> Any:
        """The fast (``tokenizers``-backed) tokenizer the pipeline encodes prompts with."""
        raise NotImplementedError(f"{type(self).__name__}.tokenizer")

    def prompt_for_tokenizer(self, prompt: str) -> str:
        """The prompt as the pipeline hands it to its tokenizer (after its own cleaning)."""
        return prompt

    def text_length(self, kwargs: dict) -> Optional[int]:
        """Text tokens the pipeline keeps for a call with ``kwargs`` (longer prompts are
        truncated to it); ``None`` when unknown."""
        raise NotImplementedError(f"{type(self).__name__}.text_length")

    def num_steps(self, kwargs: dict) -> int:
        """Denoising steps a call with ``kwargs`` makes."""
        raise NotImplementedError(f"{type(self).__name__}.num_steps")

    def fix_noise(self, kwargs: dict) -> tuple[dict, Callable[[], None], Optional[int]]:
        """Make the call's noise repeatable: returns ``(kwargs, rewind, seed_or_None)``.

        The returned ``kwargs`` sample the same noise on every call made after
        ``rewind()``; ``seed`` is the seed chosen when the caller gave none (else None).
        The caller's own ``kwargs`` are not changed."""
        raise NotImplementedError(f"{type(self).__name__}.fix_noise")

    def with_seed(self, kwargs: dict, seed: int) -> dict:
        """``kwargs`` set to draw the noise of ``seed`` (the caller's ``kwargs`` unchanged):
        for strategies that try several seeds."""
        raise NotImplementedError(f"{type(self).__name__}.with_seed")

    def after_abort(self) -> None:
        """Clean up after a call was stopped by an exception (what the pipeline would
        have done at the end of the call, e.g. offloading models)."""
        return None


class GenerationStrategy:
    """Base class of plugins that decide what ``handle(...)`` does: a method that runs
    the pipeline its own way (NUMINA's two phases; a seed search).

    Register one on a handle like any plugin (``attach(pipe, Numina(config))``); at most
    one strategy per handle. ``handle(*args, **kwargs)`` then returns
    ``strategy.generate(handle, *args, **kwargs)``; with no strategy it is one plain
    pipeline call with the hooks. A strategy may also implement hooks
    (``@numina_hooks.hookimpl`` methods), which are registered with it.
    """

    def generate(self, handle, *args: Any, **kwargs: Any) -> Any:
        """Run a whole generation through ``handle`` (``handle.run_pipeline``,
        ``handle.driver``, ``handle.register``); returns the pipeline's output type."""
        raise NotImplementedError(f"{type(self).__name__}.generate")
