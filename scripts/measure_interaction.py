"""Measure what an annotator feels at full size on this machine (random weights, no download):

- cancel latency per stage: the time from a cancel request, made as a stage starts, to the run stopping;
- progress inside the encoders: how many reports each encoder stage makes and the longest time without one;
- edit → refined masks latency in the napari dock (viewer first, dock from the manifest, the cpu preset's real
  architectures with random weights), for a moved point of one component;
- the on-disk SAM embedding cache: bytes per image and the time to reopen an image with it.

    xvfb-run -a python scripts/measure_interaction.py [--preset cpu] [--edits 5] [--backend openvino]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--backend", default="torch", help="encoder backend (openvino converts the models first)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    os.environ["NAPARI_CLIPSAM_CACHE"] = str(work / "cache")
    os.environ["NAPARI_CLIPSAM_CONFIG_DIR"] = str(work / "config")

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    app = QApplication.instance()

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.errors import Cancelled
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.data.synthetic import synthetic_image

    config = ClipSAMConfig.preset(args.preset, clip_weights="random", sam_weights="random", device="cpu",
                                  backend=args.backend)
    image = synthetic_image("metal", "scratch", size=512, seed=0)[0]

    def build(config, **kwargs):
        """An engine on the same random weights every time, so OpenVINO converts them once (its cache)."""
        import torch

        torch.manual_seed(0)
        return ClipSAM.from_config(config, **kwargs)

    # --- cancel during model loading
    asked = {}

    def cancel_loading():
        return "t" in asked

    threading.Timer(2.0, lambda: asked.setdefault("t", time.perf_counter())).start()
    t0 = time.perf_counter()
    try:
        build(config, cancelled=cancel_loading)
        print(f"loading: not cancellable, finished in {time.perf_counter() - t0:.1f} s")
    except Cancelled:
        print(f"cancel latency, model loading: {time.perf_counter() - asked['t']:.2f} s")
    t0 = time.perf_counter()
    engine = build(config)
    print(f"engine built in {time.perf_counter() - t0:.1f} s (random weights)")

    # --- cancel latency per stage (request made when the stage first reports)
    for stage in ("clip", "sam encoder"):
        engine.clear_caches()
        state = {}

        def progress(s, f, stage=stage):
            if s == stage and "t" not in state:
                state["t"] = time.perf_counter()

        try:
            engine.segment(image, "metal plate", progress=progress, cancelled=lambda: "t" in state)
        except Cancelled:
            print(f"cancel latency, {stage}: {1000 * (time.perf_counter() - state['t']):.0f} ms")

    # --- progress while the encoders run: a stage lasts from its first report to the next stage's first
    engine.clear_caches()
    marks = []
    engine.segment(image, "metal plate", progress=lambda s, f: marks.append((time.perf_counter(), s, f)))
    for stage in ("clip", "sam encoder"):
        times = [t for t, s, _ in marks if s == stage]
        end = next(t for t, s, _ in marks if t > times[-1] and s != stage)
        still = max(b - a for a, b in zip(times, times[1:] + [end]))
        print(f"progress, {stage}: {len(times)} reports in {end - times[0]:.2f} s, longest without one "
              f"{1000 * still:.0f} ms")

    # --- SAM weights identified by a file (random values), so the on-disk embedding cache applies
    import torch

    sam_file = work / "sam_random.pth"
    torch.save(engine.sam.model.state_dict(), sam_file)
    config = config.replace(sam_weights=str(sam_file))
    engine = build(config)

    # --- the dock: run, then move one point N times
    source = viewer.add_image(image, name="plate")
    widget._engine = engine  # the engine built above (the dock would build the same from its settings)
    c = widget.c
    c.object_name.setText("metal plate")
    widget.select_source(source)

    def wait(cond, timeout=600):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.005)

    c.run.click()
    wait(lambda: not widget.busy)
    out = widget.outputs_for(source)
    rough = out.rough.data
    c.prompt_threshold.setValue(float(np.quantile(rough, 0.995)))
    c.run.click()
    wait(lambda: not widget.busy)
    loop = widget.correction_for(source)
    wait(lambda: not loop.busy)
    print(f"{len(out.prompts.data)} prompt point(s), {int(out.masks.data.max())} object(s) after the run")
    latencies = []
    for k in range(args.edits):
        data = np.asarray(out.prompts.data).copy()
        if not len(data):
            out.prompts.add([100.0, 100.0])
        else:
            data[0] += 2.0  # a new position every time: nothing is served from the decoder memo
            out.prompts.data = data
        loop.last_latency = None
        wait(lambda: loop.last_latency is not None and not loop.busy)
        latencies.append(loop.last_latency)
        print(f"edit {k + 1}: refined masks {1000 * loop.last_latency:.0f} ms after the edit "
              f"(decode {1000 * loop.last_compute:.0f} ms, 150 ms debounce)")
    print(f"edit → masks: min {1000 * min(latencies):.0f} ms, median {1000 * sorted(latencies)[len(latencies) // 2]:.0f} ms")

    # --- on-disk embedding cache: a new engine (a new session) reopening the image
    store = work / "cache" / "embeddings"
    files = list(store.glob("*.npy"))
    print(f"embedding cache: {len(files)} file(s), {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB")
    cold = build(config.replace(embedding_cache_bytes=0))
    t0 = time.perf_counter()
    cold.segment(image, "metal plate")
    t_cold = time.perf_counter() - t0
    del cold
    reopened = build(config)
    t0 = time.perf_counter()
    reopened.segment(image, "metal plate")
    t_warm = time.perf_counter() - t0
    print(f"reopen in a new session: {t_warm:.2f} s with the disk cache (SAM encoder runs "
          f"{reopened.cache_info().sam_embeddings.misses}) vs {t_cold:.2f} s without")
    viewer.close()


if __name__ == "__main__":
    main()
