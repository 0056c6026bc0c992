"""The stages of one ClipSAM run and how a run reports its progress (no torch import here).

``progress(stage, fraction)`` receives the stage now running and the **overall** fraction of the call done,
0 → 1, never decreasing. Stages are weighted by their rough share of a cold run on a CPU (SAM's image encoder
dominates), and the two encoders also report while they run, so a progress bar moves inside them and a cancel
request is seen mid-way: the torch encoders after every transformer block (:meth:`Stepper.per_block`), the
OpenVINO encoders, one compiled call each, by polling :func:`stage_report` while their inference runs.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from ..errors import Cancelled

STAGES = ("text", "clip", "rough map", "few-shot", "prompts", "sam encoder", "sam decoder", "merge")
STAGE_WEIGHTS = {"text": 0.04, "clip": 0.18, "rough map": 0.01, "few-shot": 0.01, "prompts": 0.01,
                 "sam encoder": 0.69, "sam decoder": 0.05, "merge": 0.01}
"""Approximate share of each stage in a cold CPU run (``napari-clipsam bench``: SAM vit_b ~80 %, CLIP ~18 %)."""
_START = {s: sum(STAGE_WEIGHTS[t] for t in STAGES[:i]) / sum(STAGE_WEIGHTS.values()) for i, s in enumerate(STAGES)}
_SHARE = {s: STAGE_WEIGHTS[s] / sum(STAGE_WEIGHTS.values()) for s in STAGES}
_running = threading.local()


def stage_report() -> Callable[[float], None] | None:
    """The report of the encoder stage this thread runs now (inside :meth:`Stepper.per_block`), or None.

    ``report(within)`` reports that fraction (0..1) of the stage as done and raises
    :class:`~napari_clipsam.errors.Cancelled` when the run's cancel request is set; an encoder that cannot report
    per block (a compiled OpenVINO model) calls it while its inference runs.
    """
    return getattr(_running, "report", None)


class Stepper:
    """Turns (stage, images done, chunk size, fraction of the stage) into overall progress; polls cancellation.

    ``done`` is the fraction of the call's images finished before the current chunk and ``span`` the chunk's
    share of the images; ``within`` is how far the stage itself has got (0..1).
    """

    def __init__(self, progress: Callable[[str, float], None] | None, cancelled: Callable[[], bool] | None):
        self.progress, self.cancelled = progress, cancelled
        self.last = 0.0

    def __call__(self, stage: str, done: float, span: float = 0.0, within: float = 0.0) -> None:
        """Report ``stage``; a stage outside :data:`STAGES` (e.g. ``"references"``) reports ``done`` as it is."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled(f"cancelled during stage {stage!r}")
        overall = done + span * (_START[stage] + within * _SHARE[stage]) if stage in _START else done
        self.last = max(self.last, min(1.0, overall))
        if self.progress is not None:
            self.progress(stage, self.last)

    @contextlib.contextmanager
    def per_block(self, blocks, stage: str, done: float, span: float):
        """Report ``stage`` after each module of ``blocks`` (e.g. a ViT's transformer blocks) runs forward;
        a cancel request raises :class:`~napari_clipsam.errors.Cancelled` from inside the forward pass.

        Inside the block, :func:`stage_report` (in this thread) reports ``stage`` too, for an encoder whose
        blocks are not torch modules (OpenVINO); the torch blocks then never run and their hooks stay silent.
        """
        blocks = list(blocks or ())
        handles = [b.register_forward_hook(self._hook(stage, done, span, (i + 1) / len(blocks)))
                   for i, b in enumerate(blocks)]
        outer = stage_report()
        _running.report = lambda within: self(stage, done, span, within)
        try:
            yield
        finally:
            _running.report = outer
            for h in handles:
                h.remove()

    def _hook(self, stage, done, span, within):
        def hook(module, inputs, output):
            self(stage, done, span, within)

        return hook


class PartStepper(Stepper):
    """Reports stage progress of part ``i`` of ``n`` (a tile, a SAM crop) as the fraction ``(i + within) / n`` of
    the stage; a cancel request is seen at every report, so between parts too."""

    def __init__(self, outer: Stepper, i: int, n: int):
        super().__init__(outer.progress, outer.cancelled)
        self.outer, self.i, self.n = outer, i, n

    def __call__(self, stage, done, span=0.0, within=0.0):
        self.outer(stage, done, span, (self.i + within) / self.n)
        self.last = self.outer.last
