"""The review's crash journal in the dock: save the person's corrections as a draft, offer it back after a crash.

After ClipSAM's result for the review image is shown, every edit of its layers (a paint or erase stroke, a
prompt added, moved or deleted, a class assigned, an object locked) restarts a one-second timer; when it fires
the layers' state is written as a draft (:class:`~napari_clipsam.review.journal.DraftJournal`). A kill at any
moment therefore loses at most the last second or two of work. When the review reaches an image that has a
draft (napari crashed, or was killed, while it was being corrected), the Review tab shows a notice with
**Restore** (the draft's pixels, prompts, classes and locks replace the fresh result) and **Discard** (delete
it). Accept, Reject, Skip and Good part delete the image's draft; Next/Previous keep it.
"""
from __future__ import annotations

import logging

import numpy as np
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from ..review.journal import Draft, DraftJournal

log = logging.getLogger(__name__)
DEBOUNCE_MS = 1000


def snapshot(outputs) -> Draft | None:
    """The correctable state of an image's output layers (None without a masks layer)."""
    if outputs is None or outputs.masks is None:
        return None
    prompts, boxes = outputs.prompts, outputs.boxes
    points = np.asarray(prompts.data, np.float64).copy() if prompts is not None else np.zeros((0, 2))
    feats = prompts.features if prompts is not None else None
    labels = [str(x) for x in feats["label"]] if feats is not None and "label" in feats else []
    sources = [str(x) for x in feats["source"]] if feats is not None and "source" in feats else []
    return Draft(masks=np.asarray(outputs.masks.data, np.int32).copy(), classes=dict(outputs.instance_classes()),
                 points=points, point_labels=labels, point_sources=sources,
                 boxes=[np.asarray(b, np.float64).copy() for b in boxes.data] if boxes is not None else [],
                 locked=set(int(i) for i in outputs.locked))


class DraftKeeper(QObject):
    """Saves and offers drafts for a :class:`~napari_clipsam.widget.folder.FolderPanel` (see the module notes)."""

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        self.journal: DraftJournal | None = None
        self.baseline: Draft | None = None  # the state ClipSAM's result left (no draft while equal)
        self.saved: Draft | None = None  # what the draft file holds now
        self.offered: Draft | None = None  # a draft found on disk, waiting for Restore / Discard
        self._hooked: list = []
        self.outputs = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.flush)
        self._build_notice(panel.c)

    def _build_notice(self, c) -> None:
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.restore_button = QPushButton("Restore draft")
        self.restore_button.setToolTip("Put back the corrections saved as a draft (they replace this result).")
        self.discard_button = QPushButton("Discard draft")
        self.discard_button.setToolTip("Delete the draft and keep ClipSAM's fresh result.")
        self.restore_button.clicked.connect(lambda: self.restore())
        self.discard_button.clicked.connect(lambda: self.decline())
        self.bar = QWidget()
        row = QHBoxLayout(self.bar)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.restore_button)
        row.addWidget(self.discard_button)
        form = c.qa_open.parentWidget().layout()
        form.addRow(self.notice)
        form.addRow(self.bar)
        self._show_notice(None)

    # ------------------------------------------------------------------ review events
    def open(self, session) -> None:
        self.leave()
        self.journal = DraftJournal(session.output_dir)

    def begin(self) -> None:
        """ClipSAM's result (or the saved labels) for the current image is shown: record edits from now on, and
        offer the image's draft if it has one."""
        self.leave()
        panel = self.panel
        outputs = panel.widget.outputs_for(panel.layer) if panel.layer is not None else None
        if self.journal is None or panel.session is None or outputs is None or outputs.masks is None:
            return
        self.outputs = outputs
        self.baseline = snapshot(outputs)
        draft = self.journal.load(panel.session.stem(), panel.session.current)
        self.saved = draft
        if draft is not None and not draft.same_as(self.baseline):
            self.offered = draft
            self._show_notice(f"Unsaved corrections of {panel.session.key()} were found (napari closed or crashed "
                              f"while you corrected it): {draft.summary()}. Restore them, or discard them?")
            panel.widget.set_status(f"A draft of your corrections on {panel.session.key()} was found: press "
                                    "Restore draft (Review tab) to get them back, or Discard draft.")
        for layer in outputs.layers():
            if layer is outputs.rough:
                continue
            for name in ("data", "paint", "features"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    emitter.connect(self._edited)
                    self._hooked.append(emitter)

    def leave(self) -> None:
        """Moving away from the image (without a verdict): write any pending edit now, stop recording."""
        if self.timer.isActive():
            self.timer.stop()
            self.flush()
        self._unhook()
        self.baseline = self.saved = self.offered = None
        self.outputs = None
        self._show_notice(None)

    def discard_current(self) -> None:
        """The current image got a verdict: its draft goes."""
        self.timer.stop()
        panel = self.panel
        if self.journal is not None and panel.session is not None:
            self.journal.discard(panel.session.stem())
        self._unhook()
        self.baseline = self.saved = self.offered = None
        self.outputs = None
        self._show_notice(None)

    def untouched(self) -> bool:
        """True when the current image's layers hold exactly ClipSAM's result: no edit since it was shown (none
        pending either), no draft waiting for Restore / Discard. Compared live, so an edit undone counts as none."""
        if self.outputs is None or self.offered is not None or self.timer.isActive() or self.baseline is None:
            return False
        state = snapshot(self.outputs)
        return state is not None and state.same_as(self.baseline)

    # ------------------------------------------------------------------ the offer
    def restore(self) -> bool:
        """Put the offered draft into the layers; True when done."""
        draft, outputs = self.offered, self.outputs
        if draft is None or outputs is None or outputs.masks is None:
            return False
        if np.asarray(draft.masks).shape != tuple(outputs.full_shape):
            self.panel.widget.set_status("The draft does not fit this image (another size); it was not restored.")
            return False
        self.offered = None
        outputs = self.panel.widget.show_saved_labels(self.panel.layer, draft.masks, draft.classes)
        with outputs._writing():  # our own writes: no refine, no new stroke records
            if outputs.prompts is not None:
                outputs.prompts.data = np.asarray(draft.points).reshape(-1, outputs.prompts.ndim)
                outputs.set_point_features(draft.point_labels, draft.point_sources)
            if outputs.boxes is not None:
                outputs.boxes.data = []
                if draft.boxes:
                    outputs.boxes.add_rectangles([np.asarray(b) for b in draft.boxes])
        outputs.locked = set(draft.locked)
        for record in outputs.records.values():
            record["edited"] = {"prompts": True, "masks": True}
        self.saved = snapshot(outputs)
        self._show_notice(None)
        self.panel.widget.set_status(f"Restored your corrections on {self.panel.session.key()} "
                                     f"({draft.summary()}).")
        return True

    def decline(self) -> None:
        """Delete the offered draft; the fresh result stays."""
        if self.offered is None:
            return
        self.offered = None
        if self.journal is not None and self.panel.session is not None:
            self.journal.discard(self.panel.session.stem())
        self.saved = None
        self._show_notice(None)
        self.panel.widget.set_status("Draft discarded.")

    # ------------------------------------------------------------------ recording
    def _edited(self, event=None) -> None:
        if self.outputs is not None and self.outputs.quiet:
            return  # the dock writing the layers (a Run or re-show of ClipSAM's result), not the person
        self.timer.start()  # restarts: one write a second after the last edit

    def flush(self) -> None:
        """Write the draft now when the layers differ from ClipSAM's result (delete it when they are back)."""
        panel, outputs = self.panel, self.outputs
        if self.journal is None or panel.session is None or outputs is None or self.offered is not None:
            return  # an offered draft is kept untouched until the person answers
        if panel.widget.busy:
            self.timer.start()
            return
        state = snapshot(outputs)
        if state is None or state.same_as(self.saved):
            return
        stem = panel.session.stem()
        try:
            if state.same_as(self.baseline):
                self.journal.discard(stem)
            else:
                self.journal.save(stem, panel.session.current, state)
            self.saved = state
        except OSError as err:
            panel.widget.set_status(f"Could not save the draft of your corrections ({err}); they are only in "
                                    "napari until you Accept.")

    def _unhook(self) -> None:
        for emitter in self._hooked:
            try:
                emitter.disconnect(self._edited)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._hooked = []

    def _show_notice(self, text: str | None) -> None:
        self.notice.setText(text or "")
        self.notice.setVisible(bool(text))
        self.bar.setVisible(bool(text))
