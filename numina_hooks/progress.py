"""Denoising progress per pipeline call, as a plugin (``numina generate`` and ``numina demo`` use it)."""

from __future__ import annotations

import sys

from .hookspecs import hookimpl

__all__ = ["StepProgress"]


class StepProgress:
    """A plugin that shows denoising progress per pipeline call, labelled with the phase.

    With ``outer`` (a tqdm bar) it writes ``"<prefix><phase> step k/n"`` as that bar's
    postfix; otherwise it opens one bar per call. NUMINA's phase 1 stops right after the
    reference step when the layout needs correcting: its bar then ends there, saying so.
    """

    LABELS = {"phase1": "NUMINA phase 1 (read layout)", "phase2": "NUMINA phase 2 (guided)"}

    def __init__(self, prefix: str = "", outer=None, disable: bool = False):
        self.prefix, self.outer, self.disable = prefix, outer, disable
        self._bar, self._label, self._total, self._done = None, "", None, 0

    def _show(self) -> None:
        if self.outer is not None:
            self.outer.set_postfix_str(f"{self.prefix}{self._label} step {self._done}/{self._total or '?'}")

    @hookimpl
    def on_generation_start(self, generation) -> None:
        self._phase = generation.extras.get("numina_phase")
        self._label = self.LABELS.get(self._phase, "plain")
        self._total = generation.kwargs.get("num_inference_steps")
        self._done = 0
        if self.outer is not None:
            self._show()
        elif not self.disable:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total, desc=f"{self.prefix}{self._label}", unit="step",
                             dynamic_ncols=True, file=sys.stderr)

    @hookimpl
    def on_step(self, state) -> None:
        if state.phase != "end":
            return
        self._done = state.step + 1
        if self._bar is not None:
            self._bar.update(self._done - self._bar.n)
        else:
            self._show()

    @hookimpl
    def on_generation_end(self, generation, error) -> None:
        bar, self._bar = self._bar, None
        if bar is None:
            return
        if self._phase == "phase1" and error is not None and not isinstance(error, KeyboardInterrupt):
            # phase 1 stops inside the reference step, once its layout is read
            bar.set_description(f"{self.prefix}NUMINA phase 1: layout read in step {self._done + 1} of "
                                f"{self._total}, stopped there to correct it")
            bar.total = self._done + 1
            bar.update(self._done + 1 - bar.n)
        bar.close()
