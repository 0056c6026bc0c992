"""The dock's Run and its correction loop, under Xvfb with a tiny random-weight engine injected (no downloads):
the layers a Run makes, reruns, prompts edited by hand, stacks. Run control is in test_widget_runs.py, the
folder review in test_widget_review.py, exports in test_widget_export.py, napari's API and the dock's look in
test_widget_surface.py.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Image, Labels, Points, Shapes  # noqa: E402

from dock_helpers import STRICT_NAPARI, WAIT_MS, refine_and_wait, run_and_wait  # noqa: E402
from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402

pytestmark = STRICT_NAPARI


# ---------------------------------------------------------------------- run and layers


def test_run_makes_four_layers(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    assert widget.picker.current == src
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    assert [x.__class__ for x in (out.rough, out.prompts, out.boxes, out.masks)] == [Image, Points, Shapes, Labels]
    assert [x.name for x in (out.rough, out.prompts, out.boxes, out.masks)] == [
        "part rough map", "part prompts", "part boxes", "part masks"]
    assert out.rough.data.shape == (96, 96) and out.rough.data.dtype == np.float32
    assert tuple(out.rough.contrast_limits) == (0.0, 1.0) and out.rough.colormap.name == "inferno"
    assert out.masks.data.shape == (96, 96) and out.masks.data.dtype == np.int32
    assert out.masks.data.max() >= 1
    assert len(out.prompts.data) >= 1 and out.prompts.data.shape[1] == 2
    assert set(out.prompts.features["label"]) <= {"positive", "negative"}
    assert set(out.prompts.features["source"]) == {"clip"}
    assert all(t == "rectangle" for t in out.boxes.shape_type)
    ids = set(np.unique(out.masks.data)) - {0}
    assert set(out.masks.features["index"]) == ids and set(out.masks.features["class"]) == {"defect"}
    for layer in out.layers():
        assert layer.metadata["clipsam"]["package"] == "napari-clipsam"
    # outputs are not offered as sources; the picker follows the active image layer
    assert [widget.c.image.itemText(i) for i in range(widget.c.image.count())] == ["part"]
    other = viewer.add_image(image[..., 0], name="other")
    assert widget.picker.current == other
    viewer.layers.selection.active = src
    assert widget.picker.current == src
    other.name = "renamed"
    assert "renamed" in [widget.c.image.itemText(i) for i in range(widget.c.image.count())]


def test_rerun_updates_layers_and_recreates_deleted_ones(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    rough, prompts, masks = out.rough, out.prompts, out.masks
    rough.name = "my renamed map"
    viewer.layers.remove(out.boxes)
    viewer.layers.selection.active = src
    widget.c.mask_threshold.setValue(0.6)  # a threshold: no new engine
    run_and_wait(qtbot, widget)
    assert out.rough is rough and out.prompts is prompts and out.masks is masks
    assert out.boxes is not None and out.boxes in viewer.layers
    assert len(viewer.layers) == 5
    assert out.results[None].provenance["thresholds"]["mask_threshold"] == pytest.approx(0.6)  # per call
    assert widget.engine.config.mask_threshold == pytest.approx(0.5)  # the engine itself is unchanged
    # the masks layer deleted: the next Run draws its masks afresh (the empty plane is not "every pixel erased")
    drawn = np.asarray(out.masks.data).copy()
    assert drawn.any()
    viewer.layers.remove(out.masks)
    viewer.layers.selection.active = src
    run_and_wait(qtbot, widget)
    assert out.masks is not None and out.masks is not masks
    again = np.asarray(out.masks.data)
    np.testing.assert_array_equal(again > 0, drawn > 0)  # the same objects (under new ids)
    assert len(np.unique(again)) == len(np.unique(drawn))
    assert "Kept your corrections" not in widget.status, widget.status


def test_the_first_run_shows_the_whole_image_and_r_refines(qtbot, make_widget, image):
    from napari.utils.key_bindings import KeyBinding

    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    viewer.reset_view()
    fitted = viewer.camera.zoom
    viewer.camera.zoom = fitted * 8  # the person zoomed in, or the dock narrowed the canvas since
    run_and_wait(qtbot, widget)
    assert viewer.camera.zoom == pytest.approx(fitted, rel=0.05)
    viewer.camera.zoom = fitted * 3  # later Runs leave the view alone
    run_and_wait(qtbot, widget)
    assert viewer.camera.zoom == pytest.approx(fitted * 3)
    out, loop = widget.outputs_for(src), widget.correction_for(src)
    refine_and_wait(qtbot, loop, lambda: out.prompts.keymap[KeyBinding.from_str("R")](out.prompts))


# ---------------------------------------------------------------------- correction loop


def test_point_edit_refines_and_undo_restores(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out, loop = widget.outputs_for(src), widget.correction_for(src)
    before = out.masks.data.copy()
    refine_and_wait(qtbot, loop, lambda: out.prompts.add([20.0, 70.0]))
    assert out.prompts.features["source"].iloc[-1] == "user"
    assert not np.array_equal(out.masks.data, before)
    assert out.results[None].provenance["prompt_source"] == "user"
    assert out.records[None]["edited"]["prompts"] is True
    assert loop.last_latency is not None and loop.last_latency < 5
    out.masks.undo()
    np.testing.assert_array_equal(out.masks.data, before)


def test_moving_one_point_changes_only_its_component(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out, loop = widget.outputs_for(src), widget.correction_for(src)

    def two_components():  # replace the derived prompts by two boxes with a point in each
        for layer in (out.prompts, out.boxes):
            layer.selected_data = set(range(len(layer.data)))
            layer.remove_selected()
        out.boxes.add_rectangles([[[5, 5], [40, 40]], [[50, 50], [90, 90]]])
        out.prompts.add([[20.0, 20.0], [70.0, 70.0]])

    refine_and_wait(qtbot, loop, two_components)
    before, data = out.results[None], np.array(out.prompts.data) + [[2.0, 2.0], [0.0, 0.0]]
    refine_and_wait(qtbot, loop, lambda: setattr(out.prompts, "data", data))
    after = out.results[None]
    # the dock shows what the engine gives for the moved prompts (the untouched component's map staying as decoded
    # before is tested on the engine: test_engine.py::test_a_correction_changes_only_the_component_it_touched)
    assert before.prompts.num_components == after.prompts.num_components == 2
    np.testing.assert_array_equal(after.points, before.points + [[2.0, 2.0], [0.0, 0.0]])
    expected = widget.engine.refine(before, points=after.points, point_labels=after.point_labels, boxes=after.boxes)
    np.testing.assert_array_equal(after.final_map, expected.final_map)
    np.testing.assert_array_equal(after.instances, expected.instances)


def test_flip_box_edit_and_stale_results(qtbot, make_widget, image):
    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part")
    run_and_wait(qtbot, widget)
    out, loop = widget.outputs_for(src), widget.correction_for(src)
    from napari.utils.key_bindings import KeyBinding

    out.prompts.selected_data = {0}
    flip_key = out.prompts.keymap[KeyBinding.from_str("F")]
    refine_and_wait(qtbot, loop, lambda: flip_key(out.prompts))
    assert out.prompts.features["label"].iloc[0] == "negative"
    assert out.results[None].point_labels[0] == 0
    # deleting a point refines too
    n_points = len(out.prompts.data)
    out.prompts.selected_data = {n_points - 1}
    refine_and_wait(qtbot, loop, out.prompts.remove_selected)
    assert len(out.results[None].points) == n_points - 1
    # a box drawn by hand becomes a box prompt (corners ↔ row0, col0, row1, col1)
    refine_and_wait(qtbot, loop, lambda: out.boxes.add_rectangles(np.array([[9.5, 9.5], [39.5, 59.5]])))
    np.testing.assert_allclose(out.results[None].boxes[-1], [10, 10, 40, 60])
    # edits arriving while a refine runs: only the latest prompts are applied
    loop.timer.setInterval(0)
    out.prompts.add([50.0, 50.0])
    out.prompts.add([60.0, 30.0])
    qtbot.waitUntil(lambda: not loop.busy and len(out.results[None].points) == len(out.prompts.data),
                    timeout=WAIT_MS)
    # hand painting is recorded and undoable
    out.masks.paint((5, 5), 7)
    assert out.records[None]["edited"]["masks"] is True
    out.masks.undo()


# ---------------------------------------------------------------------- stacks


def test_stack_all_frames_and_current_frame(qtbot, make_widget):
    viewer, widget = make_widget()
    stack = np.stack([synthetic_image("part", "crack", size=80, seed=s)[0][..., 0] for s in range(3)])
    src = viewer.add_image(stack, name="stack")
    widget.c.all_frames.setChecked(True)
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    assert out.rough.data.shape == (3, 80, 80) and out.masks.data.shape == (3, 80, 80)
    assert sorted(out.results) == [0, 1, 2]
    assert out.prompts.data.shape[1] == 3 and set(np.round(out.prompts.data[:, 0])) <= {0, 1, 2}
    assert all(np.asarray(v).shape == (4, 3) for v in out.boxes.data)
    ids = [set(np.unique(out.masks.data[f])) - {0} for f in range(3)]
    assert sum(map(bool, ids)) >= 2
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])  # unique over the stack
    # only the current frame; a point added on frame 2 refines frame 2 only
    widget.c.all_frames.setChecked(False)
    viewer.dims.set_current_step(0, 2)
    frame0 = out.masks.data[0].copy()
    run_and_wait(qtbot, widget)
    np.testing.assert_array_equal(out.masks.data[0], frame0)
    loop = widget.correction_for(src)
    with qtbot.waitSignal(loop.refined, timeout=WAIT_MS) as blocker:
        out.prompts.add([2, 40.0, 40.0])
    assert blocker.args == [[2]]
