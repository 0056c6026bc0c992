"""The user's defect class list: add, remove, rename, and assign a class to a label id of the masks layer."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QListWidgetItem

from .controls import Controls

_OLD_NAME = Qt.ItemDataRole.UserRole


class ClassList(QObject):
    """Behaviour of the class list controls.

    Args:
        controls: the widget's controls (classes list and its buttons).
        names: initial class names (at least one).
        sessions: returns every OutputLayers of the widget (renames reach all of them).
        current: returns the OutputLayers of the chosen image, or None.
        status: shows a message in the widget.
    Signals:
        changed(list): the class names, after any add/remove/rename.
    """

    changed = Signal(list)

    def __init__(self, controls: Controls, names: list[str], sessions: Callable[[], list],
                 current: Callable[[], object], status: Callable[[str], None]):
        super().__init__(controls.classes)
        self.view, self._sessions, self._current, self._status = controls.classes, sessions, current, status
        for name in names or ["defect"]:
            self._append(name)
        self.view.setCurrentRow(0)
        self.view.itemChanged.connect(self._renamed)
        controls.class_add.clicked.connect(lambda: self.add())
        controls.class_remove.clicked.connect(lambda: self.remove())
        controls.class_assign.clicked.connect(lambda: self.assign_to_selected_label())

    @property
    def names(self) -> list[str]:
        return [self.view.item(i).text() for i in range(self.view.count())]

    @property
    def selected(self) -> str:
        """The class given to new instances (the selected row, else the first class)."""
        item = self.view.currentItem() or self.view.item(0)
        return item.text()

    def select(self, name: str) -> None:
        if name in self.names:
            self.view.setCurrentRow(self.names.index(name))

    def add(self, name: str | None = None) -> str:
        """Add a class (``class N`` when no name is given, then opened for editing) and select it."""
        edit = name is None
        if name is None:
            n = self.view.count() + 1
            while f"class {n}" in self.names:
                n += 1
            name = f"class {n}"
        if not name.strip() or name in self.names:
            self._status(f"Class {name!r} is empty or already in the list.")
            return name
        item = self._append(name.strip())
        self.view.setCurrentItem(item)
        if edit:
            self.view.editItem(item)
        self.changed.emit(self.names)
        return name

    def remove(self) -> None:
        """Remove the selected class (the last class cannot be removed)."""
        if self.view.count() <= 1:
            self._status("Keep at least one class.")
            return
        self.view.takeItem(self.view.currentRow())
        self.changed.emit(self.names)

    def rename(self, old: str, new: str) -> None:
        if old in self.names:
            self.view.item(self.names.index(old)).setText(new)  # goes through _renamed

    def assign_to_selected_label(self) -> None:
        """Give the selected class to the masks layer's selected label id (its label control / picker)."""
        outputs = self._current()
        if outputs is None or outputs.masks is None:
            self._status("Run ClipSAM first: there is no masks layer for this image.")
            return
        label = int(outputs.masks.selected_label)
        if label <= 0:
            self._status("Select a label id (> 0) in the masks layer first.")
            return
        outputs.set_instance_class(label, self.selected)
        self._status(f"Label {label} of {outputs.masks.name!r} is now {self.selected!r}.")

    # ------------------------------------------------------------------ internals
    def _append(self, name: str) -> QListWidgetItem:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        item.setData(_OLD_NAME, name)
        self.view.blockSignals(True)
        self.view.addItem(item)
        self.view.blockSignals(False)
        return item

    def _renamed(self, item: QListWidgetItem) -> None:
        old, new = item.data(_OLD_NAME), item.text().strip()
        if new == old:
            return
        if not new or self.names.count(new) > 1:
            self._status(f"Class name {new!r} is empty or already used; kept {old!r}.")
            self.view.blockSignals(True)
            item.setText(old)
            self.view.blockSignals(False)
            return
        self.view.blockSignals(True)
        item.setText(new)
        item.setData(_OLD_NAME, new)
        self.view.blockSignals(False)
        for outputs in self._sessions():
            if outputs.masks is not None:
                outputs.rename_class(old, new)
        self.changed.emit(self.names)
