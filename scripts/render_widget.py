"""Render docs/widget.png: napari with the ClipSAM dock widget after a run on a sample image.

Uses a tiny engine with RANDOM weights (no download), so the maps and masks in the picture mean nothing;
the picture shows the interface only, and says so on the canvas. τ_prompt is set to the 97th percentile of the
rough map so that some prompts appear.

    xvfb-run -a python scripts/render_widget.py            # headless machines
    python scripts/render_widget.py --out docs/widget.png  # with a display
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "widget.png"))
    parser.add_argument("--sample", default="metal", choices=("metal", "pcb", "gray16"))
    parser.add_argument("--size", default="1500x950", help="window size WxH")
    args = parser.parse_args()

    import imageio.v3 as iio
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_clipsam.testing import tiny_engine
    from napari_clipsam.widget import ClipSAMWidget

    viewer = napari.Viewer(show=True, title="napari-clipsam")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window.resize(width, height)
    source = viewer.open_sample("napari-clipsam", args.sample)[0]
    engine = tiny_engine(seed=0)
    tau = float(np.quantile(engine.segment(source.data, "metal plate").rough_map, 0.97))

    settings = Path(tempfile.mkdtemp()) / "widget.json"  # leave the user's remembered settings alone
    widget = ClipSAMWidget(viewer, engine=engine, settings_path=settings)
    viewer.window.add_dock_widget(widget, name="ClipSAM", area="right")
    widget.c.object_name.setText("metal plate")
    widget.c.prompt_threshold.setValue(tau)
    app = QApplication.instance()

    def wait(condition, timeout=60.0):
        start = time.monotonic()
        while not condition() and time.monotonic() - start < timeout:
            app.processEvents()
            time.sleep(0.01)

    widget.select_source(source)
    widget.run()
    wait(lambda: not widget.busy)
    outputs = widget.outputs_for(source)
    loop = widget.correction_for(source)
    h, w = outputs.shape
    outputs.prompts.add([h * 0.3, w * 0.7])  # a user point: the masks refine from the cached embedding
    wait(lambda: loop.last_latency is not None and not loop.busy)
    viewer.layers.selection.active = outputs.prompts
    overlay = viewer.canvas.overlays.text if hasattr(viewer, "canvas") else viewer.text_overlay
    overlay.visible = True
    overlay.position = "top_center"
    overlay.text = "tiny RANDOM weights: shows the interface only"
    overlay.color = "yellow"
    overlay.font_size = 10
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, shot)
    print(f"wrote {out} ({shot.shape[1]}×{shot.shape[0]}); status: {widget.status}")
    viewer.close()


if __name__ == "__main__":
    main()
