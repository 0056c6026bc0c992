"""The demo as `napari-clipsam demo` opens it (run by tests/test_demo.py): viewer first, then the dock from the
manifest with the demo's settings (NAPARI_CLIPSAM_CONFIG_DIR set by the test), one Run on the tiny models, then
normal references set from the same image and a second Run (the few-shot path on a 4-block CLIP).

Usage: python demo_interface.py CLIP_DIR SAM_DIR
"""
import sys

import napari
from _flow import say, wait

from napari_clipsam.widget.demo import TITLE, open_demo

clip_dir, sam_dir = sys.argv[1:3]
viewer = napari.Viewer(show=True)
widget = open_demo(viewer)
assert viewer.title == TITLE and "interface only" in viewer.title
c = widget.c
assert c.clip_weights.text() == clip_dir and c.sam_weights.text() == sam_dir, (c.clip_weights.text(), sam_dir)
assert c.object_name.text() == "metal plate"
say("demo settings loaded")
c.run.click()
wait(lambda: not widget.busy, what="the first Run")
assert widget.engine is not None, widget.status
say(f"run: {widget.status}")
masks = viewer.layers["metal plate masks"].data
assert masks.max() > 0, f"the demo's first Run found nothing to edit: {widget.status}"
engine = widget.engine
image = viewer.layers["metal plate"].data
engine.set_normal_references([image[:, ::-1].copy(), image[::-1].copy()], "metal plate")
result = engine.segment(image, "metal plate")
assert result.rough_map.shape == image.shape[:2]
say(f"few-shot run on the demo models: layers {engine.config.feature_layers}")
viewer.close()
say("ok")
