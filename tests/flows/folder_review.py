"""A folder review through the real widget, in one fresh process (run by tests/test_plugin_flows.py).

Viewer first, widget from the npe2 manifest, local weights through the widget's settings, then: accept an image,
meet a corrupt file (layers cleared, Accept disabled), review a multi-frame TIFF frame by frame, see that Accept
after "Review complete" rewrites nothing, go back to the accepted image (its saved labels, no new run), change
it and Accept (refused without overwrite, replaced with it), close the review (its keys unbound).

Usage: python folder_review.py CLIP_DIR SAM_DIR IMAGES_DIR LABELS_DIR
"""
import sys
import time
from pathlib import Path

import napari
from _flow import say, wait
import numpy as np
from napari.utils.key_bindings import KeyBinding
from qtpy.QtWidgets import QApplication


def settle(widget):
    wait(lambda: not widget.busy, what="the run")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)


clip_dir, sam_dir, images, labels = sys.argv[1:5]
labels = Path(labels)
viewer = napari.Viewer(show=True)
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
c, folder = widget.c, widget.folder
c.clip_weights.setText(clip_dir)
c.sam_weights.setText(sam_dir)
c.clip_weights.editingFinished.emit()
c.object_name.setText("machined part")
c.prompt_threshold.setValue(0.5)
alt_d = KeyBinding.from_str("Alt-D")
assert alt_d not in viewer.keymap, "review keys are bound before a review is open"
c.qa_input.setText(images)
c.qa_output.setText(str(labels))
c.qa_open.click()
settle(widget)
assert alt_d in viewer.keymap
say(f"opened: {c.qa_progress.text()} | {widget.status}")

# 1. accept the first image
first = widget.current_outputs().masks.data.copy()
c.qa_accept.click()
assert (labels / "labels/a.tif").exists(), widget.status
say(f"accepted a.png: {widget.status}")

# 2. the corrupt file: layers cleared, Accept disabled, Reject works
settle(widget)
assert "Cannot read" in widget.status, widget.status
assert not c.qa_accept.isEnabled()
assert not any(layer.name.startswith(("a.png", "b.png")) for layer in viewer.layers), [x.name for x in viewer.layers]
c.qa_accept.click()
assert not (labels / "labels/b.tif").exists()
c.qa_reject.click()
say("corrupt b.png: layers cleared, accept disabled, rejected")

# 3. the multi-frame TIFF: both frames segmented and accepted
settle(widget)
outputs = widget.current_outputs()
assert outputs.stacked and set(outputs.results) == {0, 1}, (outputs.n_frames, list(outputs.results))
c.qa_accept.click()
assert (labels / "labels/c_f000.tif").exists() and (labels / "labels/c_f001.tif").exists(), widget.status
assert "Review complete" in widget.status, widget.status
say("multi-frame c.tif accepted frame by frame; review complete")

# 4. Accept after completion rewrites nothing
stamp = (labels / "labels/c_f001.tif").stat().st_mtime_ns
c.qa_accept.click()
assert "Review complete" in widget.status and (labels / "labels/c_f001.tif").stat().st_mtime_ns == stamp
say("accept after completion refused")

# 5. back to a.png: its saved labels, no run
c.qa_previous.click()
settle(widget)
c.qa_previous.click()
QApplication.processEvents()
assert not widget.busy, "going back to an accepted image started a run"
masks = widget.current_outputs().masks
assert np.array_equal(masks.data, first), "the saved labels are not what is shown"
assert "was accepted" in widget.status, widget.status
say("back on a.png: saved labels shown, no run")

# 6. change it: Accept is refused without overwrite, replaces with it
masks.selected_label = 77
masks.brush_size = 3
masks.paint((2, 2), 77)
stamp = (labels / "labels/a.tif").stat().st_mtime_ns
c.overwrite.setChecked(False)
c.qa_accept.click()
assert "differ" in widget.status and (labels / "labels/a.tif").stat().st_mtime_ns == stamp, widget.status
c.overwrite.setChecked(True)
widget.set_status("")
c.qa_accept.click()
assert "differ" not in widget.status, widget.status  # it moved on (to the corrupt image), files replaced
import tifffile  # noqa: E402

assert (tifffile.imread(labels / "labels/a.tif") == 77).any()
say("changed labels: refused without overwrite, replaced with it")

# 7. close: exactly the review keys are unbound
c.qa_close.click()
assert alt_d not in viewer.keymap
settle(widget)
viewer.close()
say("ok")
