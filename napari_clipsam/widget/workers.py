"""Background jobs: engine creation, segmentation and refinement in napari thread workers.

A :class:`Task` runs ``fn(progress, cancelled)`` in napari's thread pool. ``progress(stage, fraction)`` may be
called from the worker thread (it is relayed to the GUI thread by a Qt signal); ``cancelled()`` turns True
after :meth:`Task.cancel`, and the engine polls it between stages and raises :class:`~napari_clipsam.Cancelled`.
The job never raises into napari: its value or its exception arrives as an :class:`Outcome` in the GUI thread.
"""
from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..config import ClipSAMConfig
from ..heavy_imports import prepare_heavy_imports

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
LOADING_SHARE = 0.3
"""Share of the progress bar a Run gives to loading the engine when it must (the engine then reports the rest)."""


@dataclass
class Outcome:
    """What a job gave: its ``value``, or the ``error`` it raised (with the formatted traceback)."""

    value: Any = None
    error: Exception | None = None
    traceback: str = ""
    cancel_late: bool = False
    """Cancel was pressed after the job had made its result (the result stands)."""

    @property
    def ok(self) -> bool:
        return self.error is None


class _Relay(QObject):
    progressed = Signal(str, float)


class Task:
    """One job in a napari thread worker, with progress relayed to the GUI thread and a cancel flag.

    Args:
        fn: ``fn(progress, cancelled) -> value``, run in the worker thread.
        on_progress: called in the GUI thread with (stage, fraction 0..1).
        on_done: called in the GUI thread with the :class:`Outcome`, once.
        owner: the QObject whose widgets the callbacks update (the dock): when Qt deletes it, the job is
            cancelled and its callbacks are never called.
    """

    def __init__(self, fn: Callable[[Progress, Callable[[], bool]], Any],
                 on_progress: Progress | None, on_done: Callable[[Outcome], None], owner: QObject | None = None):
        self._fn = fn
        self._cancel = threading.Event()
        self._relay = _Relay()  # the Task's own (not the owner's child: the worker thread emits on it)
        if on_progress is not None:
            self._relay.progressed.connect(on_progress)
        self._owner, self._owner_gone = owner, False
        if owner is not None:
            owner.destroyed.connect(self._owner_deleted)
        self._on_done = on_done
        self.finished = False
        self.worker = create_worker(self._body, _start_thread=False)
        self.worker.returned.connect(self._finish)

    def start(self) -> Task:
        self.worker.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _body(self) -> Outcome:
        try:
            return Outcome(value=self._fn(self._relay.progressed.emit, self._cancel.is_set))
        except Exception as exc:  # delivered to the GUI thread, never raised into napari's notifications
            return Outcome(error=exc, traceback=traceback.format_exc())

    def _owner_deleted(self, *_) -> None:
        """Qt deleted the owner (napari closed the viewer, and the dock with it, without closing the dock)."""
        self._owner_gone = True
        self._cancel.set()

    def _finish(self, outcome: Outcome) -> None:
        self.finished = True
        outcome.cancel_late = outcome.ok and self._cancel.is_set()
        if self._owner_gone:  # its widgets are deleted: nothing to show the outcome in
            return
        if self._owner is not None:  # the owner outlives its jobs: do not keep this one (what it holds) connected
            try:
                self._owner.destroyed.disconnect(self._owner_deleted)
            except (TypeError, RuntimeError):  # already disconnected
                pass
        self._on_done(outcome)


# ---------------------------------------------------------------------- jobs


def threshold_settings(prompt_threshold: float, mask_threshold: float, alpha: float) -> dict:
    """The widget's thresholds as per-call engine settings (the engine's own settings never change)."""
    return dict(prompt_threshold=float(prompt_threshold), mask_threshold=float(mask_threshold), alpha=float(alpha))


ALIGNED_WINDOW = 2  # the aligned window the dock's "aligned parts" sets (docs/method.md, folder mutual scoring)


def folder_settings(thresholds, aligned: bool) -> dict:
    """Per-call settings of a folder mutual scoring from the dock: its thresholds, and the aligned window when
    *aligned parts* is ticked (the windowed score alone; else the engine's own ``mutual_window`` and
    ``mutual_window_mode``: by default the mean of the global and the windowed scores)."""
    settings = threshold_settings(*thresholds)
    if aligned:
        settings["mutual_window"] = ALIGNED_WINDOW
        settings["mutual_window_mode"] = "only"
    return settings


def segment_job(engine, config, read_frame: Callable[[Any], Any], frames: list, object_name: str,
                thresholds: tuple[float, float, float], contrast_limits, precomputed=None, references=None,
                extra_settings: dict | None = None):
    """A job that builds the engine if ``engine`` is None (from ``config``), then segments the frames.

    ``precomputed(cancelled)``, if given, runs first in the worker thread and may return the results
    (``{frame: result}``, e.g. from a prefetch) or None to segment as usual. ``references``: ``(key, images)``
    of new normal references for the engine (empty key: none any more); None leaves the engine's as they are.
    ``extra_settings``: more per-call engine settings than the thresholds (e.g. ``keep_patch_tokens``).
    Returns ``(engine, {frame: ClipSAMResult})``. Engine loading reports stages prefixed ``"loading"``.
    """

    def job(progress: Progress, cancelled: Callable[[], bool]):
        # a prefetched result was made with the engine's references as they were: not when they change now
        ready = precomputed(cancelled) if precomputed is not None and references is None else None
        if ready is not None and engine is not None:
            progress("prefetched", 1.0)
            return engine, ready
        eng = engine
        base = 0.0  # share of the bar given to loading the engine (the first Run only)
        if eng is None:
            base = LOADING_SHARE
            progress("loading weights: libraries", 0.0)
            decision = prepare_heavy_imports()
            log.info("ClipSAM: loading torch & models (%s)", decision)
            from ..engine.clipsam import ClipSAM

            def loading(stage: str, fraction: float) -> None:
                progress(f"loading weights: {stage}", LOADING_SHARE * min(1.0, max(0.0, fraction)))

            eng = ClipSAM.from_config(config, progress=loading, cancelled=cancelled)
        settings = {**threshold_settings(*thresholds), **(extra_settings or {})}
        if references is not None:  # the set changed since this engine last got one
            key, refs = references
            if key:
                eng.set_normal_references(refs, None, progress=lambda s, f: progress("normal references", base),
                                          cancelled=cancelled)
            else:
                eng.clear_normal_references()
        images = [read_frame(f) for f in frames]
        n = len(images)

        def seg_progress(stage: str, fraction: float) -> None:
            progress(stage, base + (1.0 - base) * fraction)

        if n == 1:
            results = [eng.segment(images[0], object_name, progress=seg_progress, cancelled=cancelled,
                                   contrast_limits=contrast_limits, settings=settings)]
        else:
            results = eng.segment_many(images, object_name, progress=seg_progress, cancelled=cancelled,
                                       contrast_limits=contrast_limits, settings=settings)
        return eng, dict(zip(frames, results))

    return job


def ensure_engine(engine, config, progress: Progress, cancelled: Callable[[], bool]):
    """``(engine, share)``: ``engine``, or one built from ``config`` in this (worker) thread, with the share of the
    progress bar its loading took (:data:`LOADING_SHARE` when built, else 0)."""
    if engine is not None:
        return engine, 0.0
    progress("loading weights: libraries", 0.0)
    prepare_heavy_imports()
    from ..engine.clipsam import ClipSAM

    built = ClipSAM.from_config(config, progress=lambda s, f: progress(f"loading weights: {s}",
                                                                       LOADING_SHARE * min(1.0, max(0.0, f))),
                                cancelled=cancelled)
    return built, LOADING_SHARE


def refine_job(engine, jobs: list, thresholds: tuple[float, float, float] | None = None, read_image=None,
               contrast_limits=None):
    """A job that refines ``[(frame, result, (points, labels, boxes)), ...]`` → ``{frame: refined result}``.

    A result made by another engine (the preset or weights changed since) is refined on this engine's SAM:
    ``read_image(frame)`` gives its image to embed again.
    """

    def job(progress: Progress, cancelled: Callable[[], bool]):
        from ..errors import EngineMismatchError

        settings = threshold_settings(*thresholds) if thresholds is not None else None
        out = {}
        for frame, result, (points, labels, boxes) in jobs:
            if cancelled():
                break
            try:
                out[frame] = engine.refine(result, points, labels, boxes, settings=settings)
            except EngineMismatchError:
                if read_image is None:
                    raise
                out[frame] = engine.refine(result, points, labels, boxes, image=read_image(frame),
                                           contrast_limits=contrast_limits, settings=settings)
        return out

    return job


def run_summary(results: dict, outputs, kept: dict[str, int], outcome: Outcome | None = None) -> str:
    """The status line after a Run: what was found, what of the person's work was kept, and why nothing was (and
    when Cancel came after the results were made, that they are shown)."""
    n = sum(r.num_instances for r in results.values())
    seen = sum(len(np.unique(p[p > 0])) for p in (np.asarray(outputs.plane(f)) for f in results))
    best = max(r.score for r in results.values())
    first = next(iter(results.values()))
    made_by = first.provenance.get("rough_map") or first.mode
    text = (f"Done: {seen} object(s) in {len(results)} image(s) ({n} found by ClipSAM), anomaly score {best:.3f}."
            f" Rough map: {made_by}.")
    if any(kept.values()):
        text += (f" Kept your corrections: {kept['prompts']} prompt(s), {kept['pixels']} hand-edited pixel(s), "
                 f"{kept['locked']} locked object(s) (Discard corrections starts over).")
    if n == 0 and not kept["prompts"]:
        text += " " + why_nothing(results.values())
    else:
        text += " Edit points/boxes to refine; F flips a selected point."
    if any(r.image_key in ((r.provenance.get("fewshot") or {}).get("references") or ()) for r in results.values()):
        text += (" Careful: this image is one of the normal references, so its own defects count as normal: Clear "
                 "the references (or set them without it) to segment it.")
    if outcome is not None and outcome.cancel_late:
        text = "Cancel came after ClipSAM had finished: its results are shown. " + text
    return text


def why_nothing(results) -> str:
    """Why a run found no instance, with a τ_prompt to try taken from the rough maps' range."""
    results = list(results)
    peak = max(float(r.rough_map.max()) for r in results)
    thresholds = {**ClipSAMConfig().thresholds(), **results[0].provenance.get("thresholds", {})}
    tau = float(thresholds["prompt_threshold"])
    if all(len(r.boxes) == 0 for r in results):
        from .threshold_preview import suggested_prompt_threshold

        low = float(min(r.rough_map.min() for r in results))
        suggest = suggested_prompt_threshold(*(r.rough_map for r in results), thresholds=thresholds)
        if peak < tau:
            return (f"No defect region: the rough map stayed below τ_prompt {tau:.3f} (its range is "
                    f"{low:.3f}–{peak:.3f}). Lower τ_prompt (e.g. to {suggest:.3f}) or click points on the defect.")
        return (f"No defect region: the rough map reached τ_prompt {tau:.3f} only in specks smaller than "
                f"min_component_px {int(thresholds['min_component_px'])} (after an opening of "
                f"{int(thresholds['opening_size'])} px), dropped as noise. Lower τ_prompt (e.g. to {suggest:.3f}) "
                "to take a larger region, or click points on the defect.")
    tau_mask = float(thresholds["mask_threshold"])
    return (f"Prompts were found but no pixel of the final map reached τ_mask {tau_mask:.3f}: lower τ_mask or α, "
            "or correct the prompts.")


def end_background_task(widget, outcome, button) -> bool:
    """The dock's common end of a background action (Score across, Adapt): the task slot freed, the heartbeat and
    running state stopped, ``button`` enabled again; a failed ``outcome`` is reported and announced. Returns
    whether the outcome succeeded (the caller then shows its result)."""
    widget.task = None
    widget.heartbeat.stop()
    widget._set_running(False)
    button.setEnabled(True)
    if outcome.ok:
        return True
    widget.c.progress.setValue(0)
    report_error(outcome, widget.set_status)
    widget.run_finished.emit(outcome)
    return False



def report_error(outcome, set_status: Callable[[str], None]) -> None:
    """Say in the status line why a job ended without a result: cancelled, a user error (its message; missing
    weights also where napari shows problems, with every file), or a failure (its traceback in the log)."""
    from ..errors import Cancelled, IncompatibleCheckpointError, WeightsUnavailableError
    from ..export import ExportError

    err = outcome.error
    if isinstance(err, Cancelled):
        set_status("Cancelled.")
    elif isinstance(err, (WeightsUnavailableError, IncompatibleCheckpointError, ExportError, ValueError, OSError)):
        set_status(str(err))
        if isinstance(err, WeightsUnavailableError):
            from napari.utils.notifications import show_error

            show_error(str(err))
    else:
        log.error("ClipSAM run failed:\n%s", outcome.traceback)
        set_status(f"ClipSAM failed ({type(err).__name__}: {err}); the traceback is in the log.")
