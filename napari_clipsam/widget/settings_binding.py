"""One table between the remembered settings (:class:`.settings.WidgetSettings`) and the dock's controls.

Each remembered field names the control that shows it; reading and writing go by the control's kind (line edit:
text, combo box: current text, spin box: value, check box: checked). Classes and formats are lists and are
handled by their own panels. A few remembered controls are built by a panel after the dock's controls
(:data:`PANEL_CONTROLS`, e.g. the folder table's *File order*): they are found by their Qt object name in the
dock's tabs, and the panel shows their remembered value when it builds them (the dock's settings are shown
before the panels exist).
"""
from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QWidget

from .controls import Controls

CONTROL_OF = {  # WidgetSettings field → Controls attribute
    "object_name": "object_name", "preset": "preset", "device": "device", "backend": "backend",
    "umci_weights": "umci", "clip_weights": "clip_weights", "sam_weights": "sam_weights",
    "prompt_threshold": "prompt_threshold", "mask_threshold": "mask_threshold", "alpha": "alpha",
    "all_frames": "all_frames", "export_dir": "export_dir",
    "qa_input": "qa_input", "qa_output": "qa_output", "aligned_parts": "aligned",
}
PANEL_CONTROLS = {"qa_file_order": "qa_file_order"}  # WidgetSettings field → object name of a panel's control


def panel_controls(controls: Controls) -> dict:
    """WidgetSettings field → the panel-built control that shows it, for those built by now."""
    found = {field: controls.tabs.findChild(QWidget, name) for field, name in PANEL_CONTROLS.items()}
    return {field: w for field, w in found.items() if w is not None}


def read_control(widget):
    if isinstance(widget, QLineEdit):
        return widget.text().strip()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QDoubleSpinBox):
        return widget.value()
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    raise TypeError(f"no settings binding for {type(widget).__name__}")


def write_control(widget, value) -> None:
    if isinstance(widget, QLineEdit):
        widget.setText(value)
    elif isinstance(widget, QComboBox):
        widget.setCurrentText(value)
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(value)
    elif isinstance(widget, QCheckBox):
        widget.setChecked(value)
    else:
        raise TypeError(f"no settings binding for {type(widget).__name__}")


def show_settings(controls: Controls, settings) -> None:
    """Put remembered ``settings`` into the controls."""
    for field, name in CONTROL_OF.items():
        write_control(getattr(controls, name), getattr(settings, field))
    for field, w in panel_controls(controls).items():
        write_control(w, getattr(settings, field))
    for name, box in controls.formats.items():
        box.setChecked(name in settings.formats)


def read_settings(controls: Controls) -> dict:
    """The remembered fields as the controls show them now (without classes and formats)."""
    values = {field: read_control(getattr(controls, name)) for field, name in CONTROL_OF.items()}
    return values | {field: read_control(w) for field, w in panel_controls(controls).items()}


def change_signals(controls: Controls) -> list:
    """The signals that mean "a remembered control changed"."""
    out = []
    for w in [getattr(controls, name) for name in CONTROL_OF.values()] + list(panel_controls(controls).values()):
        out.append(w.editingFinished if isinstance(w, QLineEdit) else w.currentTextChanged
                   if isinstance(w, QComboBox) else w.valueChanged if isinstance(w, QDoubleSpinBox) else w.toggled)
    return out + [box.toggled for box in controls.formats.values()]
