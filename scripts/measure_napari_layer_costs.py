"""What napari itself costs the GUI thread, with no napari-clipsam code: one add of each layer kind the dock adds
for a new image (hidden, as the dock adds them), making it visible with its first draw, and one redraw.

Issue 22 asks for no GUI stall above ~100 ms during a Run. The dock adds a new image's four result layers one per
turn of the event loop (widget/staging.py), so its longest turn is at least the longest of these single napari
calls; this script measures that floor on the machine (and renderer) it runs on.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/measure_napari_layer_costs.py [--size 1024] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the image and of the layers (px)")
    parser.add_argument("--rounds", type=int, default=3, help="sets of four layers added")
    args = parser.parse_args()
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    side = args.size
    viewer.add_image(np.random.default_rng(0).random((side, side), np.float32), name="source")

    def settle() -> float:
        t = time.perf_counter()
        for _ in range(5):
            app.processEvents()
        return time.perf_counter() - t

    for _ in range(30):  # the window shown and drawn once
        app.processEvents()
        time.sleep(0.01)
    makers = {
        "image": lambda i: viewer.add_image(np.zeros((side, side), np.float32), name=f"rough {i}", visible=False),
        "labels": lambda i: viewer.add_labels(np.zeros((side, side), np.int32), name=f"masks {i}", visible=False),
        "shapes": lambda i: viewer.add_shapes(ndim=2, name=f"boxes {i}", shape_type="rectangle", visible=False),
        "points": lambda i: viewer.add_points(np.zeros((0, 2)), name=f"prompts {i}", visible=False),
    }
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in makers}
    for i in range(args.rounds):
        for kind, make in makers.items():
            t = time.perf_counter()
            layer = make(i)
            added = time.perf_counter() - t
            settle()
            t = time.perf_counter()
            layer.visible = True
            shown = time.perf_counter() - t + settle()
            figures[kind].append((added, shown))
    for kind, rows in figures.items():
        print(f"{kind:7s} add (hidden): {' / '.join(f'{1e3 * a:.0f}' for a, _ in rows)} ms; "
              f"shown and drawn: {' / '.join(f'{1e3 * s:.0f}' for _, s in rows)} ms")
    draws = []
    for k in range(10):
        t = time.perf_counter()
        viewer.scene.camera.zoom = viewer.scene.camera.zoom * (1.001 if k % 2 else 1 / 1.001)
        app.processEvents()
        draws.append(time.perf_counter() - t)
    print(f"one redraw with {len(viewer.layers)} layers: median {1e3 * statistics.median(draws):.0f} ms, "
          f"max {1e3 * max(draws):.0f} ms")
    viewer.close()


if __name__ == "__main__":
    main()
