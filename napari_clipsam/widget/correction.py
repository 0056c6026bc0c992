"""The correction loop: prompt edits → debounced refine in a worker → masks updated (undoably).

Adding, moving or deleting points and boxes, or flipping a point's label, restarts a 150 ms single-shot timer;
when it fires, every frame whose prompts differ from those that made its masks is refined from the result's
cached SAM embedding (no encoder runs). One refine runs at a time; an edit made while it runs makes its result
stale: it is discarded and a new refine starts with the latest prompts.
"""
from __future__ import annotations

import time
from functools import partial
from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from .layers import OutputLayers
from .source import contrast_limits_for, read_frame
from .workers import Outcome, Task, refine_job

DEBOUNCE_MS = 150


def _same_prompts(a, b) -> bool:
    return all(x.shape == y.shape and np.allclose(x, y, atol=1e-3) for x, y in zip(a, b))


def _empty_prompts():
    return np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.zeros((0, 4), np.float32)


class CorrectionLoop(QObject):
    """Refines the masks of one :class:`OutputLayers` whenever its prompts are edited.

    Args:
        outputs: the layers and results to keep in step.
        engine: returns the engine to refine with, or None with a reason via ``status``.
        thresholds: returns (τ_prompt, τ_mask, α) for each refine (per-call settings; the engine is not changed).
        default_class: the class given to new instances.
        status: shows a message in the widget.
    Signals:
        refined(list): frames whose masks were just replaced (after a refine was applied).
    """

    refined = Signal(list)

    def __init__(self, outputs: OutputLayers, engine: Callable[[], object], default_class: Callable[[], str],
                 status: Callable[[str], None], parent: QObject | None = None,
                 thresholds: Callable[[], tuple[float, float, float]] | None = None):
        super().__init__(parent)
        self._thresholds = thresholds
        self.outputs, self._engine, self._default_class, self._status = outputs, engine, default_class, status
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.refine_now)
        self.generation = 0
        self.task: Task | None = None
        self._pending = False
        self._applied: dict = {}
        self._edit_time: float | None = None
        self.last_latency: float | None = None
        self.last_compute: float | None = None
        self._bound_to = None
        self._report = True
        self._quiet = False
        self._toggle_negative: Callable[[], None] | None = None
        outputs.on_prompts_edited = self._on_edit

    @property
    def busy(self) -> bool:
        return self.task is not None or self.timer.isActive()

    def reset(self, frames) -> None:
        """New results were shown for ``frames``: their prompts are the reference; in-flight refines are stale."""
        self.generation += 1
        prompts = self.outputs.read_prompts()
        for frame in frames:
            self._applied[frame] = prompts.get(frame, _empty_prompts())
        self.bind_keys()

    def bind_keys(self, toggle_negative: Callable[[], None] | None = None) -> None:
        """Bind F (flip label), N (negative mode) and R (refine now) on the prompts layer (again after it was
        recreated)."""
        if toggle_negative is not None:
            self._toggle_negative = toggle_negative
        layer = self.outputs.prompts
        if layer is not None and not (layer == self._bound_to):
            layer.bind_key("f", lambda _layer: self.flip_selected(), overwrite=True)
            layer.bind_key("r", lambda _layer: self.refine_now(force=True), overwrite=True)
            if self._toggle_negative is not None:
                layer.bind_key("n", lambda _layer: self._toggle_negative(), overwrite=True)
            self._bound_to = layer

    def flip_selected(self) -> int:
        """Flip the selected points between positive and negative; returns how many were flipped."""
        layer = self.outputs.prompts
        if layer is None or not layer.selected_data:
            self._status("Select prompt points first (points layer, select mode), then flip them.")
            return 0
        idx = sorted(layer.selected_data)
        labels = layer.features["label"].astype(str).to_numpy().copy()
        sources = layer.features["source"].astype(str).to_numpy().copy()
        labels[idx] = np.where(labels[idx] == "positive", "negative", "positive")
        sources[idx] = "user"
        self.outputs.set_point_features(labels, sources)
        self._on_edit(None)
        return len(idx)

    def quiet_next(self) -> None:
        """An action's prompt removal has just started a refine: when it finishes it leaves the status line alone
        (the action said what it did). Nothing is silenced when no refine is coming."""
        self._quiet = self.busy

    def cancel(self) -> None:
        self.timer.stop()
        self._pending = False  # a cancelled loop does not start again by itself; only a new edit restarts it
        self.generation += 1
        if self.task is not None:
            self.task.cancel()

    def refine_now(self, force: bool = False, frames=None, report: bool = True) -> None:
        """Refine the frames whose prompts changed (all frames with results when ``force``; also ``frames``).

        ``report=False`` leaves the status line alone (a Run that refines frames holding the person's prompts
        has already said what it did)."""
        self.timer.stop()
        self._report = report
        if frames:
            for f in frames:
                self._applied.pop(f, None)  # compared with nothing: they refine now, or after the running refine
        if self.task is not None:
            self._pending = True
            return
        prompts = self.outputs.read_prompts()
        frames = [f for f in self.outputs.results if force or f not in self._applied or not _same_prompts(
            prompts.get(f, _empty_prompts()), self._applied[f])]
        missing = sorted(f for f in prompts if f not in self.outputs.results and f is not None)
        if missing:
            self._status(f"Frame(s) {missing} have prompts but no ClipSAM result yet: run them first.")
        if not frames:
            self._edit_time = None
            return
        engine = self._engine()
        if engine is None:
            return
        jobs = [(f, self.outputs.results[f], prompts.get(f, _empty_prompts())) for f in frames]
        generation, started = self.generation, time.perf_counter()

        def done(outcome: Outcome) -> None:
            self._done(generation, started, jobs, outcome)

        source = self.outputs.source
        job = refine_job(engine, jobs, self._thresholds() if self._thresholds is not None else None,
                         read_image=partial(read_frame, source), contrast_limits=contrast_limits_for(source))
        self.task = Task(job, None, done, owner=self).start()

    # ------------------------------------------------------------------ internals
    def _summary(self, frames) -> str:
        """What a refine did, counting the objects the masks layer shows (not the engine's instances)."""
        shown = self.outputs.displayed_frame()
        planes = [np.asarray(self.outputs.plane(f)) for f in ([shown] if shown in frames else frames)]
        n = len(set().union(*(np.unique(p[p > 0]).tolist() for p in planes)))
        where = "on screen" if shown in frames else f"in {len(frames)} frame(s) not shown now"
        return (f"Refined: {n} object(s) {where} (refine {1000 * self.last_compute:.0f} ms). "
                "Ctrl+Z on the masks layer undoes it.")

    def _on_edit(self, event) -> None:
        layer = getattr(event, "source", None)
        if event is not None and str(getattr(event, "action", "")) in ("added", "changed") \
                and layer is not None and self.outputs.owns(layer) and "source" in layer.features:
            # added or moved prompts are the person's (a new Run keeps them). napari gives a new point the
            # features of the point selected last, so "added" is marked here, not left to feature_defaults.
            n = len(layer.data)
            idx = sorted({int(i) % n for i in np.atleast_1d(getattr(event, "data_indices", ())) if -n <= int(i) < n})
            if idx:
                layer.features.loc[idx, "source"] = "user"
                if str(event.action) == "added" and layer == self.outputs.prompts:
                    layer.features.loc[idx, "label"] = self.outputs.new_point_label
                    layer.refresh_colors()
        self.generation += 1
        if self._edit_time is None:
            self._edit_time = time.perf_counter()
        self.timer.start()

    def _done(self, generation: int, started: float, jobs, outcome: Outcome) -> None:
        self.task = None
        if not outcome.ok:
            self._status(f"Refine failed: {outcome.error}")
        elif generation != self.generation:
            pass  # an edit came in while refining: this result is stale, the next refine supersedes it
        else:
            default = self._default_class()
            for frame, result in outcome.value.items():
                self.outputs.apply_refined(frame, result, default)
            for frame, _, prompts in jobs:
                self._applied[frame] = prompts
            self.last_compute = time.perf_counter() - started
            if self._edit_time is not None:
                self.last_latency = time.perf_counter() - self._edit_time
                self._edit_time = None
            if self._report and not self._quiet:
                self._status(self._summary(list(outcome.value)))
            self._quiet = False
            self.refined.emit(list(outcome.value))
        if self._pending:  # edits came in while refining (an edit whose timer still runs refines by itself)
            self._pending = False
            self.refine_now()
