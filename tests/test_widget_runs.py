"""Run control in the dock: Cancel, a second Run refused, an image given new data or removed while ClipSAM
runs, an engine built from the dock's settings and a weights error shown."""
from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, TAU_PROMPT, WAIT_MS, GatedEngine, run_and_wait  # noqa: E402
from napari_clipsam.widget.correction import DEBOUNCE_MS  # noqa: E402

pytestmark = STRICT_NAPARI


def test_cancel_and_second_run_refused(qtbot, make_widget, shared_engine, image):
    gated = GatedEngine(shared_engine)
    viewer, widget = make_widget(engine=gated)
    src = viewer.add_image(image, name="part")
    assert widget.run()
    assert gated.started.wait(10)
    assert not widget.c.run.isEnabled() and widget.c.cancel.isEnabled()
    assert widget.run() is False
    assert "already running" in widget.status
    widget.c.cancel.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status == "Cancelled."
    assert list(viewer.layers) == [src] and widget.outputs_for(src) is None
    assert widget.c.run.isEnabled() and not widget.c.cancel.isEnabled()
    gated.gate = False  # the widget is still usable
    run_and_wait(qtbot, widget)
    assert widget.outputs_for(src).masks is not None


@pytest.mark.parametrize("new_data", ["other shape", "same shape"])
def test_new_layer_data_during_a_run_drops_its_results(qtbot, make_widget, shared_engine, image, new_data):
    gated = GatedEngine(shared_engine)
    viewer, widget = make_widget(engine=gated)
    src = viewer.add_image(image, name="part")
    assert widget.run()
    assert gated.started.wait(10)
    src.data = image[:50, :70] if new_data == "other shape" else image[::-1].copy()
    gated.gate = False
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "given new data while ClipSAM ran" in widget.status
    assert list(viewer.layers) == [src] and widget.outputs_for(src) is None
    run_and_wait(qtbot, widget)  # a new run uses the new pixels
    assert widget.outputs_for(src).masks.data.shape == src.data.shape[:2]


def test_removing_the_image_while_refining_stops_the_loop(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out, loop = widget.outputs_for(src), widget.correction_for(src)
    out.prompts.add([20.0, 70.0])
    loop.refine_now()
    viewer.layers.remove(src)  # forgets the session and cancels its loop while the refine runs
    qtbot.waitUntil(lambda: loop.task is None, timeout=WAIT_MS)
    qtbot.wait(2 * DEBOUNCE_MS)
    assert loop.task is None and not loop.busy and "Refined" not in widget.status


@pytest.mark.slow  # loads engines from settings twice (~12 s, longer under load)
def test_engine_from_settings_and_weights_error(qtbot, make_widget, tmp_path, image):
    from napari_clipsam.testing import tiny_config

    viewer, widget = make_widget(engine=None, config=tiny_config(tmp_path / "weights"))
    src = viewer.add_image(image, name="part")
    widget.c.umci.setText(str(tmp_path / "missing_umci.pt"))
    widget.c.umci.editingFinished.emit()
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "missing_umci.pt does not exist" in widget.status and "Traceback" not in widget.status
    assert widget.engine is None and list(viewer.layers) == [src]
    widget.c.umci.setText("")
    widget.c.umci.editingFinished.emit()
    run_and_wait(qtbot, widget)  # the engine is built in the worker from the tiny local-dir config
    engine = widget.engine
    assert engine is not None and engine.config.prompt_threshold == pytest.approx(TAU_PROMPT)
    widget.c.alpha.setValue(0.3)
    assert widget.engine is engine  # thresholds need no new engine
    widget.c.device.setCurrentText("cpu")
    assert widget.engine is None  # the device does


def test_closing_the_viewer_during_a_run_cancels_it_and_drops_its_result(qtbot, make_widget, make_napari_viewer,
                                                                          shared_engine, image):
    """With another viewer open, napari deletes the dock with its viewer without closing it; the Run's result
    then arrived at deleted Qt objects ("wrapped C/C++ object of type QTimer has been deleted")."""
    gated = GatedEngine(shared_engine)
    viewer, widget = make_widget(engine=gated)
    make_napari_viewer()  # the other viewer keeps the application going
    viewer.add_image(image, name="part")
    assert widget.run()
    assert gated.started.wait(10)
    task = widget.task
    viewer.close()  # the dock's Qt objects go with the window
    gated.gate = False
    qtbot.waitUntil(lambda: not task.worker.is_running, timeout=WAIT_MS)
    qtbot.wait(200)  # a late result would be delivered now: pytest-qt fails the test on an exception in a slot
    assert task.cancelled and task.finished  # returned, delivered to nothing (its widgets are gone)


def test_a_cancel_after_the_result_was_made_is_said_so(qtbot):
    """Cancel pressed when the job had already made its result: the outcome stands and says the cancel came late,
    so the status line does not read as if Cancel was ignored."""
    import threading

    from napari_clipsam.widget.workers import Task

    made, release, got = threading.Event(), threading.Event(), []

    def job(progress, cancelled):
        made.set()
        release.wait(10)  # the result exists; a Cancel now cannot stop anything
        return "result"

    task = Task(job, None, got.append).start()
    assert made.wait(10)
    task.cancel()
    release.set()
    qtbot.waitUntil(lambda: bool(got), timeout=WAIT_MS)
    assert got[0].ok and got[0].value == "result" and got[0].cancel_late
