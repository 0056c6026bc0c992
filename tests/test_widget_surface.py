"""What the dock promises napari and the person using it: napari's public API only (the plugin proxy kept,
no private access anywhere in the package), a tooltip on every control, a dock narrow enough to leave room
for the canvas, settings remembered between sessions."""
from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, refine_and_wait, run_and_wait  # noqa: E402

pytestmark = STRICT_NAPARI


# ---------------------------------------------------------------------- napari's public API only


def test_the_widget_keeps_napari_s_proxy_and_tells_layers_apart_by_equality(qtbot, make_widget, image):
    """napari gives a plugin a proxy of the viewer (public API only): the widget keeps it as given, and a layer
    reached through napari's events (the layer itself) is recognised as the proxy the widget holds."""
    viewer, widget = make_widget()
    assert widget.viewer is not viewer and widget.viewer == viewer
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    assert out.prompts is not viewer.layers[out.prompts.name] and out.prompts == viewer.layers[out.prompts.name]
    widget.c.negative.setChecked(True)
    refine_and_wait(qtbot, widget.correction_for(src), lambda: viewer.layers[out.prompts.name].add([[5.0, 5.0]]))
    assert out.prompts.features["label"].iloc[-1] == "negative"  # the edit event's layer matched the proxy
    assert out.prompts.features["source"].iloc[-1] == "user"
    viewer.layers.remove(src)  # napari's removal event: the widget forgets the image
    assert widget.outputs_for(src) is None


def test_no_private_napari_access_in_the_package():
    """No unwrapping of napari's proxy and no private attribute of napari objects anywhere in the package."""
    import re
    from pathlib import Path

    import napari_clipsam

    root = Path(napari_clipsam.__file__).parent
    private = re.compile(r"\b(?:viewer|layers?|masks|prompts|boxes|rough|source|event|window|labels)\._[a-z]\w*")
    found = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in root.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "__wrapped__" in line or private.search(line)]
    assert found == []


# ---------------------------------------------------------------------- a dock that leaves room for the canvas, and tells what each control does


def test_the_dock_is_narrow_and_buttons_show_their_keys(make_widget):
    from napari_clipsam.widget.controls import DOCK_WIDTH

    viewer, widget = make_widget()
    assert DOCK_WIDTH <= 320
    assert widget.minimumSizeHint().width() <= DOCK_WIDTH, widget.minimumSizeHint()
    assert widget.sizeHint().width() <= DOCK_WIDTH, widget.sizeHint()
    for i in range(widget.c.tabs.count()):  # every tab fits, not only the one shown
        assert widget.c.tabs.widget(i).minimumSizeHint().width() <= DOCK_WIDTH - 20, widget.c.tabs.tabText(i)
    c = widget.c
    assert (c.refine.text(), c.flip.text(), c.negative.text(), c.delete_prompts.text()) == \
        ("Refine (R)", "Flip label (F)", "Negative (N)", "Delete prompts (Del)")


def test_every_control_has_a_tooltip(make_widget):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget

    _, widget = make_widget()
    interactive = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget)
    controls = {}
    for name, value in vars(widget.c).items():
        for key, w in (value.items() if isinstance(value, dict) else [(name, value)]):
            if isinstance(w, interactive):
                controls[key] = w
    assert {"image", "object_name", "preset", "umci", "prompt_threshold", "mask_threshold", "alpha", "device",
            "run", "cancel", "refine", "export"} <= set(controls)
    assert [name for name, w in controls.items() if not w.toolTip().strip()] == []


# ---------------------------------------------------------------------- settings


def test_settings_remembered(make_widget, tmp_path, make_napari_viewer):
    viewer, widget = make_widget()
    widget.c.object_name.setText("pcb")
    widget.c.object_name.editingFinished.emit()
    widget.c.mask_threshold.setValue(0.7)
    widget.classes.add("scratch")
    widget.c.formats["yolo"].setChecked(False)
    widget.c.overwrite.setChecked(True)
    _, widget2 = make_widget(viewer=make_napari_viewer())
    assert not widget2.c.overwrite.isChecked()  # never remembered: replacing saved labels is asked for each time
    assert widget2.object_name == "machined part"  # make_widget sets it; the saved value was read before
    assert widget2.settings.object_name == "pcb"
    assert widget2.c.mask_threshold.value() == pytest.approx(0.7)
    assert widget2.class_names == ["defect", "scratch"]
    assert widget2.export_formats == ["mvtec", "tiff", "coco"]
