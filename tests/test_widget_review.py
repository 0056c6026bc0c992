"""The folder review in the dock: Accept / Reject / Skip and resume, moving on while ClipSAM runs, 16-bit and
multi-frame images, a failed Run that cannot be accepted, and the review's narrow interface to the dock."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, WAIT_MS, GatedEngine, run_and_wait  # noqa: E402
from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

pytestmark = STRICT_NAPARI


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
    # the next image's Run took the status line; what Accept wrote stays in the tab
    assert "Accepted img0.png" not in widget.status
    assert widget.c.qa_verdict.text().startswith("img1.png: undecided\nLast: Accepted img0.png: ")
    assert "file(s) written" in widget.c.qa_verdict.text()
    assert widget.folder.prefetch_hits == 1  # image 1 was segmented in the background while image 0 was shown
    assert widget.folder.reject()
    assert widget.c.qa_progress.text().startswith("3 / 3, 1 accepted, 1 rejected")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert (out_dir / "masks" / "img0_mask.png").is_file()
    widget.folder.close()
    assert widget.status.startswith("Review closed") and str(out_dir) in widget.status
    session = QASession(src_dir, out_dir)
    assert [session.verdict(i) for i in range(3)] == [Verdict.ACCEPTED, Verdict.REJECTED, None]
    # a new widget on the same folders resumes at the first undecided image
    viewer2, widget2 = make_widget(viewer=make_napari_viewer())
    assert widget2.c.qa_input.text() == str(src_dir)  # remembered
    assert widget2.folder.open()
    assert widget2.folder.session.index == 2 and widget2.folder.layer.name == "img2.png"
    qtbot.waitUntil(lambda: not widget2.busy, timeout=WAIT_MS)


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
