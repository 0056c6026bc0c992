"""The object table: every instance of the shown frame with its class, and masks coloured by class.

Clicking a row selects that label in the masks layer (so Delete/Lock object and the paint tools act on it);
choosing a class in the row's menu assigns it. With *colour by class* the masks layer shows each instance in its
class's colour instead of one colour per id.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import QObject
from qtpy.QtWidgets import QComboBox, QTableWidgetItem

from .controls import Controls

PALETTE = ("#ff4d4d", "#4da6ff", "#ffd11a", "#33cc66", "#cc66ff", "#ff9933", "#33cccc", "#ff66b3", "#99cc00",
           "#c0c0c0")
"""Class colours, in class-list order (repeating after ten classes)."""


class InstanceTable(QObject):
    """Behaviour of the object table and the colour-by-class switch.

    Args:
        controls: the widget's controls. current: returns the chosen image's OutputLayers (or None).
        classes: returns the class names. status: shows a message.
    """

    def __init__(self, controls: Controls, current: Callable[[], object], classes: Callable[[], list[str]],
                 status: Callable[[str], None]):
        super().__init__(controls.objects)
        self.c, self._current, self._classes, self._status = controls, current, classes, status
        self.table = controls.objects
        self.table.itemSelectionChanged.connect(self._selected)
        controls.colour_by_class.toggled.connect(lambda _: self.refresh())

    def refresh(self) -> None:
        """Rebuild the rows from the shown frame's masks (cheap: one pass over one frame)."""
        outputs = self._current()
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        if outputs is None or outputs.masks is None:
            self.table.blockSignals(False)
            return
        plane = np.asarray(outputs.plane(outputs.displayed_frame()))
        ids, counts = np.unique(plane[plane > 0], return_counts=True)
        table = outputs.instance_classes()
        names = self._classes()
        for row, (i, n) in enumerate(zip(ids.tolist(), counts.tolist())):
            self.table.insertRow(row)
            self.table.setItem(row, 0, QTableWidgetItem(str(i)))
            self.table.setItem(row, 1, QTableWidgetItem(f"{n} px" + (", locked" if i in outputs.locked else "")))
            combo = QComboBox()
            combo.addItems(list(dict.fromkeys([*names, table.get(i, names[0])])))
            combo.setCurrentText(table.get(i, names[0]))
            combo.currentTextChanged.connect(lambda name, i=i: self.assign(i, name))
            self.table.setCellWidget(row, 2, combo)
        self.table.blockSignals(False)
        self.recolour()

    def assign(self, instance_id: int, name: str) -> None:
        outputs = self._current()
        if outputs is None or outputs.masks is None:
            return
        outputs.set_instance_class(instance_id, name)
        self._status(f"Object {instance_id} is now {name!r}.")
        self.recolour()

    def recolour(self) -> None:
        """Colour the masks by class (when switched on) or go back to napari's colours per id."""
        from napari.utils.colormaps import DirectLabelColormap, label_colormap

        outputs = self._current()
        if outputs is None or outputs.masks is None:
            return
        masks = outputs.masks
        if not self.c.colour_by_class.isChecked():
            if isinstance(masks.colormap, DirectLabelColormap):
                masks.colormap = label_colormap()
            return
        names = self._classes()
        colour = {n: PALETTE[k % len(PALETTE)] for k, n in enumerate(names)}
        mapping = {None: "transparent", 0: "transparent"}
        for i, name in outputs.instance_classes().items():
            mapping[int(i)] = colour.get(name, PALETTE[-1])
        masks.colormap = DirectLabelColormap(color_dict=mapping)

    def _selected(self) -> None:
        outputs = self._current()
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if outputs is None or outputs.masks is None or not rows:
            return
        item = self.table.item(rows[0].row(), 0)
        if item is not None:
            outputs.masks.selected_label = int(item.text())
