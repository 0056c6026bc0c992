"""The napari widget, under Xvfb, with a tiny random-weight engine injected (no downloads)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Image, Labels, Points, Shapes  # noqa: E402

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.export import dataset_split, read_label_tiff, read_mvtec_mask, read_yolo_labels  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402
from napari_clipsam.widget.correction import DEBOUNCE_MS  # noqa: E402

WAIT_MS = 20_000
TAU_PROMPT = 0.3  # the tiny random CLIP's rough map on these images peaks around 0.6


@pytest.fixture
def image():
    return synthetic_image("part", "crack", size=96, seed=1)[0]


# FutureWarnings (e.g. napari's private access through the plugin's viewer proxy, deprecated in napari 0.9,
# refused from 0.10) and deprecations raised in napari or in this package fail these tests (the module field
# matches "napari" and "napari_clipsam"); napari also checks that the widget sets napari state from the GUI thread.
pytestmark = [pytest.mark.filterwarnings("error::FutureWarning"),
              pytest.mark.filterwarnings("error::DeprecationWarning:napari")]


@pytest.fixture(autouse=True)
def _napari_main_thread_check(monkeypatch):
    monkeypatch.setenv("NAPARI_ENSURE_PLUGIN_MAIN_THREAD", "1")


def plugin_viewer(viewer):
    """The viewer as napari hands it to a plugin widget (a proxy allowing public API only): taken from the widget
    napari opens from the manifest, whose dock is then closed again."""
    dock, opened = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    proxy = opened.viewer
    viewer.window.remove_dock_widget(dock)
    assert proxy is not viewer and proxy == viewer  # a proxy, not the viewer object itself
    return proxy


@pytest.fixture
def make_widget(make_napari_viewer, shared_engine):
    def make(engine=shared_engine, viewer=None, **kwargs):
        viewer = viewer or make_napari_viewer()
        widget = ClipSAMWidget(plugin_viewer(viewer), engine=engine, **kwargs)
        viewer.window.add_dock_widget(widget, name="ClipSAM")
        widget.c.prompt_threshold.setValue(TAU_PROMPT)
        widget.c.object_name.setText("machined part")
        return viewer, widget

    return make


def run_and_wait(qtbot, widget, **kwargs):
    assert widget.run(**kwargs)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "Done" in widget.status, widget.status


def refine_and_wait(qtbot, loop, edit):
    with qtbot.waitSignal(loop.refined, timeout=WAIT_MS):
        edit()


class GatedEngine:
    """The real tiny engine, whose progress callback blocks (while ``gate`` is set) until Cancel is pressed."""

    def __init__(self, engine):
        self._engine = engine
        self.gate = True
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def segment(self, image, object_name, *, progress=None, cancelled=None, contrast_limits=None, settings=None):
        def blocking(stage, fraction):
            self.started.set()
            deadline = time.monotonic() + 15
            while self.gate and not cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if progress is not None:
                progress(stage, fraction)

        return self._engine.segment(image, object_name, progress=blocking, cancelled=cancelled,
                                    contrast_limits=contrast_limits, settings=settings)


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


# ---------------------------------------------------------------------- run control and errors


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


# ---------------------------------------------------------------------- classes and export


def test_export_round_trip(qtbot, make_widget, tmp_path, image):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part 1")
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    widget.classes.add("scratch")
    out.masks.selected_label = 1
    widget.c.class_assign.click()
    assert widget.outputs_for(src).instance_classes()[1] == "scratch"
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert "Exported 1 image(s)" in widget.status, widget.status
    masks = out.masks.data
    png = read_mvtec_mask(tmp_path / "ds/masks/part_1_mask.png")
    import imageio.v3 as iio

    assert set(np.unique(iio.imread(tmp_path / "ds/masks/part_1_mask.png"))) <= {0, 255}
    np.testing.assert_array_equal(png, masks > 0)
    labels, classes = read_label_tiff(tmp_path / "ds/labels/part_1.tif")
    np.testing.assert_array_equal(labels, masks)
    assert classes[1] == "scratch"
    coco = COCO(str(tmp_path / "ds/coco/annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(set(np.unique(masks)) - {0})
    union = np.zeros_like(masks, bool)
    for ann in anns:
        union |= coco.annToMask(ann).astype(bool)
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    np.testing.assert_array_equal(union, masks > 0)
    assert "scratch" in [c["name"] for c in coco.loadCats(coco.getCatIds())]
    assert read_yolo_labels(tmp_path / "ds/yolo/labels" / dataset_split("part_1") / "part_1.txt", masks.shape)
    prov = json.loads((tmp_path / "ds/provenance/part_1.json").read_text())
    text = json.dumps(prov)
    assert '"edited"' in text and '"prompts"' in text and "training-free" in text
    # a second export without overwrite keeps the files; an error is shown, not raised
    widget.c.export.click()
    assert "kept" in widget.status
    widget.c.export_dir.setText(str(tmp_path / "ds/masks/part_1_mask.png"))
    widget.c.export.click()
    assert "Export failed" in widget.status


def test_stack_export_per_frame_stems(qtbot, make_widget, tmp_path):
    viewer, widget = make_widget()
    stack = np.stack([synthetic_image("part", "crack", size=64, seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="run", rgb=True)
    widget.c.all_frames.setChecked(True)
    run_and_wait(qtbot, widget)
    widget.c.export_dir.setText(str(tmp_path))
    for name, box in widget.c.formats.items():
        box.setChecked(name == "mvtec")
    widget.c.export.click()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "run_f000_mask.png", "run_f001_mask.png", "run_f002_mask.png"]


# ---------------------------------------------------------------------- folder review and settings


def test_folder_review_accept_reject_resume(qtbot, make_widget, tmp_path, make_napari_viewer):
    import imageio.v3 as iio

    from napari_clipsam.review import QASession, Verdict

    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    for i in range(3):
        iio.imwrite(src_dir / f"img{i}.png", synthetic_image("part", "crack", size=64, seed=i)[0])
    viewer, widget = make_widget()
    widget.folder.ordering.table.file_order.setChecked(True)  # this test walks the folder in file order
    assert widget.folder.open(src_dir, out_dir)
    qtbot.waitUntil(lambda: not widget.busy and widget.outputs_for(widget.folder.layer) is not None,
                    timeout=WAIT_MS)
    assert widget.c.qa_progress.text().startswith("1 / 3, 0 accepted")
    assert widget.c.qa_verdict.text() == "img0.png: undecided"
    first = widget.folder.layer
    assert widget.folder.accept()
    assert widget.folder.layer is first and first.name == "img1.png"  # same layer, next image
    assert widget.outputs_for(first).masks.name == "img1.png masks" and len(viewer.layers) == 5
    qtbot.waitUntil(lambda: not widget.busy and None in widget.outputs_for(first).results, timeout=WAIT_MS)
    assert widget.folder.prefetch_hits == 1  # image 1 was segmented in the background while image 0 was shown
    assert widget.folder.reject()
    assert widget.c.qa_progress.text().startswith("3 / 3, 1 accepted, 1 rejected")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert (out_dir / "masks" / "img0_mask.png").is_file()
    session = QASession(src_dir, out_dir)
    assert [session.verdict(i) for i in range(3)] == [Verdict.ACCEPTED, Verdict.REJECTED, None]
    # a new widget on the same folders resumes at the first undecided image
    viewer2, widget2 = make_widget(viewer=make_napari_viewer())
    assert widget2.c.qa_input.text() == str(src_dir)  # remembered
    assert widget2.folder.open()
    assert widget2.folder.session.index == 2 and widget2.folder.layer.name == "img2.png"
    qtbot.waitUntil(lambda: not widget2.busy, timeout=WAIT_MS)


def test_settings_remembered(make_widget, tmp_path, make_napari_viewer):
    viewer, widget = make_widget()
    widget.c.object_name.setText("pcb")
    widget.c.object_name.editingFinished.emit()
    widget.c.mask_threshold.setValue(0.7)
    widget.classes.add("scratch")
    widget.c.formats["yolo"].setChecked(False)
    _, widget2 = make_widget(viewer=make_napari_viewer())
    assert widget2.object_name == "machined part"  # make_widget sets it; the saved value was read before
    assert widget2.settings.object_name == "pcb"
    assert widget2.c.mask_threshold.value() == pytest.approx(0.7)
    assert widget2.class_names == ["defect", "scratch"]
    assert widget2.export_formats == ["mvtec", "tiff", "coco"]


def test_folder_moves_on_while_running(qtbot, make_widget, shared_engine, tmp_path):
    import imageio.v3 as iio

    from napari.utils.key_bindings import KeyBinding

    for i in range(2):
        iio.imwrite(tmp_path / f"{i}.png", synthetic_image("metal", "stain", size=48, seed=i)[0])
    gated = GatedEngine(shared_engine)
    viewer, widget = make_widget(engine=gated)
    assert widget.folder.open(tmp_path, tmp_path / "labels")
    assert gated.started.wait(10) and widget.busy
    assert widget.folder.accept() is False and "not finished" in widget.status
    viewer.keymap[KeyBinding.from_str("Alt-D")](viewer)  # skip while ClipSAM runs: cancel, then move on
    assert widget.folder._queued
    gated.gate = False
    qtbot.waitUntil(lambda: not widget.busy and widget.folder.layer.name == "1.png"
                    and None in widget.outputs_for(widget.folder.layer).results, timeout=WAIT_MS)
    assert widget.folder.session.verdict(0).value == "skipped"


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


def test_the_folder_review_uses_only_its_host_interface():
    """FolderPanel reaches the dock only through ReviewHost, and the dock implements all of it."""
    import ast
    import inspect

    from napari_clipsam.widget import folder

    declared = {n for n in vars(folder.ReviewHost) if not n.startswith("_")} | set(folder.ReviewHost.__annotations__)
    tree = ast.parse(inspect.getsource(folder.FolderPanel))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "widget"}
    assert used and used <= declared, sorted(used - declared)
    assert all(hasattr(ClipSAMWidget, name) for name in declared - {"viewer", "busy"})  # instance attributes


def test_a_16_bit_review_image_is_segmented_as_the_cli_sees_it(qtbot, make_widget, shared_engine, tmp_path):
    """The review shows a 16-bit image with the CLI's percentile limits, so the dock's Run and a prefetch (which
    reads the file without a layer) give the result `segment` gives."""
    import tifffile

    from napari_clipsam.io.images import default_contrast_limits, normalise_image, read_image
    from napari_clipsam.widget.source import contrast_limits_for

    gray = synthetic_image("part", "crack", size=64, seed=3)[0][..., 0].astype(np.uint16) * 40
    gray[0, 0] = 65535  # one hot pixel: napari's min/max limits would darken everything else
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "hot.tif", gray)
    viewer, widget = make_widget()
    assert widget.folder.open(tmp_path / "in", tmp_path / "out")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    layer = widget.folder.layer
    assert tuple(layer.contrast_limits) == pytest.approx(default_contrast_limits(gray))
    as_cli = normalise_image(read_image(tmp_path / "in" / "hot.tif"))[0]
    np.testing.assert_array_equal(normalise_image(gray, contrast_limits_for(layer))[0], as_cli)
    result = widget.outputs_for(layer).results[None]
    np.testing.assert_array_equal(result.rough_map, shared_engine.segment(
        gray, widget.object_name, settings={"prompt_threshold": widget.thresholds[0]}).rough_map)


class FailingEngine(GatedEngine):
    """The real tiny engine, whose segment raises while ``fail`` is set (a run that goes wrong)."""

    def __init__(self, engine):
        super().__init__(engine)
        self.fail = False

    def segment(self, image, object_name, **kwargs):
        if self.fail:
            raise RuntimeError("out of memory on purpose")
        return self._engine.segment(image, object_name, **kwargs)


def test_a_failed_run_in_the_review_cannot_be_accepted(qtbot, make_widget, shared_engine, tmp_path):
    import imageio.v3 as iio

    from napari.utils.key_bindings import KeyBinding

    for i in range(2):
        iio.imwrite(tmp_path / f"{i}.png", synthetic_image("metal", "stain", size=48, seed=i)[0])
    failing = FailingEngine(shared_engine)
    failing.fail = True
    viewer, widget = make_widget(engine=failing)
    assert widget.folder.open(tmp_path, tmp_path / "labels")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "out of memory on purpose" in widget.status and "Accept is off" in widget.status, widget.status
    assert not widget.c.qa_accept.isEnabled()
    viewer.keymap[KeyBinding.from_str("Alt-A")](viewer)  # the key bypasses the button: refused too
    assert widget.folder.session.verdict(0) is None and "no result" in widget.status
    assert not (tmp_path / "labels" / "labels").exists()
    failing.fail = False  # Run again: now it works and can be accepted
    run_and_wait(qtbot, widget, source=widget.folder.layer)
    assert widget.c.qa_accept.isEnabled()
    failing.fail = True  # the next image reuses the layer: its emptied outputs are not a result either
    assert widget.folder.accept() and widget.folder.session.verdict(0).value == "accepted"
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.folder.session.index == 1 and not widget.c.qa_accept.isEnabled(), widget.status
    assert not widget.folder.accept() and widget.folder.session.verdict(1) is None
    assert not (tmp_path / "labels" / "labels" / "1.tif").exists()


def test_a_multi_frame_rgb_tiff_is_reviewed_frame_by_frame(qtbot, make_widget, tmp_path):
    import tifffile

    from napari.utils.key_bindings import KeyBinding

    stack = np.stack([synthetic_image("metal", "stain", size=48, seed=s)[0] for s in (0, 1, 2)])
    tifffile.imwrite(tmp_path / "rgb.tif", stack, photometric="rgb")
    viewer, widget = make_widget()
    assert widget.folder.open(tmp_path, tmp_path / "labels")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    layer = widget.folder.layer
    assert layer.rgb and layer.data.shape == (3, 48, 48, 3)
    outputs = widget.outputs_for(layer)
    assert outputs.stacked and set(outputs.results) == {0, 1, 2}, widget.status
    viewer.keymap[KeyBinding.from_str("Alt-A")](viewer)
    assert all((tmp_path / "labels" / "labels" / f"rgb_f{i:03d}.tif").is_file() for i in range(3)), widget.status


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


# ---------------------------------------------------------------------- a dock that leaves room for the canvas


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
