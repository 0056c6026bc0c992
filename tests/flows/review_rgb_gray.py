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
widget.folder.ordering.table.file_order.setChecked(True)  # a, b, c, d: the kinds alternate
c.qa_open.click()
# no folder scoring: each image is then segmented by a Run (the next one prefetched in the background) while the
# layers switch, the path on which napari crashed (with the scoring, the results come ready and nothing runs)
widget.folder.ordering.needs_scoring = False
for name in ("a", "b", "c", "d"):
    wait(lambda: not widget.busy and widget.current_outputs() is not None
         and widget.current_outputs().results, what=f"the run on {name}")
    for _ in range(30):  # let napari draw the image
        QApplication.processEvents()
        time.sleep(0.01)
    layer = widget.folder.layer
    assert layer.name == f"{name}.png", layer.name
    say(f"{name}: {layer.data.shape} rgb={layer.rgb}")
    # the other kind's layer is hidden, not removed, and nothing of the dock can reach it
    assert widget.picker.current == layer and layer.visible, widget.picker.current
    spares = widget.folder.layers.spares()
    assert all(not x.visible and x not in widget.picker.candidates() for x in spares), spares
    assert all(not o.visible and not o.data.any() for x in spares for o in widget.outputs_for(x).layers()
               if hasattr(o.data, "any")), "a hidden layer's outputs are not empty"
    if name in ("c", "d"):  # the kind came back: its first layer again, one layer per kind in all
        assert len(spares) == 1 and len(widget.picker.candidates()) == 1, list(viewer.layers)
    c.qa_accept.click()
    assert Path(labels, "labels", f"{name}.tif").exists(), widget.status
wait(lambda: not widget.busy, what="the last run")
viewer.close()
say("ok")
