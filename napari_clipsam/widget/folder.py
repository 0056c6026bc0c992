"""Folder review panel over :class:`napari_clipsam.qa.QASession`: open, run, correct, accept/reject/skip.

The current image is one Image layer, replaced (with its output layers) as you move. ClipSAM runs on it through
the widget's normal Run, so Cancel, progress and the correction loop work as usual. While you correct image
``i``, a :class:`~napari_clipsam.qa.Prefetcher` segments image ``i + 1`` in the background; moving on then
only waits for (or reuses) that result.

Keys (on the viewer): Alt+Right next, Alt+Left previous, Alt+A accept, Alt+R reject, Alt+S skip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog

from ..errors import Cancelled
from ..export import FORMATS, ExportError
from ..qa import Prefetcher, QASession
from .controls import Controls
from .labels_export import frame_provenance

KEYS = {"Alt-Right": "next_image", "Alt-Left": "previous_image", "Alt-A": "accept", "Alt-R": "reject",
        "Alt-S": "skip"}


class FolderPanel(QObject):
    """Behaviour of the Folder review tab. ``widget`` is the ClipSAMWidget that owns it."""

    def __init__(self, controls: Controls, widget):
        super().__init__(controls.qa_open)
        self.c, self.widget = controls, widget
        self.session: QASession | None = None
        self.layer = None
        self.prefetcher: Prefetcher | None = None
        self.prefetch_hits = 0  # runs that took their result from the prefetch
        self._queued = False
        c = controls
        c.qa_input_browse.clicked.connect(lambda: self._browse(c.qa_input, "Folder of images to review"))
        c.qa_output_browse.clicked.connect(lambda: self._browse(c.qa_output, "Folder for the labels"))
        c.qa_open.clicked.connect(lambda: self.open())
        c.qa_accept.clicked.connect(lambda: self.accept())
        c.qa_reject.clicked.connect(lambda: self.reject())
        c.qa_skip.clicked.connect(lambda: self.skip())
        c.qa_previous.clicked.connect(lambda: self.previous_image())
        c.qa_next.clicked.connect(lambda: self.next_image())
        for key, method in KEYS.items():
            widget.viewer.bind_key(key, self._key_handler(method), overwrite=True)
        widget.run_finished.connect(self._on_run_finished)
        self._update_labels()

    def _key_handler(self, method: str):
        def handler(viewer):
            getattr(self, method)()

        return handler

    def unbind_keys(self) -> None:
        for key in KEYS:
            self.widget.viewer.bind_key(key, None)
        self.widget.run_finished.disconnect(self._on_run_finished)
        if self.prefetcher is not None:
            self.prefetcher.cancel(wait=False)

    # ------------------------------------------------------------------ actions
    def open(self, input_dir: str | None = None, output_dir: str | None = None) -> bool:
        """Open a review of ``input_dir`` (labels to ``output_dir``), resume at the first undecided image."""
        if input_dir is not None:
            self.c.qa_input.setText(str(input_dir))
        if output_dir is not None:
            self.c.qa_output.setText(str(output_dir))
        src, dst = self.c.qa_input.text().strip(), self.c.qa_output.text().strip()
        if not src or not dst:
            self.widget.set_status("Choose the folder of images and the folder for labels first.")
            return False
        try:
            session = QASession(Path(src).expanduser(), Path(dst).expanduser())
        except (ValueError, OSError) as err:
            self.widget.set_status(f"Cannot open the review: {err}")
            return False
        self.session = session
        self.widget.save_settings()
        session.resume()
        if session.manifest_recovered is not None:
            self.widget.set_status(f"The review manifest was unreadable and was moved to "
                                   f"{session.manifest_recovered}; starting a fresh one.")
        self._show()
        return True

    def accept(self) -> bool:
        """Export the current masks (with classes, provenance and edited flag) and go to the next image."""
        if not self._ready():
            return False
        outputs = self.widget.outputs_for(self.layer)
        if self.widget.busy or outputs is None or None not in outputs.results:
            self.widget.set_status("ClipSAM has not finished on this image yet: wait for it (or Reject / Skip).")
            return False
        if outputs.masks is None:
            self.widget.set_status("The masks layer was deleted: press Run to make it again, then Accept.")
            return False
        edited = any(outputs.records.get(None, {}).get("edited", {}).values())
        try:
            report = self.session.accept(
                np.asarray(outputs.masks.data), outputs.instance_classes(), classes=self.widget.class_names,
                provenance=frame_provenance(outputs.masks.metadata, None),
                formats=self.widget.export_formats or FORMATS, overwrite=True,
                edited=edited)
        except ExportError as err:
            self.widget.set_status(f"Accept failed, nothing recorded: {err}")
            return False
        self.widget.set_status(f"Accepted {self.session.key()}: {len(report.written)} file(s) written.")
        self._advance()
        return True

    def reject(self) -> bool:
        if not self._ready():
            return False
        self.session.reject()
        self._advance()
        return True

    def skip(self) -> bool:
        if not self._ready():
            return False
        self.session.skip()
        self._advance()
        return True

    def next_image(self) -> None:
        if self._ready() and self.session.index < len(self.session) - 1:
            self.session.next()
            self._show()

    def previous_image(self) -> None:
        if self._ready() and self.session.index > 0:
            self.session.previous()
            self._show()

    def provider_for(self, layer):
        """For the widget's Run: reuse the prefetch for the review image; otherwise stop any prefetch first."""
        pre = self.prefetcher
        if pre is None:
            return None
        key = self._key(self.session.index) if self.session is not None and layer is self.layer else None

        def provide(cancelled):
            if key is None or pre.key != key:
                pre.cancel(wait=True)  # one engine job at a time
                return None
            while True:
                try:
                    result = pre.result(key, timeout=0.05)
                except TimeoutError:
                    if cancelled():
                        pre.cancel(wait=False)
                        raise Cancelled("cancelled while waiting for the prefetched result") from None
                    continue
                except Exception:  # the prefetch failed or was cancelled: segment afresh
                    return None
                if result is None:
                    return None
                self.prefetch_hits += 1
                return {None: result}

        return provide

    # ------------------------------------------------------------------ internals
    def _ready(self) -> bool:
        if self.session is None:
            self.widget.set_status("Open a folder first (Folder review tab).")
            return False
        return True

    def _browse(self, edit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self.c.qa_open, title, edit.text())
        if folder:
            edit.setText(folder)

    def _advance(self) -> None:
        s = self.session
        if s.index < len(s) - 1:
            s.next()
        else:
            undecided = s.first_undecided()
            if undecided is None:
                self._update_labels()
                self.widget.set_status(f"Review complete: every one of the {len(s)} images has a verdict.")
                return
            s.goto(undecided)
        self._show()

    def _show(self) -> None:
        """Replace the review layer with the current image and run ClipSAM on it."""
        self._update_labels()
        if self.widget.busy:  # a run on the previous image: stop it, then come back here
            self._queued = True
            self.widget.cancel()
            return
        s = self.session
        try:
            image = s.read_image()
        except (OSError, ValueError) as err:
            self.widget.set_status(f"Cannot read {s.current}: {err}. Skip or Reject it.")
            return
        self._replace_image(image)
        self.widget.select_source(self.layer)
        self.widget.run(source=self.layer, on_done=self._after_run)

    def _replace_image(self, image: np.ndarray) -> None:
        """Put the current image in the review layer: new data in the same layer (and the same output layers,
        emptied) when it fits, else a new layer. Removing napari layers is slow (a full garbage collection)."""
        s, viewer, layer = self.session, self.widget.viewer, self.layer
        name, meta = s.key(), {"clipsam_qa": str(s.current)}
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        if layer is not None and layer in viewer.layers and layer.rgb == rgb and layer.data.ndim == image.ndim:
            layer.data = image
            layer.name = name
            layer.metadata.update(meta)
            layer.reset_contrast_limits()
            self.widget.restart_outputs(layer)
            return
        if layer is not None:
            self.widget.forget(layer, remove_layers=True)
            if layer in viewer.layers:
                viewer.layers.remove(layer)
        self.layer = viewer.add_image(image, name=name, rgb=rgb, metadata=meta)

    def _after_run(self, outcome) -> None:
        if outcome.ok and not self._queued:
            self._prefetch(self.session.index + 1)

    def _on_run_finished(self, outcome) -> None:
        if self._queued:  # we cancelled a run to move on: show the image we moved to
            self._queued = False
            self._show()

    def _key(self, index: int) -> tuple:
        w = self.widget
        return (str(self.session.images[index]), w.object_name, w.thresholds)

    def _prefetch(self, index: int) -> None:
        engine = self.widget.engine
        if engine is None or self.session is None or index >= len(self.session):
            return
        if self.prefetcher is None or self.prefetcher.engine is not engine:
            if self.prefetcher is not None:
                self.prefetcher.cancel(wait=False)
            self.prefetcher = Prefetcher(engine, self.widget.object_name)
        self.prefetcher.object_name = self.widget.object_name
        session = self.session
        self.prefetcher.request(lambda: session.read_image(index), self._key(index))

    def _update_labels(self) -> None:
        s = self.session
        if s is None:
            self.c.qa_progress.setText("no folder open")
            self.c.qa_verdict.setText("")
            return
        counts = s.summary()
        self.c.qa_progress.setText(f"{s.index + 1} / {len(s)}, {counts['accepted']} accepted, "
                                   f"{counts['rejected']} rejected, {counts['skipped']} skipped")
        verdict = s.verdict()
        self.c.qa_verdict.setText(f"{s.key()}: {verdict.value if verdict is not None else 'undecided'}")
