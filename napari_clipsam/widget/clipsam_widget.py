"""The ClipSAM dock widget: a thin layer between napari and the Qt-free engine.

Construction lives in :mod:`.controls`; behaviour is split by concern: :mod:`.source` (which image), :mod:`.workers`
(background jobs), :mod:`.layers` (output layers), :mod:`.correction` (edit → refine), :mod:`.classes`, :mod:`.cues`,
:mod:`.threshold_preview`, :mod:`.export_panel` and :mod:`.folder`. This class wires them and owns the engine and Run.
"""
from __future__ import annotations

import logging
import os
from functools import partial

from qtpy.QtCore import QEvent, QSize, QTimer, Signal
from qtpy.QtWidgets import QWidget

from ..config import ClipSAMConfig
from ..heavy_imports import preload_in_background
from .adapt_action import AdaptAction
from .browse import browse_weights
from .classes import ClassList
from .controls import DOCK_WIDTH, Controls, build_controls
from .cues import ModeCues
from .correction import CorrectionLoop
from .export_panel import ExportPanel
from .heartbeat import Heartbeat
from .folder import FolderPanel
from .instances import InstanceTable
from .references import ReferencePanel
from .layers import ROLE, OutputLayers
from .objects import ObjectActions
from .score_across import ScoreAcross
from .settings import WidgetSettings, weights_overrides
from .settings_binding import change_signals, read_settings, show_settings
from .threshold_preview import ThresholdPreview
from .source import (SourcePicker, contrast_limits_for, current_frame, frame_count, frames_text, plane_shape,
                     read_frame)
from .staging import in_turns
from .workers import Outcome, Task, report_error, run_summary, segment_job

log = logging.getLogger(__name__)


class ClipSAMWidget(QWidget):
    """ClipSAM for napari: segment an image layer, correct the prompts, export pseudo-labels, review folders.

    Args:
        napari_viewer: the napari viewer (napari injects it by this name when the widget is opened from the
            Plugins menu).
        engine: a ready :class:`~napari_clipsam.ClipSAM` (tests, scripts); by default one is built on the first
            Run from the preset, UMCI file and device shown in the widget.
        config: a :class:`~napari_clipsam.ClipSAMConfig` to build the engine from instead of the preset (e.g.
            local weights on an offline machine); the widget's UMCI file, device and thresholds still apply.
        settings_path: where settings are remembered (default: the user config folder, see
            :mod:`.settings`).
    """

    run_finished = Signal(object)
    """Emitted with the :class:`~.workers.Outcome` when any Run ends (done, failed or cancelled)."""

    def __init__(self, napari_viewer, engine=None, *, config: ClipSAMConfig | None = None,
                 settings_path: str | os.PathLike | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        # From the Plugins menu napari passes a proxy of the viewer that allows public API only; every layer read
        # through it is a new proxy object, and layers in napari's events are not proxies. So this package
        # tells layers apart by equality (``==``, ``in``: the proxy compares as the layer it wraps), never by
        # identity (``is``).
        self.viewer = viewer = napari_viewer
        self.c: Controls = build_controls(self)
        self._engine, self._base_config = engine, config
        preload_in_background()  # the first Run then finds torch & co. imported (heavy_imports)
        self._settings_path = settings_path
        self.settings = WidgetSettings.load(settings_path)
        self.task: Task | None = None
        self._finishing = False  # a Run's results being shown (new layers added one per event-loop turn)
        self._task_source = None  # the image layer the running task works on
        self._applied_refs, self._pending_refs = None, ""  # (engine, references key) the engine last got; next
        self._docked = self._closed = False
        self._sessions: list[tuple[OutputLayers, CorrectionLoop]] = []
        self._load_settings()
        self.picker = SourcePicker(viewer, self.c.image, is_output=lambda layer: ROLE in layer.metadata)
        self.classes = ClassList(self.c, self.settings.classes, self.sessions, self.current_outputs, self.set_status)
        self.export_panel = ExportPanel(self.c, self.current_outputs, lambda: self.class_names, self.set_status,
                                        self.save_settings)
        self.folder = FolderPanel(self.c, self)
        self.references = ReferencePanel(self.c, self._selected_images, self.set_status)
        self.objects = InstanceTable(self.c, self.current_outputs, lambda: self.class_names, self.set_status)
        self.cues = ModeCues(self.c, self.sessions, self.current_outputs, self.set_status)
        self.heartbeat = Heartbeat(self.set_status, self)
        self.object_actions = ObjectActions(self.current_outputs, self.set_status, self._objects_changed,
                                            quiet_refine=lambda: self.correction_for(self.picker.current))
        self._built_for = self._engine_key()
        self._connect()
        self.tau_help, self.across, self.adapt = ThresholdPreview(self), ScoreAcross(self), AdaptAction(self)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ------------------------------------------------------------------ state
    @property
    def engine(self):
        """The engine (None until the first Run when none was injected, or after settings needing a new one)."""
        return self._engine

    @property
    def busy(self) -> bool:
        """True while a Run (engine creation and/or segmentation, then showing its results) is going."""
        return self.task is not None or self._finishing

    @property
    def status(self) -> str:
        return self.c.status.text()

    @property
    def object_name(self) -> str:
        return self.c.object_name.text().strip()

    @property
    def thresholds(self) -> tuple[float, float, float]:
        """(τ_prompt, τ_mask, α) as set in the widget."""
        return (self.c.prompt_threshold.value(), self.c.mask_threshold.value(), self.c.alpha.value())

    @property
    def class_names(self) -> list[str]:
        return self.classes.names

    @property
    def export_formats(self) -> list[str]:
        return self.export_panel.formats

    def set_status(self, text: str) -> None:
        self.c.status.setText(text)

    def run_inputs(self) -> tuple:
        """(engine or None, object name, thresholds) a Run would use now (the folder review's prefetch key)."""
        return self._engine, self.object_name, self.thresholds

    def export_options(self) -> tuple[list[str], list[str]]:
        return self.class_names, self.export_formats

    def add_references(self, images, name: str) -> tuple[int, int]:
        """Add defect-free images (planes) as normal references: (added, references in all)."""
        added = sum(self.references.add(plane, name) for plane in images)
        return added, len(self.references.images)

    def select_source(self, layer) -> None:
        self.picker.set_current(layer)

    def sessions(self) -> list[OutputLayers]:
        return [outputs for outputs, _ in self._sessions]

    def outputs_for(self, layer) -> OutputLayers | None:
        """The output layers made from ``layer`` (an image layer), or None."""
        return next((o for o, _ in self._sessions if o.source == layer), None)

    def correction_for(self, layer) -> CorrectionLoop | None:
        return next((loop for o, loop in self._sessions if o.source == layer), None)

    def current_outputs(self) -> OutputLayers | None:
        return self.outputs_for(self.picker.current)

    def engine_config(self) -> ClipSAMConfig:
        """The config a new engine is built from: preset (or the given config) + UMCI file, device, thresholds."""
        base = self._base_config or ClipSAMConfig.preset(self.c.preset.currentText())
        tp, tm, a = self.thresholds
        local = weights_overrides(self.c.clip_weights.text(), self.c.sam_weights.text())
        return base.replace(umci_weights=self.c.umci.text().strip() or None, device=self.c.device.currentText(),
                            backend=self.c.backend.currentText(), prompt_threshold=tp, mask_threshold=tm, alpha=a,
                            **local)

    # ------------------------------------------------------------------ actions
    def run(self, source=None, *, precomputed=None, on_done=None, all_frames: bool | None = None) -> bool:
        """Segment ``source`` (default: the chosen image layer) in the background. Returns False when refused.

        ``on_done(outcome)`` is called in the GUI thread when the run ends (done, failed or cancelled).
        ``all_frames``: every frame of a stack (default: the *all frames* box decides).
        """
        if self.busy:
            self.set_status("ClipSAM is already running: wait for it to finish or press Cancel.")
            return False
        source = source if source is not None else self.picker.current
        if source is None:
            self.set_status("Add or choose an image layer first.")
            return False
        try:
            n_frames = frame_count(source)
            config = None if self._engine is not None else self.engine_config()
        except ValueError as err:
            self.set_status(str(err))
            return False
        if not self.object_name:
            self.set_status("Enter what the image shows (Object), e.g. 'metal plate'.")
            return False
        if n_frames is None:
            frames = [None]
        elif self.c.all_frames.isChecked() if all_frames is None else all_frames:
            frames = list(range(n_frames))
        else:
            frames = [current_frame(self.viewer, source)]
        for _, loop in self._sessions:
            loop.cancel()
        self.save_settings()
        key = self.references.key
        refs = None if self._engine is not None and self._applied_refs == (id(self._engine), key) \
            else (key, self.references.images)
        self._pending_refs = key
        job = segment_job(self._engine, config, partial(read_frame, source), frames, self.object_name,
                          self.thresholds, contrast_limits_for(source),
                          **self.folder.run_options(source, precomputed),
                          references=refs)
        engine_generation = self._engine_generation
        self.heartbeat.start(("Loading ClipSAM weights…" if config is not None else "Running ClipSAM…")
                             + f" on {source.name!r}{frames_text(frames)}")
        self.c.progress.setValue(0)
        self._set_running(True)
        data = source.data  # results are shown only if the layer still holds these pixels when the run ends
        self.task = Task(job, self._on_progress,
                         lambda outcome: self._on_run_done(source, data, n_frames, engine_generation, outcome,
                                                           on_done), owner=self)
        self._task_source = source
        self.task.start()
        return True

    def cancel(self) -> None:
        """Stop the running job (the engine stops at its next stage); nothing half-made is shown."""
        if self.task is not None:
            self.task.cancel()
            self.heartbeat.stop()
            self.set_status("Cancelling… (the job stops at its next step)")

    def refine(self) -> bool:
        """Refine the chosen image's masks from the prompts now in its layers."""
        loop = self.correction_for(self.picker.current)
        if loop is None:
            self.set_status("Run ClipSAM on this image first; then edit prompts or press Refine.")
            return False
        loop.refine_now(force=True)
        return True

    def set_negative_mode(self, negative: bool) -> None:
        """New points placed on the prompts layers are negative (True) or positive (False) (see :mod:`.cues`)."""
        self.cues.set_negative(negative)

    def delete_prompts(self) -> int:
        """Delete the selected points and boxes of the chosen image (the Delete key does it on the canvas)."""
        outputs = self.current_outputs()
        n = 0
        for layer in (outputs.prompts, outputs.boxes) if outputs is not None else ():
            if layer is not None and layer.selected_data:
                n += len(layer.selected_data)
                layer.remove_selected()
        if not n:
            self.set_status("Select points or boxes first (select mode on the prompts or boxes layer).")
        return n

    def flip(self) -> int:
        loop = self.correction_for(self.picker.current)
        if loop is None:
            self.set_status("Run ClipSAM on this image first.")
            return 0
        return loop.flip_selected()

    def show_saved_labels(self, source, labels, classes: dict[int, str]) -> OutputLayers:
        """Show labels saved earlier (e.g. an accepted review image) in ``source``'s masks layer, as the person's
        work: a later Run or refine keeps these objects and only adds to the background around them."""
        outputs, _ = self._session_for(source, frame_count(source))
        outputs.set_classes(self.class_names)
        outputs.show_saved(labels, classes)
        self.objects.refresh()
        return outputs

    def _selected_images(self) -> list:
        """Image layers selected in napari's layer list (ClipSAM's own output layers left out)."""
        return [x for x in self.viewer.layers.selection if x in self.picker.candidates()]

    def delete_object(self) -> int:
        """Delete the object selected in the masks layer (pixels and prompts); returns the pixels erased."""
        return self.object_actions.delete()

    def lock_object(self) -> bool:
        """Lock (or unlock, when locked) the object selected in the masks layer; True when it is now locked."""
        return self.object_actions.lock()

    def discard_corrections(self) -> int:
        """Put back ClipSAM's last masks in the shown frame; returns the pixels changed."""
        return self.object_actions.discard()

    def forget(self, source, remove_layers: bool = False) -> None:
        """Stop tracking the outputs of ``source`` (optionally removing its output layers from the viewer)."""
        for item in [s for s in self._sessions if s[0].source == source]:
            outputs, loop = item
            loop.cancel()
            outputs.disconnect()
            self._sessions.remove(item)
            if remove_layers:
                for layer in outputs.layers():
                    if layer in self.viewer.layers:
                        self.viewer.layers.remove(layer)

    def cleanup(self) -> None:
        """Disconnect from the viewer: events, key bindings, running jobs (when the widget is closed/undocked)."""
        if self._closed:
            return
        self._closed = True
        if self.task is not None:
            self.task.cancel()
        for outputs, _ in list(self._sessions):
            self.forget(outputs.source)
        self.picker.disconnect_viewer()
        self.folder.disconnect()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """At most :data:`~.controls.DOCK_WIDTH` wide (or the minimum, if wider): the canvas gets the rest."""
        hint = super().sizeHint()
        return QSize(min(hint.width(), max(DOCK_WIDTH, self.minimumSizeHint().width())), hint.height())

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.save_settings()
        self.cleanup()
        super().closeEvent(event)

    def event(self, event) -> bool:
        # napari's remove_dock_widget (the dock's x button) only un-parents the widget, it does not close it
        if event.type() == QEvent.Type.ParentChange and hasattr(self, "_closed"):
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.save_settings()
                self.cleanup()
        return super().event(event)

    _engine_generation = 0  # ------------------------------------------------------- run plumbing

    def _engine_for_refine(self):
        if self.busy:
            self.set_status("Wait for the running job to finish before refining.")
            return None
        if self._engine is None:
            self.set_status("The engine settings changed since these results: press Run to rebuild the engine.")
            return None
        return self._engine

    def restart_outputs(self, source) -> None:
        """``source`` now holds another image: empty its output layers and forget its results (no undo)."""
        item = next((s for s in self._sessions if s[0].source == source), None)
        if item is not None:
            item[1].cancel()
            item[0].reset(frame_count(source), plane_shape(source))

    def _session_for(self, source, n_frames) -> tuple[OutputLayers, CorrectionLoop]:
        shape = plane_shape(source)
        for item in self._sessions:
            outputs = item[0]
            if outputs.source == source:
                if (outputs.n_frames, outputs.shape) != (n_frames, shape):
                    outputs.reset(n_frames, shape)  # the layer's data changed shape: start afresh
                return item
        outputs = OutputLayers(self.viewer, source, n_frames, shape)
        outputs.set_classes(self.class_names)
        self.cues.apply(outputs)
        loop = CorrectionLoop(outputs, self._engine_for_refine, lambda: self.classes.selected, self.set_status, self,
                              thresholds=lambda: self.thresholds)
        loop.bind_keys(toggle_negative=lambda: self.c.negative.toggle())
        loop.refined.connect(lambda frames: self.objects.refresh())
        # napari emits "paint" before it writes the pixels: refresh once the stroke is in the data
        outputs.on_masks_painted = lambda frame: QTimer.singleShot(0, self.objects.refresh)
        self._sessions.append((outputs, loop))
        return outputs, loop

    def _on_progress(self, stage: str, fraction: float) -> None:
        self.c.progress.setValue(max(self.c.progress.value(), int(round(100 * fraction))))  # never backwards
        if self.task is not None and not self.task.cancelled:
            self.heartbeat.stage(stage)

    def _on_run_done(self, source, data, n_frames, engine_generation: int, outcome: Outcome, on_done) -> None:
        self.task = None
        if outcome.ok:
            self._applied_refs = (id(outcome.value[0]), self._pending_refs)
            if engine_generation == self._engine_generation:
                self._engine = outcome.value[0]
        shown = outcome.ok and source in self.viewer.layers and source.data is data
        roles = self._session_for(source, n_frames)[0].missing_roles() if shown else []
        if roles:  # a new image: its layers are added hidden, then shown, one per event-loop turn
            outputs, self._finishing = self.outputs_for(source), True
            self.heartbeat.stage("adding the result layers", cancellable=False)
            self.c.cancel.setEnabled(False)  # the results are made: nothing is left to cancel
            in_turns([partial(outputs.ensure_layer, role, visible=False) for role in roles]
                     + [partial(outputs.reveal, role) for role in roles],
                     lambda: self._finish_run(source, data, n_frames, outcome, on_done, first=True),
                     stop=lambda: self._closed)
        else:
            self._finish_run(source, data, n_frames, outcome, on_done, first=False)

    def _finish_run(self, source, data, n_frames, outcome: Outcome, on_done, first: bool) -> None:
        self._finishing = False
        if self._closed:  # the dock was closed while the result layers were added
            return
        self.heartbeat.stop()
        self._set_running(False)
        if source not in self.viewer.layers:  # (its removal cancelled the run: say why, not just "Cancelled")
            self.set_status(f"The image {source.name!r} was removed while ClipSAM ran: its run stopped, nothing shown.")
        elif not outcome.ok:
            self.c.progress.setValue(0)
            report_error(outcome, self.set_status)
        elif source.data is not data:
            self.set_status(f"The image {source.name!r} was given new data while ClipSAM ran; results "
                            "dropped. Press Run again.")
        else:
            results = outcome.value[1]
            outputs, loop = self._session_for(source, n_frames)
            outputs.set_classes(self.class_names)
            kept = outputs.corrections(results)
            defer = outputs.user_prompt_frames() & set(results)
            outputs.show(results, self.classes.selected, defer_masks=defer)
            self.cues.apply(outputs)  # the prompts layer may be new: show the point mode on it
            loop.reset([f for f in results if f not in defer])
            if defer:
                loop.refine_now(frames=sorted(defer, key=lambda f: -1 if f is None else f), report=False)
            self.c.progress.setValue(100)
            self.set_status(run_summary(results, outputs, kept, outcome))
            self.objects.refresh()
            if first:  # the dock made the canvas narrower since the image was opened: show it whole
                self.viewer.reset_view()
        if on_done is not None:
            on_done(outcome)
        self.run_finished.emit(outcome)

    def _set_running(self, running: bool) -> None:
        self.c.run.setEnabled(not running)
        self.c.cancel.setEnabled(running)

    def _engine_key(self) -> tuple[str, ...]:
        c = self.c
        return (c.preset.currentText(), c.umci.text().strip(), c.device.currentText(), c.backend.currentText(),
                c.clip_weights.text().strip(), c.sam_weights.text().strip())

    def _engine_settings_changed(self, *args) -> None:
        """Preset, UMCI file or device changed: the engine must be rebuilt (thresholds do not need this)."""
        key = self._engine_key()
        if key == self._built_for:
            return
        self._built_for = key
        if self._engine is not None:
            self.set_status("Engine settings changed: the next Run builds a new engine.")
        self._engine = None
        self._engine_generation += 1

    def _objects_changed(self) -> None:
        self.objects.refresh()
        self.cues.update_lock()

    def _classes_changed(self, names: list[str]) -> None:
        for outputs in self.sessions():
            outputs.set_classes(names)
        self.objects.refresh()

    def _on_layer_removed(self, event) -> None:
        if self.task is not None and self._task_source == event.value:
            self.cancel()  # its image is gone: stop working on it now
        if any(o.source == event.value for o, _ in self._sessions):
            self.forget(event.value)

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> None:
        show_settings(self.c, self.settings)
        if self._base_config is not None:
            self.c.preset.setEnabled(False)
            self.c.preset.setToolTip("Fixed by the config given to the widget.")

    def save_settings(self, *args) -> None:
        """Remember the current settings (also done on every change of a remembered control)."""
        values = read_settings(self.c)
        values["object_name"] = values["object_name"] or self.settings.object_name
        self.settings = WidgetSettings(**values, classes=self.class_names, formats=self.export_formats)
        self.settings.save(self._settings_path)

    def _connect(self) -> None:
        c = self.c
        c.run.clicked.connect(lambda: self.run())
        c.cancel.clicked.connect(self.cancel)
        c.refine.clicked.connect(lambda: self.refine())
        c.flip.clicked.connect(lambda: self.flip())
        c.delete_prompts.clicked.connect(lambda: self.delete_prompts())
        c.delete_object.clicked.connect(lambda: self.delete_object())
        c.lock_object.clicked.connect(lambda: self.lock_object())
        c.discard.clicked.connect(lambda: self.discard_corrections())
        for button, *how in ((c.umci_browse, c.umci, "UMCI checkpoint", "Checkpoints (*.pt *.pth)", False),
                             (c.clip_browse, c.clip_weights, "CLIP weights",
                              "Checkpoints (*.pt *.pth *.bin *.safetensors)", True),
                             (c.sam_browse, c.sam_weights, "SAM checkpoint", "Checkpoints (*.pth *.pt)", True)):
            button.clicked.connect(lambda *_, how=how: self._browse_weights(*how))
        for signal in (c.preset.currentTextChanged, c.device.currentTextChanged, c.backend.currentTextChanged,
                       c.umci.editingFinished, c.clip_weights.editingFinished, c.sam_weights.editingFinished):
            signal.connect(self._engine_settings_changed)
        for signal in (*change_signals(c), self.classes.changed):
            signal.connect(self.save_settings)
        self.classes.changed.connect(self._classes_changed)
        self.picker.changed.connect(lambda layer: (self.objects.refresh(), self.cues.image_changed()))

    def _browse_weights(self, edit, title: str, filters: str, folders: bool = True) -> None:
        browse_weights(self, edit, title, filters, lambda: (self._engine_settings_changed(), self.save_settings()),
                       folders)
