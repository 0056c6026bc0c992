"""What the dock shows about modes that change what a click or a button does.

- **Negative mode** (button *Negative (N)*): the button is checked and red, its text says the mode is on, and
  the prompts layer's current face colour (napari's layer controls) is the negative points' colour, so the
  person sees that the next click adds a background point. Choosing another image turns the mode off again
  (the status line says so), unless *pin* is held by the caller.
- **Lock / Unlock**: the object button reads *Unlock object* while the label selected in the masks layer is a
  locked object, *Lock object* otherwise; it follows napari's label selection and every change of the objects.
"""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject

from .controls import Controls
from .layers import POINT_COLOURS

NEGATIVE_STYLE = "QPushButton:checked { background-color: #c8102e; color: white; font-weight: bold; }"
NEGATIVE_ON, NEGATIVE_OFF = "Negative ON (N)", "Negative (N)"
LOCK, UNLOCK = "Lock object", "Unlock object"


class ModeCues(QObject):
    """Keeps the negative-mode and lock/unlock cues in step with the state they show.

    Args:
        controls: the widget's controls. sessions: returns every OutputLayers. current: the chosen image's
            OutputLayers (or None). status: shows a message.
    """

    def __init__(self, controls: Controls, sessions: Callable[[], list], current: Callable[[], object],
                 status: Callable[[str], None]):
        super().__init__(controls.negative)
        self.c, self._sessions, self._current, self._status = controls, sessions, current, status
        self._hooked: list = []  # masks and prompts layers whose events reach this object
        controls.negative.setStyleSheet(NEGATIVE_STYLE)
        controls.negative.toggled.connect(self.set_negative)
        self.pinned = False

    @property
    def label(self) -> str:
        return "negative" if self.c.negative.isChecked() else "positive"

    def set_negative(self, negative: bool) -> None:
        """New points are negative (True) or positive (False) on every image's prompts layer."""
        if self.c.negative.isChecked() != negative:
            self.c.negative.setChecked(negative)  # toggled → comes back here
            return
        self.c.negative.setText(NEGATIVE_ON if negative else NEGATIVE_OFF)
        for outputs in self._sessions():
            self.apply(outputs)
        self._status("Negative mode ON: the next click on the prompts layer adds a negative (background) point "
                     "(red). N or the button switches back." if negative else
                     "Positive mode: the next click on the prompts layer adds a positive (defect) point (green).")

    def apply(self, outputs) -> None:
        """Give ``outputs`` the current mode: its new points' label and its prompts layer's current colour."""
        outputs.new_point_label = self.label
        layer = outputs.prompts
        if layer is None:
            return
        if not any(layer == x for x in self._hooked):
            layer.events.data.connect(lambda event, o=outputs: self._show_default(o))
            self._hooked.append(layer)
        self._show_default(outputs)

    def _show_default(self, outputs) -> None:
        layer = outputs.prompts
        if layer is not None and "label" in layer.features and \
                str(layer.feature_defaults["label"].iloc[0]) != self.label:
            layer.feature_defaults = {**{k: layer.feature_defaults[k].iloc[0] for k in layer.feature_defaults},
                                      "label": self.label}
        if layer is not None and not layer.selected_data:  # with points selected this setter would recolour them
            layer.current_face_color = POINT_COLOURS[self.label]  # the colour napari's layer controls show

    def image_changed(self) -> None:
        """Another image was chosen: negative mode ends there (unless pinned); the lock button follows."""
        if self.c.negative.isChecked() and not self.pinned:
            self.set_negative(False)
            self._status("Another image: new points are positive again (press N for negative points).")
        self.update_lock()

    def update_lock(self, *args) -> None:
        """*Unlock object* when the selected label is a locked object of the chosen image, else *Lock object*."""
        outputs = self._current()
        masks = getattr(outputs, "masks", None)
        if masks is not None and not any(masks == x for x in self._hooked):
            masks.events.selected_label.connect(self.update_lock)
            self._hooked.append(masks)
        locked = masks is not None and int(masks.selected_label) in outputs.locked
        self.c.lock_object.setText(UNLOCK if locked else LOCK)

    def forget(self, layer) -> None:
        self._hooked = [x for x in self._hooked if not (x == layer)]
