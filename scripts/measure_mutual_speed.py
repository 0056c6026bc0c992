"""Folder mutual scoring before / after the blocked float32 path, against the cpu preset's encoders, in one run.

Builds the cpu preset's real architectures with random weights (``--backend``: the encoders' backend, default
auto), times CLIP vision + SAM image encoder on one 512 px synthetic image after a warm-up, then on synthetic tokens
of the engine's real shapes: the per-radius paths (fp32 and bf16, what ``mutual_precision`` ran before) on a
folder of ``--before-images`` images, and the bench's mutual rows (``napari_clipsam.bench.mutual.mutual_row``).
Prints every line as it goes; ``--json`` keeps the figures.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/measure_mutual_speed.py --json /tmp/mutual.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from napari_clipsam.bench.mutual import _feats, mutual_row
from napari_clipsam.bench.stages import synthetic_images
from napari_clipsam.bench.timing import timed
from napari_clipsam.clip import mutual
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.engine.clipsam import ClipSAM


def per_radius(layers, radii, subset, fast):
    """The per-(layer, r) path: one query block against every image per radius (fp32 when not ``fast``)."""
    N, _, h, w = layers[0].shape
    total = torch.zeros(N, h * w)
    for t in layers:
        for r in radii:
            total += mutual.interval_scores(mutual.prepare_tokens(t, r), 0.3, subset, None, None, fast)
    return total / (len(layers) * len(radii))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--before-images", type=int, default=20)
    ap.add_argument("--memory-images", type=int, default=500)
    ap.add_argument("--json")
    a = ap.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()}", flush=True)
    cfg = ClipSAMConfig.preset("cpu", clip_weights="random", sam_weights="random", backend=a.backend, device="cpu")
    engine = ClipSAM.from_config(cfg)
    warm, img = synthetic_images(2, 512)
    with engine.autocast():
        engine.clip_features([warm])
        engine.sam.embed(warm)
        t_clip, _ = timed(lambda: engine.clip_features([img]), None)
        t_sam, _ = timed(lambda: engine.sam.embed(img), None)
    plan = engine.backend.plan
    enc = t_clip + t_sam
    print(f"encoders on {plan.name} (SAM {plan.sam_precision}, CLIP {plan.clip_precision}): CLIP {t_clip:.2f} s + "
          f"SAM {t_sam:.2f} s = {enc:.2f} s an image", flush=True)
    ecfg = engine.config
    grid, width, L = engine.vision.grid, engine.vision.width, len(ecfg.feature_layers)
    radii, subset = tuple(ecfg.mutual_radii), ecfg.mutual_subset_size
    del engine
    out = {"encoders": {"clip_s": t_clip, "sam_s": t_sam, "backend": plan.describe()}, "before": {}}
    n = a.before_images
    f = _feats(n, width, grid, L)
    new, s_new = timed(lambda: mutual.mutual_scores(f, radii=radii, subset_size=subset), None)
    for name, fast in (("per-radius fp32", False), ("per-radius bf16 + fp32 re-check", True)):
        t, s = timed(lambda: per_radius(f, radii, subset, fast), None)
        diff = float((s.view_as(s_new) - s_new).abs().max())
        out["before"][name] = {"images": n, "mutual_s": t, "ratio_to_encoders": t / (n * enc),
                               "max_abs_diff_to_blocked": diff}
        print(f"{name}, {n} images: {t:.1f} s = {100 * t / (n * enc):.1f} % of the encoders; blocked fp32 "
              f"{new:.1f} s ({t / new:.2f}× faster); max |Δ| {diff:.1e}", flush=True)
    del f
    out["after"] = mutual_row(enc, grid=grid, width=width, layers=L, radii=radii, subset=subset,
                              memory_images=a.memory_images, log=lambda s: print(s, flush=True))
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
