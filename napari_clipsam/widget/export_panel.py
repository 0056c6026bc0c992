"""The Export controls: folder, formats, overwrite → :func:`napari_clipsam.export.write_export`.

The Export button writes a dataset the trainers read as it is, as ``napari-clipsam segment`` does: the labels and
the image itself (``coco/images``, ``yolo/images``), named after the source file when the layer came from one,
else after the layer, made file-safe (``metal plate`` → ``metal_plate``). A non-8-bit image is written 8-bit as
ClipSAM saw it (the layer's contrast limits); "keep 16-bit originals" also writes it as it was to ``originals/``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog

from ..export import ExportError
from ..export.stems import source_stem
from .controls import Controls
from .labels_export import export_label_image, frame_provenance, hand_verified
from .source import contrast_limits_for, read_frame


class ExportPanel(QObject):
    """Behaviour of the export controls.

    Args:
        controls: the widget's controls. current: returns the chosen image's OutputLayers (or None).
        classes: returns the user's class list. status: shows a message.
    """

    def __init__(self, controls: Controls, current: Callable[[], object], classes: Callable[[], list[str]],
                 status: Callable[[str], None], remember: Callable[[], None] | None = None):
        super().__init__(controls.export)
        self.c, self._current, self._classes, self._status = controls, current, classes, status
        self._remember = remember
        controls.export_browse.clicked.connect(self.browse)
        controls.export.clicked.connect(lambda: self.export())

    @property
    def formats(self) -> list[str]:
        return [f for f, box in self.c.formats.items() if box.isChecked()]

    @property
    def folder(self) -> str:
        return self.c.export_dir.text().strip()

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.c.export, "Export pseudo-labels to", self.folder)
        if folder:
            self.c.export_dir.setText(folder)

    def export(self) -> list | None:
        """Export the chosen image's masks (every frame with a result, for a stack). Returns the reports or None."""
        outputs = self._current()
        if outputs is None or outputs.masks is None:
            self._status("Nothing to export: run ClipSAM on this image first (or its masks layer was deleted).")
            return None
        if not self.folder:
            self._status("Choose an export folder first (Export tab).")
            return None
        if self._remember is not None:
            self._remember()
        masks = outputs.masks
        frames = sorted(f for f in set(outputs.results) | set(outputs.records) if f is not None)
        info = outputs.source_info()
        try:
            reports = export_label_image(
                Path(self.folder).expanduser(), source_stem(info["name"], info["file"]), masks.data,
                features=masks.features, classes=self._classes(),
                provenance=lambda f: frame_provenance(masks.metadata, f),
                frames=frames if outputs.stacked else None, formats=self.formats,
                overwrite=self.c.overwrite.isChecked(), image_file=info["file"],
                verified=lambda f: _verified(outputs, f), dataset_images=True,
                image=lambda f: read_frame(outputs.source, f), contrast_limits=contrast_limits_for(outputs.source),
                keep_original=self.c.keep_original.isChecked())
        except ExportError as err:
            self._status(f"Export failed: {err}")
            return None
        written = sum(len(r.written) for _, r in reports)
        skipped = sum(len(r.skipped) for _, r in reports)
        note = f", {skipped} existing file(s) kept (tick overwrite to replace them)" if skipped else ""
        checked = sum(r.n_verified for _, r in reports if r.written)
        pseudo = sum(r.n_pseudo for _, r in reports if r.written)
        objects = f"; objects written: {checked} verified by you, {pseudo} pseudo-label(s)" if written else ""
        self._status(f"Exported {len(reports)} image(s) to {self.folder}: {written} file(s) written{note}"
                     f"{objects}.")
        return reports


def _verified(outputs, frame) -> dict[int, bool]:
    """The objects of one frame the person verified in the dock (locked, or touched by hand edits)."""
    data = outputs.masks.data
    plane = data if frame is None else data[frame]
    state = outputs.frames.get(frame)
    return hand_verified(plane, None if state is None else state.written, None if state is None else state.edited,
                         outputs.locked)
