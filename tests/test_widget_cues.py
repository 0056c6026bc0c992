"""Issue 22 item 3: the status line tells the truth, Lock becomes Unlock, negative mode is visible.

Driven through the dock's public controls in the user's order: viewer first, the dock's viewer from the
manifest (napari's plugin proxy), then Run, then the buttons.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils.colormaps.standardize_color import transform_color  # noqa: E402

from dock_helpers import STRICT_NAPARI, WAIT_MS  # noqa: E402
from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.widget.cues import LOCK, NEGATIVE_OFF, NEGATIVE_ON, UNLOCK  # noqa: E402
from napari_clipsam.widget.layers import POINT_COLOURS  # noqa: E402

pytestmark = STRICT_NAPARI


@pytest.fixture
def dock(make_widget):
    return make_widget()


def run_on(qtbot, viewer, widget, seed=1):
    src = viewer.add_image(synthetic_image("part", "crack", size=96, seed=seed)[0], name=f"part{seed}")
    widget.select_source(src)
    widget.c.run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.startswith("Done"), widget.status
    return widget.outputs_for(src)


def seen(outputs) -> int:
    plane = np.asarray(outputs.plane(outputs.displayed_frame()))
    return len(np.unique(plane[plane > 0]))


def settle(qtbot, widget):
    loop = widget.correction_for(widget.picker.current)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not loop.busy, timeout=WAIT_MS)
    qtbot.wait(50)


def assert_colour(layer, colour):
    np.testing.assert_allclose(transform_color(layer.current_face_color)[0], transform_color(colour)[0])


def test_run_status_counts_the_objects_on_screen(qtbot, dock):
    viewer, widget = dock
    outputs = run_on(qtbot, viewer, widget)
    assert widget.status.startswith(f"Done: {seen(outputs)} object(s)"), widget.status


def test_lock_message_stays_and_the_button_unlocks(qtbot, dock):
    viewer, widget = dock
    outputs = run_on(qtbot, viewer, widget)
    ids = sorted(set(np.unique(outputs.masks.data).tolist()) - {0})
    assert ids, "the tiny engine found nothing to lock"
    assert widget.c.lock_object.text() == LOCK
    outputs.masks.selected_label = ids[0]
    widget.c.lock_object.click()
    settle(qtbot, widget)  # the lock removed the object's prompts: a refine ran, and must not talk over the lock
    assert widget.status.startswith(f"Object {ids[0]} locked ({seen(outputs)} object(s)"), widget.status
    assert ids[0] in outputs.locked
    assert widget.c.lock_object.text() == UNLOCK
    if len(ids) > 1:  # the button follows napari's label selection
        outputs.masks.selected_label = ids[1]
        assert widget.c.lock_object.text() == LOCK
        outputs.masks.selected_label = ids[0]
        assert widget.c.lock_object.text() == UNLOCK
    widget.c.lock_object.click()
    assert ids[0] not in outputs.locked
    assert widget.status.startswith(f"Object {ids[0]} unlocked"), widget.status
    assert widget.c.lock_object.text() == LOCK


def test_delete_message_counts_what_is_left(qtbot, dock):
    viewer, widget = dock
    outputs = run_on(qtbot, viewer, widget)
    ids = sorted(set(np.unique(outputs.masks.data).tolist()) - {0})
    outputs.masks.selected_label = ids[0]
    widget.c.delete_object.click()
    settle(qtbot, widget)
    assert f"{seen(outputs)} object(s) left" in widget.status, widget.status


def test_negative_mode_is_visible_on_the_layer_and_ends_with_the_image(qtbot, dock):
    viewer, widget = dock
    outputs = run_on(qtbot, viewer, widget)
    button, prompts = widget.c.negative, outputs.prompts
    assert button.text() == NEGATIVE_OFF and not button.isChecked()
    assert_colour(prompts, POINT_COLOURS["positive"])
    button.click()
    assert button.isChecked() and button.text() == NEGATIVE_ON
    assert "next click" in widget.status and "negative" in widget.status, widget.status
    assert_colour(prompts, POINT_COLOURS["negative"])
    prompts.add([[10.0, 10.0]])
    assert prompts.features["label"].astype(str).iloc[-1] == "negative"
    assert_colour(prompts, POINT_COLOURS["negative"])
    settle(qtbot, widget)
    other = viewer.add_image(synthetic_image("part", "crack", size=96, seed=2)[0], name="other")
    widget.select_source(other)
    assert not button.isChecked() and button.text() == NEGATIVE_OFF
    assert "positive again" in widget.status, widget.status
    assert str(prompts.feature_defaults["label"].iloc[0]) == "positive"
    prompts.add([[20.0, 20.0]])
    assert prompts.features["label"].astype(str).iloc[-1] == "positive"
