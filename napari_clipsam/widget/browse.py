"""The weights fields' *…* buttons: choose a checkpoint file, or with Shift held a ``local-dir`` folder."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QFileDialog, QLineEdit, QWidget


def browse_weights(parent: QWidget, edit: QLineEdit, title: str, filters: str, changed: Callable[[], None],
                   folders: bool = True) -> None:
    """Choose a weights file for ``edit`` (with Shift held and ``folders``: a folder); ``changed()`` after."""
    if folders and QApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier:
        path = QFileDialog.getExistingDirectory(parent, title + " (local-dir folder)", edit.text())
    else:
        path, _ = QFileDialog.getOpenFileName(parent, title, edit.text(), filters)
    if path:
        edit.setText(path)
        changed()
