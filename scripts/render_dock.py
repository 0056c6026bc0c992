"""Render docs/dock.png: the dock after Across → Score on 5 image layers (Segment tab) and the Review tab with
*Adapt to this product*, tiny RANDOM-weight models (no download), 1600×1000.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/render_dock.py
"""
import os, tempfile, time
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
work = Path(tempfile.mkdtemp()); os.environ["NAPARI_CLIPSAM_CONFIG_DIR"] = str(work / "config")
import napari
from qtpy.QtWidgets import QApplication
viewer = napari.Viewer(show=True, title="napari-clipsam")
viewer.window.resize(1600, 1000)
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
app = QApplication.instance()
def wait(cond, timeout=300):
    t = time.monotonic()
    while not cond() and time.monotonic() - t < timeout:
        app.processEvents(); time.sleep(0.01)
from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.testing import write_tiny_clip, write_tiny_sam
for i, k in enumerate(["scratch", None, "hole", None, "stain"]):
    viewer.add_image(synthetic_image("metal", k, 128, seed=i)[0], name=f"plate {i}")
c = widget.c
c.clip_weights.setText(str(write_tiny_clip(work / "clip"))); c.sam_weights.setText(str(write_tiny_sam(work / "sam")))
c.clip_weights.editingFinished.emit()
c.object_name.setText("metal plate")
c.across.setCurrentText("image layers"); c.across_run.click()
wait(lambda: not widget.busy)
for _ in range(30): app.processEvents(); time.sleep(0.02)
import imageio.v3 as iio
iio.imwrite(work / "segment.png", viewer.screenshot(canvas_only=False, flash=False))
print("status:", widget.status)
c.tabs.setCurrentIndex(c.tabs.count() - 1)
for _ in range(30): app.processEvents(); time.sleep(0.02)
iio.imwrite(work / "review.png", viewer.screenshot(canvas_only=False, flash=False))
print("dock width", widget.width())
viewer.close()
import numpy as np
a, b = iio.imread(work / "segment.png"), iio.imread(work / "review.png")
x = a.shape[1] - 340  # the dock only
out = Path(__file__).resolve().parents[1] / "docs" / "dock.png"
iio.imwrite(out, np.concatenate([a[:700, x:], b[:700, x:]], axis=1))
print("wrote", out)
