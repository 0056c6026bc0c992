"""Normal references in the dock: defect-free images (selected layers, a folder, or good images accepted in a
folder review) that make the engine fuse a few-shot map into the rough map (see docs/method.md, "Normal references").

The images are kept here; the engine builds its reference bank from them in the next Run's worker thread (once
per set: the bank is also cached on disk by the images' content).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QFileDialog

from .controls import Controls


class ReferencePanel(QObject):
    """Behaviour of the reference controls. ``selected_images`` returns the image layers selected in napari."""

    def __init__(self, controls: Controls, selected_images: Callable[[], list], status: Callable[[str], None]):
        super().__init__(controls.ref_layers)
        self.c, self._selected, self._status = controls, selected_images, status
        self._images: dict[str, np.ndarray] = {}  # content hash → image (duplicates count once)
        self._names: list[str] = []
        controls.ref_layers.clicked.connect(lambda: self.add_selected_layers())
        controls.ref_folder.clicked.connect(lambda: self._browse())
        controls.ref_clear.clicked.connect(lambda: self.clear())
        self._show()

    @property
    def images(self) -> list[np.ndarray]:
        return list(self._images.values())

    @property
    def key(self) -> str:
        """Identifies the current set (empty when there is none)."""
        return "|".join(sorted(self._images))

    def add(self, image: np.ndarray, name: str) -> bool:
        """Add one image (2-D or RGB(A)); False when it is already a reference."""
        image = np.asarray(image)
        digest = hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()
        if digest in self._images:
            return False
        self._images[digest] = image
        self._names.append(name)
        self._show()
        return True

    def add_selected_layers(self) -> int:
        layers = list(self._selected())
        added = 0
        for layer in layers:
            data = np.asarray(layer.data)
            stack = data.ndim == 4 or (data.ndim == 3 and not layer.rgb)
            for i, plane in enumerate(data if stack else [data]):
                added += self.add(plane, f"{layer.name}[{i}]" if stack else layer.name)
        self._status(f"{added} normal reference(s) added from the selected layers; the next Run uses "
                     f"{len(self._images)}." if layers else "Select one or more image layers of defect-free parts "
                     "first (layer list), then press the button.")
        return added

    def add_folder(self, folder: str | Path) -> int:
        from ..io.images import read_image
        from ..io.folders import DEFAULT_EXTENSIONS, find_images

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            self._status(f"{folder} is not a folder of images.")
            return 0
        added, skipped = 0, []
        for path in find_images(folder, DEFAULT_EXTENSIONS):
            try:
                added += self.add(read_image(path), path.name)
            except (OSError, ValueError) as err:
                skipped.append(f"{path.name} ({str(err).rstrip('.')})")
        unread = f" Skipped {len(skipped)} unreadable file(s): {'; '.join(skipped[:3])}" + (
            "…" if len(skipped) > 3 else ".") if skipped else ""
        self._status(f"{added} normal reference(s) added from {folder}; the next Run uses {len(self._images)}."
                     f"{unread}")
        return added

    def clear(self) -> None:
        self._images.clear()
        self._names.clear()
        self._show()
        self._status("No normal references: the next Run makes zero-shot rough maps.")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.c.ref_folder, "Folder of defect-free images")
        if folder:
            self.add_folder(folder)

    def _show(self) -> None:
        n = len(self._images)
        shown = ", ".join(self._names[:3]) + ("…" if n > 3 else "")
        self.c.ref_info.setText(f"{n} normal reference(s): {shown}" if n else "none (zero-shot)")
