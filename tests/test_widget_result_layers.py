"""The end of a Run on a new image: its four result layers are added one per turn of Qt's event loop (hidden,
then shown), so the window draws and answers between them (issue 22: napari's layer add is ~0.1–0.3 s each with
software OpenGL); the dock stays busy until the results are in them, and what happens meanwhile is handled."""
from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, WAIT_MS, run_and_wait  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

pytestmark = STRICT_NAPARI


class TurnCounter:
    """Counts turns of the event loop: a repeating zero-interval timer fires once per turn."""

    def __init__(self):
        self.turns = 0
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self):
        self.turns += 1


def test_new_result_layers_come_one_per_event_loop_turn(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    counter, seen = TurnCounter(), []

    def inserted(event):
        layer = event.value
        offered = widget.c.cancel.isEnabled() or "Cancel stops it" in widget.status  # read before run() below
        seen.append((layer.name, counter.turns, layer.visible, widget.busy, widget.run(), offered))

    viewer.layers.events.inserted.connect(inserted)
    shown = []
    widget.run_finished.connect(lambda outcome: shown.append(widget.busy))
    run_and_wait(qtbot, widget)
    counter.timer.stop()
    names = [s[0] for s in seen]
    assert names == ["part rough map", "part masks", "part boxes", "part prompts"]
    turns = [s[1] for s in seen]
    assert all(b > a for a, b in zip(turns, turns[1:])), seen  # each add in a turn of its own
    assert not any(s[2] for s in seen)  # added hidden (their first draw is a later turn's)
    assert all(s[3] for s in seen) and not any(s[4] for s in seen)  # busy meanwhile: a second Run refused
    assert not any(s[5] for s in seen)  # nothing is left to cancel: the button is off, the status does not offer it
    assert "already running" not in widget.status and "Done" in widget.status
    out = widget.outputs_for(src)
    assert all(layer.visible for layer in out.layers()) and len(out.layers()) == 4
    assert [x.name for x in viewer.layers] == ["part", *names]  # napari's order: prompts on top
    assert out.masks.data.any() and len(out.prompts.data) > 0  # the results are in them
    assert shown == [False]  # run_finished after the results are shown, once
    # a second Run on the same image reuses the layers: no add, the results written at once
    before = [id(x) for x in out.layers()]
    run_and_wait(qtbot, widget)
    assert [id(x) for x in out.layers()] == before and len(seen) == 4


def test_image_removed_while_its_layers_are_added(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")

    def inserted(event):
        if event.value.name == "part masks" and src in viewer.layers:
            viewer.layers.remove(src)  # the person deletes the image between two of the adds

    viewer.layers.events.inserted.connect(inserted)
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "was removed while ClipSAM ran" in widget.status
    assert widget.outputs_for(src) is None and widget.c.run.isEnabled()


def test_a_result_layer_deleted_while_the_others_are_added(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")

    def inserted(event):
        if event.value.name == "part boxes":
            viewer.layers.remove("part rough map")

    viewer.layers.events.inserted.connect(inserted)
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    assert out.rough is not None and out.rough in viewer.layers and out.rough.visible  # made again for the results
    assert out.rough.data.max() > 0 and out.masks.data.any()


def test_dock_closed_while_the_layers_are_added(qtbot, make_widget, image):
    viewer, widget = make_widget()
    viewer.add_image(image, name="part")
    done = []
    widget.run_finished.connect(done.append)

    def inserted(event):
        if event.value.name == "part rough map":
            widget.close()  # the person closes the dock between two of the adds

    viewer.layers.events.inserted.connect(inserted)
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    qtbot.wait(100)
    assert [x.name for x in viewer.layers] == ["part", "part rough map"] and not done  # nothing more added
