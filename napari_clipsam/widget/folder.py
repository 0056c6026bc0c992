"""Folder review panel over :class:`napari_clipsam.review.QASession`: open, run, correct, accept/reject/skip.

The current image is shown in one Image layer per kind of image (RGB / gray, 2-D / stack): new data in the same
layers as you move, the layer of another kind hidden, never removed (:mod:`.review_layers` says why). ClipSAM runs on it through
the widget's normal Run, so Cancel, progress and the correction loop work as usual. While you correct image
``i``, a :class:`~napari_clipsam.review.Prefetcher` segments image ``i + 1`` in the background; moving on then
only waits for (or reuses) that result.

Keys (Alt+A accept, Alt+R reject, Alt+D skip, Alt+G good part, Alt+N next flagged, Alt+arrows) are bound on the
viewer only while a review is open: :mod:`.review_keys`.

Next, Previous and the move after a verdict follow the review order of :mod:`.folder_order` (worst first once
the folder is scored, or file order); the table there opens any image.

Going back to an accepted image shows the labels saved for it (no new run); Run re-segments it with the saved
objects kept as corrections. An image that cannot be read clears the review layers and disables Accept. A
multi-frame image (an N×H×W TIFF) is segmented and accepted frame by frame (``<stem>_f000``...).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog

from ..errors import Cancelled
from ..export import FORMATS, ExportError
from ..review import Prefetcher, QASession
from .controls import Controls
from .folder_order import ReviewOrdering
from .labels_export import frame_provenance
from .review_drafts import DraftKeeper
from .review_keys import ReviewKeys
from .review_layers import ReviewLayers
from .source import frame_count
from .workers import threshold_settings

log = logging.getLogger(__name__)


class ReviewHost(Protocol):
    """All the review uses of the dock that owns it (:class:`ClipSAMWidget` implements it): the viewer, the
    status line, Run on a layer, that layer's outputs, and what a Run / an export / a good part needs."""

    viewer: Any
    run_finished: Any  # Qt signal(Outcome), emitted after every Run
    busy: bool
    status: str  # the status line's text

    def set_status(self, text: str) -> None: ...
    def run(self, source=None, *, precomputed=None, on_done=None, all_frames: bool | None = None) -> bool: ...
    def cancel(self) -> None: ...
    def outputs_for(self, layer): ...
    def select_source(self, layer) -> None: ...
    def restart_outputs(self, source) -> None: ...
    def correction_for(self, layer): ...
    def show_saved_labels(self, source, labels, classes: dict[int, str]): ...
    def forget(self, source, remove_layers: bool = False) -> None: ...
    def save_settings(self, *args) -> None: ...
    def run_inputs(self) -> tuple[Any, str, tuple[float, float, float]]:
        """(engine or None, object name, (τ_prompt, τ_mask, α)) a Run would use now."""
    def export_options(self) -> tuple[list[str], list[str]]:
        """(class names, export formats) chosen in the dock."""
    def add_references(self, images, name: str) -> tuple[int, int]:
        """Add defect-free images as normal references: (added, references in all)."""


class FolderPanel(QObject):
    """Behaviour of the Review tab, driving its :class:`ReviewHost` (the dock)."""

    def __init__(self, controls: Controls, widget: ReviewHost):
        super().__init__(controls.qa_open)
        self.c, self.widget = controls, widget
        self.session: QASession | None = None
        self.layers = ReviewLayers(widget)  # one image layer per kind, hidden when not in use
        self.layer = None
        self.prefetcher: Prefetcher | None = None
        self.prefetch_hits = 0  # runs that took their result from the prefetch
        self._queued = False
        self.keys = ReviewKeys(widget, self)
        self._image_ok = False
        self._complete = False
        c = controls
        c.qa_input_browse.clicked.connect(lambda: self._browse(c.qa_input, "Folder of images to review"))
        c.qa_output_browse.clicked.connect(lambda: self._browse(c.qa_output, "Folder for the labels"))
        c.qa_open.clicked.connect(lambda: self.open())
        c.qa_accept.clicked.connect(lambda: self.accept())
        c.qa_reject.clicked.connect(lambda: self.reject())
        c.qa_skip.clicked.connect(lambda: self.skip())
        c.qa_previous.clicked.connect(lambda: self.previous_image())
        c.qa_next.clicked.connect(lambda: self.next_image())
        c.qa_close.clicked.connect(lambda: self.close())
        c.qa_good.clicked.connect(lambda: self.accept_as_reference())
        widget.run_finished.connect(self._on_run_finished)
        self.drafts = DraftKeeper(self)  # crash journal
        self.ordering = ReviewOrdering(self)  # worst first, the folder table
        self._last = ""  # what the last verdict did, shown under the current image's verdict
        self._update_labels()

    def close(self) -> None:
        """Close the review: keys unbound, prefetch stopped; verdicts and labels stay on disk."""
        self.keys.unbind()
        self.drafts.leave()
        self.ordering.close()
        if self.prefetcher is not None:
            self.prefetcher.cancel(wait=False)
            self.prefetcher = None
        if self.session is not None:
            self.widget.set_status(f"Review closed: its verdicts and labels stay in {self.session.output_dir}; "
                                   "Open resumes it.")
        self.session = None
        self._image_ok = self._complete = False
        self._update_labels()

    def disconnect(self) -> None:
        """The widget is closing: close the review and stop listening to it."""
        self.close()
        self.widget.run_finished.disconnect(self._on_run_finished)

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
        self.drafts.open(session)
        self._complete, self._last = False, ""
        self.keys.bind()
        self.widget.save_settings()
        if self.ordering.open(session):  # scores kept from last time: worst first at once
            self.ordering.order.resume()
        else:
            session.resume()
        if session.manifest_recovered is not None:
            self.widget.set_status(f"The review manifest was unreadable and was moved to "
                                   f"{session.manifest_recovered}; starting a fresh one.")
        self._show()
        return True

    def accept(self) -> bool:
        """Export the current masks (with classes, provenance and edited flag) and go to the next image.

        When labels were saved for this image before and differ from these, they are replaced only with
        *overwrite* ticked (Export tab); the status line says which happened.
        """
        if not self._can_decide():
            return False
        if not self._image_ok:
            self.widget.set_status(f"{self.session.key()} could not be read: there is nothing to accept. "
                                   "Reject or Skip it.")
            return False
        outputs = self.widget.outputs_for(self.layer)
        if outputs is None and not self.widget.busy and not self.c.qa_accept.isEnabled():
            self.widget.set_status(f"ClipSAM has no result for {self.session.key()} (its Run failed or was "
                                   "cancelled): press Run to try again, or Reject / Skip it.")
            return False
        if self.widget.busy or outputs is None:
            self.widget.set_status("ClipSAM has not finished on this image yet: wait for it (or Reject / Skip).")
            return False
        if outputs.masks is None:
            self.widget.set_status("The masks layer was deleted: press Run to make it again, then Accept.")
            return False
        if not self._has_result(outputs):
            self.widget.set_status(f"ClipSAM has no result for {self.session.key()} (its Run failed or was "
                                   "cancelled): press Run to try again, or Reject / Skip it.")
            return False
        data = np.asarray(outputs.masks.data)
        classes = outputs.instance_classes()
        saved = self.session.saved_labels(frames=outputs.n_frames)
        differs = saved is not None and not (np.array_equal(saved[0], data) and saved[1] == classes)
        if differs and not self.c.overwrite.isChecked():
            self.widget.set_status(f"{self.session.key()} already has saved labels that differ from these: tick "
                                   "'overwrite existing files' (Export tab) to replace them, or move on to "
                                   "keep them.")
            return False
        edited = any(any(r.get("edited", {}).values()) for r in outputs.records.values()) or saved is not None
        frames = None if outputs.n_frames is None else range(outputs.n_frames)
        class_names, formats = self.widget.export_options()
        try:
            report = self.session.accept(
                data, classes, classes=class_names,
                provenance=frame_provenance(outputs.masks.metadata, None if frames is None else 0),
                formats=formats or FORMATS, overwrite=True, edited=edited,
                multi_frame=outputs.stacked)
        except ExportError as err:
            self.widget.set_status(f"Accept failed, nothing recorded: {err}")
            return False
        self.drafts.discard_current()
        note = " (replaced the labels saved before)" if differs else ""
        self._decided(f"Accepted {self.session.key()}: {len(report.written)} file(s) written{note}; "
                      f"{report.n_verified} object(s) recorded as verified by you.")
        self._advance()
        return True

    def accept_as_reference(self) -> bool:
        """A good part: accept the current image with no objects and add it to the widget's normal references."""
        if not self._can_decide() or not self._image_ok:
            return False
        outputs = self.widget.outputs_for(self.layer)
        if outputs is not None and outputs.masks is not None and np.asarray(outputs.masks.data).any():
            self.widget.set_status("This image has objects: delete them first (it must be a defect-free part), "
                                   "or Accept it as it is.")
            return False
        data = np.asarray(self.layer.data)
        name = self.session.key()
        frames = data if outputs is not None and outputs.stacked else [data]
        added, total = self.widget.add_references(frames, name)  # before the next image runs
        if not self.accept():
            return False
        self._decided(f"{name} accepted as a good part and added to the normal references ({added} image(s); "
                      f"{total} in all).")
        return True

    def reject(self) -> bool:
        """Record *rejected* (nothing written) and go to the next image."""
        return self._decide(lambda: self.session.reject(), "Rejected")

    def skip(self) -> bool:
        """Leave the image undecided for now (*skipped*) and go to the next image."""
        return self._decide(lambda: self.session.skip(), "Skipped")

    def _decide(self, record, verb: str) -> bool:
        if not self._can_decide():
            return False
        record()
        self.drafts.discard_current()
        self._decided(f"{verb} {self.session.key()}.")
        self._advance()
        return True

    def _decided(self, text: str) -> None:
        """Say what a verdict did, on the status line and (kept while the next image runs) in the tab."""
        self._last = text
        self.widget.set_status(text)
        self._update_labels()

    def next_image(self) -> None:
        """The next image in the review order (no verdict change)."""
        if self._ready() and self.ordering.step(True):
            self._complete = False
            self._show()

    def previous_image(self) -> None:
        if self._ready() and self.ordering.step(False):
            self._complete = False
            self._show()

    def goto(self, index: int) -> None:
        """Open the image at session position ``index`` (a click in the folder table)."""
        if self._ready() and 0 <= index < len(self.session) and index != self.session.index:
            self.session.goto(index)
            self._complete = False
            self._show()

    def next_flagged(self) -> None:
        """Alt+N: the next image that needs a look (flagged), or else the next undecided one."""
        if not self._ready():
            return
        index = self.ordering.next_flagged()
        if index is None:
            self.widget.set_status("No other image is flagged or undecided.")
            return
        self.goto(index)

    def refresh(self) -> None:
        """Verdicts or scores changed: update the position line and the folder table."""
        self._update_labels()

    def run_options(self, layer, precomputed=None) -> dict:
        """The review's part in a Run of ``layer``: where its result may come from (see :meth:`provider_for`) and,
        for the review image segmented before the folder is scored, ``keep_patch_tokens`` (the scoring that
        follows then finds this image's CLIP features in memory instead of running CLIP on it again)."""
        first = (self.session is not None and layer == self.layer and frame_count(layer) is None
                 and self.ordering.scoring is None and self.ordering.needs_scoring)
        return {"precomputed": precomputed or self.provider_for(layer),
                "extra_settings": {"keep_patch_tokens": True} if first else None}

    def provider_for(self, layer):
        """For the widget's Run: reuse the prefetch for the review image; otherwise stop any prefetch first."""
        pre, ordering = self.prefetcher, self.ordering
        if pre is None and not ordering._running:
            return None
        key = self.key_for(self.session.index) if self.session is not None and layer == self.layer \
            and frame_count(layer) is None else None  # the prefetch segments single images only
        engine = self.widget.run_inputs()[0]
        session, index = self.session, None if self.session is None else self.session.index

        def read_image():
            return session.read_image(index)

        def provide(cancelled):
            ordering.wait_for_scoring(cancelled)  # one engine job at a time
            scored = None if key is None else ordering.scored_result(key, engine, read_image)
            if scored is not None:
                self.prefetch_hits += 1
                return {None: scored}
            if pre is None:
                return None
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
                except Cancelled:  # the prefetch was cancelled: segment afresh
                    return None
                except Exception:  # the prefetch failed: say so (with its traceback in the log), segment afresh
                    log.warning("The background segmentation of %s failed; segmenting it again now.", key[0],
                                exc_info=True)
                    return None
                if result is None:
                    return None
                self.prefetch_hits += 1
                return {None: result}

        return provide

    # ------------------------------------------------------------------ internals
    def _ready(self) -> bool:
        if self.session is None:
            self.widget.set_status("Open a folder first (Review tab).")
            return False
        return True

    def _can_decide(self) -> bool:
        if not self._ready():
            return False
        if self._complete:
            self.widget.set_status("Review complete: every image has a verdict. Go back (◀) to an image to "
                                   "change its verdict.")
            return False
        return True

    def _browse(self, edit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self.c.qa_open, title, edit.text())
        if folder:
            edit.setText(folder)

    def _advance(self) -> None:
        """After a verdict: worst first (once scored), the worst undecided image left; in file order, the next
        image (after the last one, the first undecided)."""
        s = self.session
        if self.ordering.worst_first_active():
            target = self.ordering.first_undecided()
        elif self.ordering.step(True):
            target = s.index
        else:
            target = self.ordering.first_undecided()
        if target is None:
            self._complete = True
            self._update_labels()
            self.widget.set_status(f"Review complete: every one of the {len(s)} images has a verdict.")
            return
        s.goto(target)
        self._show()

    def _show(self) -> None:
        """Replace the review layer with the current image; show its saved labels, or run ClipSAM on it."""
        self._update_labels()
        self.drafts.leave()
        if self.widget.busy:  # a run on the previous image: stop it, then come back here
            self._queued = True
            self.widget.cancel()
            return
        s = self.session
        try:
            image = s.read_image()
        except (OSError, ValueError) as err:
            self._clear_review_layers()
            self._set_image_ok(False)
            self.widget.set_status(f"Cannot read {s.current}: {str(err).rstrip('.')}. Skip or Reject it.")
            return
        self._set_image_ok(True)
        self._replace_image(image)
        self.widget.select_source(self.layer)
        saved = s.saved_labels(frames=frame_count(self.layer))
        if saved is not None:
            self.widget.show_saved_labels(self.layer, *saved)
            self.widget.set_status(f"{s.key()} was accepted: showing the labels saved for it. Accept again to keep "
                                   "them, or Run to re-segment (the saved objects are kept as corrections).")
            self.drafts.begin()
            if not self.ordering.start_scoring():
                self._prefetch(self.ordering.next_index())
            return
        self.widget.run(source=self.layer, on_done=self.after_run, all_frames=True)

    def _set_image_ok(self, ok: bool) -> None:
        self._image_ok = ok
        self.c.qa_accept.setEnabled(ok)

    def _clear_review_layers(self) -> None:
        """No image to show (it could not be read): hide the review layer (see :mod:`.review_layers`)."""
        self.layers.hide()
        self.layer = None

    def _replace_image(self, image: np.ndarray) -> None:
        """Put the current image in the review layer of its kind (see :mod:`.review_layers`)."""
        s = self.session
        self.layer = self.layers.show(image, s.key(), {"clipsam_qa": str(s.current)})

    @staticmethod
    def _has_result(outputs) -> bool:
        """True when every frame of the masks layer holds a ClipSAM result or saved labels (not only the
        emptied layer of a failed or cancelled Run)."""
        frames = [None] if outputs.n_frames is None else range(outputs.n_frames)
        return all(f in outputs.results or f in outputs.frames for f in frames)

    def _sync_accept(self) -> None:
        outputs = self.widget.outputs_for(self.layer) if self.layer is not None else None
        ok = self._image_ok and outputs is not None and self._has_result(outputs)
        self.c.qa_accept.setEnabled(ok)

    def after_run(self, outcome) -> None:
        if self._queued or self.session is None:
            return
        if outcome.ok:
            self.refresh()  # the table's object count is the shown result's now (a re-shown image's too)
            self.drafts.begin()
            if not self.ordering.start_scoring():  # the folder is scored once, after the first result
                self._prefetch(self.ordering.next_index())
        else:  # nothing to accept: say so after the error the dock reported
            self.c.qa_accept.setEnabled(False)
            self.widget.set_status(f"{self.widget.status.rstrip('.')} — Accept is off for {self.session.key()}: "
                                   "press Run to try again, or Reject / Skip it.")

    def _on_run_finished(self, outcome) -> None:
        if self._queued:  # we cancelled a run to move on: show the image we moved to
            self._queued = False
            self._show()
        elif self.session is not None:
            self._sync_accept()

    def key_for(self, index: int) -> tuple:
        _, object_name, thresholds = self.widget.run_inputs()
        return (str(self.session.images[index]), object_name, thresholds)

    def _prefetch(self, index: int | None) -> None:
        engine, object_name, thresholds = self.widget.run_inputs()
        if engine is None or self.session is None or index is None or index >= len(self.session):
            return
        if self.ordering.has_scored(self.key_for(index), engine):
            return  # the folder's mutual map answers it
        if self.prefetcher is None or self.prefetcher.engine is not engine:
            if self.prefetcher is not None:
                self.prefetcher.cancel(wait=False)
            self.prefetcher = Prefetcher(engine, object_name)
        self.prefetcher.object_name = object_name
        self.prefetcher.settings = threshold_settings(*thresholds)
        session = self.session
        self.prefetcher.request(lambda: session.read_image(index), self.key_for(index))

    def _update_labels(self) -> None:
        s = self.session
        if s is None:
            self.c.qa_progress.setText("no folder open")
            self.c.qa_verdict.setText("")
            self.ordering.refresh()
            return
        counts = s.summary()
        order = self.ordering.order
        position = s.index if order is None else order.position
        self.ordering.refresh()
        self.c.qa_progress.setText(f"{position + 1} / {len(s)}, {counts['accepted']} accepted, "
                                   f"{counts['rejected']} rejected, {counts['skipped']} skipped")
        verdict = s.verdict()
        self.c.qa_verdict.setText(f"{s.key()}: {verdict.value if verdict is not None else 'undecided'}"
                                  + (f"\nLast: {self._last}" if self._last else ""))
