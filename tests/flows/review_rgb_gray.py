"""A folder review that alternates RGB and grayscale images (RGB, 8-bit gray, RGB, 16-bit gray), accepting each,
in one fresh process (run by tests/test_plugin_flows.py): napari must not crash when the review layer switches.

Usage: python review_rgb_gray.py CLIP_DIR SAM_DIR IMAGES_DIR LABELS_DIR
"""
import sys
import time
from pathlib import Path

import napari
from _flow import say, wait
from qtpy.QtWidgets import QApplication

clip_dir, sam_dir, images, labels = sys.argv[1:5]
viewer = napari.Viewer(show=True)
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
c = widget.c
c.clip_weights.setText(clip_dir)
c.sam_weights.setText(sam_dir)
c.clip_weights.editingFinished.emit()
c.object_name.setText("machined part")
c.qa_input.setText(images)
c.qa_output.setText(labels)
c.qa_open.click()
for name in ("a", "b", "c", "d"):
    wait(lambda: not widget.busy and widget.current_outputs() is not None
         and widget.current_outputs().results, what=f"the run on {name}")
    for _ in range(30):  # let napari draw the image
        QApplication.processEvents()
        time.sleep(0.01)
    say(f"{name}: {widget.folder.layer.data.shape} rgb={widget.folder.layer.rgb}")
    c.qa_accept.click()
    assert Path(labels, "labels", f"{name}.tif").exists(), widget.status
wait(lambda: not widget.busy, what="the last run")
viewer.close()
say("ok")
