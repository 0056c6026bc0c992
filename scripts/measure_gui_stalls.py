"""Measure how long napari's window goes without handling events during full-size Runs in the dock (issue 22):
the cpu preset's real architectures (SAM vit_b, CLIP ViT-L/14@336) with random weights, no download, a cold
cache (so the first Run loads, converts the encoders for OpenVINO and compiles them), then a second Run on
another image with the engine warm, then a third on a large image (``--large`` px, its pyramid rough map).
``--warm-cache`` keeps the user's cache instead: the first Run is then engine load + first segment as a returning
user meets it (issue 23's time to first mask, in the dock).

Viewer first, dock from the manifest, Run pressed through the button, as a person does. A 20 ms QTimer in the GUI
thread records every gap between its ticks beyond the interval, with the dock's status at that moment: the
longest gaps of each Run, the moments after the Run's end (layer adds) included.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/measure_gui_stalls.py [--size 1024] [--large 4096] [--tiny] [--warm-cache]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TICK_MS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--size", type=int, default=1024, help="side of the first two images (px)")
    parser.add_argument("--large", type=int, default=4096, help="side of the third image (px; 0: skip it)")
    parser.add_argument("--top", type=int, default=5, help="longest gaps listed per Run")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny random engine instead of the preset "
                        "(no conversion: the Run's end, i.e. adding and filling the result layers, dominates)")
    parser.add_argument("--warm-cache", action="store_true", help="use the user's cache folder as it is (converted "
                        "models found there): the first Run is then the time to first mask a returning user meets")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    if not args.warm_cache:
        os.environ["NAPARI_CLIPSAM_CACHE"] = str(work / "cache")  # cold: converts and compiles on the first Run
    os.environ["NAPARI_CLIPSAM_CONFIG_DIR"] = str(work / "config")

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    app = QApplication.instance()

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import synthetic_image

    if args.tiny:
        from napari_clipsam.testing import tiny_engine

        widget._engine = tiny_engine()
        widget.c.prompt_threshold.setValue(0.3)  # the tiny CLIP's map peaks near 0.6
    else:  # the dock builds its engine from this config on the first Run (random weights, not the downloads)
        widget._base_config = ClipSAMConfig.preset(args.preset, clip_weights="random", sam_weights="random",
                                                   device="cpu")
    gaps: list[tuple[float, float, str]] = []  # (when, gap s, status)
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gap = now - last[0] - TICK_MS / 1000
        if gap > 0.03:
            gaps.append((now, gap, widget.status[:90]))
        last[0] = now

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()

    def settle(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    def run(name: str, image) -> None:
        layer = viewer.add_image(image, name=name)
        settle(1.0)
        widget.select_source(layer)
        del gaps[:]
        t0 = time.perf_counter()
        widget.c.run.click()
        while widget.busy:
            app.processEvents()
            time.sleep(0.002)
        t_run = time.perf_counter() - t0
        settle(2.0)  # the Run's end: layers added and drawn
        top = sorted(gaps, key=lambda g: -g[1])[:args.top]
        total = sum(g[1] for g in gaps)
        print(f"\n{name} ({image.shape[1]}×{image.shape[0]}): Run {t_run:.1f} s, status {widget.status[:80]!r}")
        print(f"  GUI gaps > 30 ms: {len(gaps)}, {total:.2f} s in all; longest:")
        for when, gap, status in top:
            print(f"    {1000 * gap:7.0f} ms at {when - t0:6.1f} s during {status!r}")
        print(f"  the dock's own heartbeat: longest {1000 * widget.heartbeat.longest_gap_s:.0f} ms during "
              f"{widget.heartbeat.longest_gap_at!r}")

    # the dock imports torch & co. in the background when it opens (heavy_imports.preload_in_background): the
    # window's gaps meanwhile, before any Run (a person picks an image and a setting in the meantime)
    from napari_clipsam.heavy_imports import preload_in_background

    t0 = time.perf_counter()
    while preload_in_background().is_alive():
        app.processEvents()
        time.sleep(0.002)
    top = sorted(gaps, key=lambda g: -g[1])[:args.top]
    print(f"\nthe dock's background import: {time.perf_counter() - t0:.1f} s after the dock opened; longest gaps "
          f"{[round(1000 * g[1]) for g in top]} ms")
    settle(1.0)
    run("first (cold)", synthetic_image("metal", "scratch", size=args.size, seed=0)[0])
    run("second (warm)", synthetic_image("metal", "stain", size=args.size, seed=1)[0])
    if args.large:
        run("large (warm)", synthetic_image("metal", "scratch", size=args.large, seed=2)[0])
    viewer.close()


if __name__ == "__main__":
    main()
