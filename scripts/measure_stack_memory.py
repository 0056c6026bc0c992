"""Memory a napari dock holds for a stack: Run on every frame of an N-frame stack, then measure.

Viewer first, then the dock, then the engine (a tiny random CLIP, and a SAM with ViT-B/16's real geometry — 1024 px
input, 256×64×64 embeddings, the full mask decoder — but one encoder block, so 20 frames encode in seconds).
Reports the peak resident memory of the process above what it held before the Run, and the bytes the dock's
results hold (NumPy arrays and torch tensors reachable from them, each counted once).

    xvfb-run -a python scripts/measure_stack_memory.py [--frames 20] [--size 512]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def held_bytes(objs) -> int:
    """Bytes of the arrays and tensors reachable from ``objs`` through dataclass fields, dicts, lists and tuples."""
    import dataclasses

    import numpy as np
    import torch

    seen, total, todo = set(), 0, list(objs)
    while todo:
        o = todo.pop()
        if id(o) in seen or o is None:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            total += o.nbytes
        elif isinstance(o, torch.Tensor):
            total += o.untyped_storage().nbytes()
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            todo += [getattr(o, f.name) for f in dataclasses.fields(o)]
        elif isinstance(o, dict):
            todo += list(o.keys()) + list(o.values())
        elif isinstance(o, (list, tuple)):
            todo += list(o)
    return total


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    os.environ["NAPARI_CLIPSAM_CACHE"] = str(work / "cache")
    os.environ["NAPARI_CLIPSAM_CONFIG_DIR"] = str(work / "config")

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    from napari_clipsam.widget import ClipSAMWidget

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    clip, tok = make_tiny_clip(image_size=224)
    sam = make_tiny_sam(image_size=1024, encoder_embed_dim=768, encoder_depth=1, encoder_num_heads=12,
                        encoder_global_attn_indexes=[0], window_size=14, prompt_embed_dim=256, decoder_depth=2,
                        decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256)
    engine = ClipSAM(clip, tok, sam, config=ClipSAMConfig(feature_layers=(1, 2, 3, 4), device="cpu",
                                                          image_size=224, backend="torch"))
    widget = ClipSAMWidget(viewer, engine=engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.c.object_name.setText("metal plate")
    stack = np.stack([synthetic_image("metal", "scratch", size=args.size, seed=s)[0] for s in range(args.frames)])
    rough = engine.rough_maps_for_images([stack[0]], "metal plate")[0]  # random weights: pick τ_prompt from its range
    widget.c.prompt_threshold.setValue(float(np.quantile(rough, 0.98)))
    widget.c.mask_threshold.setValue(0.3)
    src = viewer.add_image(stack, name="stack", rgb=True)
    widget.c.all_frames.setChecked(True)
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
    before = rss_mib()
    t0 = time.perf_counter()
    assert widget.run(source=src)
    while widget.busy:
        app.processEvents()
        time.sleep(0.02)
    took = time.perf_counter() - t0
    for _ in range(20):
        app.processEvents()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outputs = widget.outputs_for(src) if hasattr(widget, "outputs_for") else widget.current_outputs()
    results = outputs.results
    n = sum(r.num_instances for r in results.values())
    print(f"{args.frames} frames of {args.size}² ({n} instances, run {took:.1f} s): {widget.status[:80]}")
    print(f"results held by the dock: {held_bytes(results.values()) / 2**20:.1f} MiB "
          f"({held_bytes(results.values()) / 2**20 / len(results):.2f} MiB per frame)")
    if hasattr(engine, "cache_info"):
        info = engine.cache_info()
        print(f"engine cache: {info.bytes / 2**20:.1f} MiB in {info.entries} entries "
              f"(bound {info.max_bytes / 2**20:.0f} MiB)")
    print(f"resident memory: {before:.0f} MiB before the Run, peak {peak:.0f} MiB (+{peak - before:.0f} MiB), "
          f"after {rss_mib():.0f} MiB (+{rss_mib() - before:.0f} MiB)")
    viewer.close()


if __name__ == "__main__":
    main()
