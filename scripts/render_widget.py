"""Render docs/widget.png: napari with the ClipSAM dock, in the order a user meets it.

Viewer first; the dock opened from napari's plugin manifest (Plugins ▸ ClipSAM); tiny RANDOM-weight models
written as local-dir folders and chosen in the dock's CLIP/SAM weights fields (no download); Run on a sample;
τ_prompt set from the rough map's range (as the status line suggests when nothing is found) and Run again; one
point added (refine), one object locked, masks coloured by class. The maps and masks mean nothing (random
weights): the picture shows the interface, and says so on the canvas.

    xvfb-run -a python scripts/render_widget.py            # headless machines
    python scripts/render_widget.py --out docs/widget.png  # with a display
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "widget.png"))
    parser.add_argument("--sample", default="metal", choices=("metal", "pcb", "gray16"))
    parser.add_argument("--size", default="1500x1000", help="window size WxH")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    os.environ["NAPARI_CLIPSAM_CONFIG_DIR"] = str(work / "config")  # leave the user's settings alone

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari-clipsam")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    source = viewer.open_sample("napari-clipsam", args.sample)[0]
    app = QApplication.instance()

    def wait(condition, timeout=120.0):
        start = time.monotonic()
        while not condition() and time.monotonic() - start < timeout:
            app.processEvents()
            time.sleep(0.01)

    from napari_clipsam.testing import write_tiny_clip, write_tiny_sam  # torch loads now, after the viewer

    c = widget.c
    c.clip_weights.setText(str(write_tiny_clip(work / "clip")))
    c.sam_weights.setText(str(write_tiny_sam(work / "sam")))
    c.clip_weights.editingFinished.emit()
    c.object_name.setText("metal plate")
    widget.select_source(source)
    c.run.click()
    wait(lambda: not widget.busy)
    outputs = widget.outputs_for(source)
    if outputs.masks is None or not outputs.masks.data.any():  # random weights: follow the status line's advice
        c.prompt_threshold.setValue(float(np.quantile(outputs.rough.data, 0.97)))
        c.run.click()
        wait(lambda: not widget.busy)
    loop = widget.correction_for(source)
    h, w = outputs.shape
    outputs.prompts.add([h * 0.3, w * 0.7])  # a user point: the masks refine from the cached embedding
    wait(lambda: loop.last_latency is not None and not loop.busy)
    ids = [int(i) for i in np.unique(outputs.masks.data) if i]
    if ids:
        outputs.masks.selected_label = ids[0]
        c.lock_object.click()
    widget.classes.add("stain")
    c.colour_by_class.setChecked(True)
    c.tabs.setCurrentIndex(0)
    viewer.layers.selection.active = outputs.prompts
    overlay = viewer.canvas.overlays.text if hasattr(viewer, "canvas") else viewer.text_overlay
    overlay.visible = True
    overlay.position = "top_center"
    overlay.text = "tiny RANDOM weights: shows the interface only"
    overlay.color = "yellow"
    overlay.font_size = 10
    viewer.reset_view()
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    import imageio.v3 as iio

    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, shot)
    print(f"wrote {out} ({shot.shape[1]}×{shot.shape[0]}); status: {widget.status}")
    viewer.close()


if __name__ == "__main__":
    main()
