"""SAM image encoder int8 (NNCF) vs bf16 vs fp32 on OpenVINO: mask IoU against fp32 on fixed prompts, encoder time.

Random weights (no downloads here): ``--model vit_b`` builds the real vit_b architecture with random weights,
``--model tiny`` the tests' tiny SAM. Ratios are from one run on one machine.
Usage: python scripts/measure_int8_sam.py [--model vit_b|tiny] [--repeats 3] [--precisions float32,int8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b", choices=("vit_b", "tiny"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="float32,bfloat16,int8",
                    help="comma-separated; float32 (the reference) is always run first")
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_CLIPSAM_CACHE", tempfile.mkdtemp(prefix="int8-measure-"))
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import CATEGORIES, synthetic_image
    from napari_clipsam.engine.backends.cpu_features import detect_cpu
    from napari_clipsam.engine.backends.fidelity import cosine, mask_iou, fixed_prompts
    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoSamEncoder
    from napari_clipsam.mmr.sam_decoder import SamRunner
    from napari_clipsam.weights.tiny import make_tiny_sam, seeded

    if args.model == "tiny":
        sam = make_tiny_sam(0)
    else:
        from segment_anything import sam_model_registry

        with seeded(0):
            sam = sam_model_registry["vit_b"]()
    sam.eval()
    runner = SamRunner(sam, "measure")
    key = {"model": args.model, "weights": "random-seed0", "architecture": args.model}
    encs = {}
    for prec in ["float32"] + [p for p in args.precisions.split(",") if p and p != "float32"]:
        t = time.perf_counter()
        encs[prec] = OpenVinoSamEncoder(sam.image_encoder, key, prec, prepare_input=lambda im: runner.prepare(im)[0],
                                        attention_bands=ClipSAMConfig().sam_attention_bands)  # as the engine
        encs[prec].prepare()
        print(f"{prec}: prepared in {time.perf_counter() - t:.1f} s", flush=True)
    images = [synthetic_image(c, "crack", size=512, seed=77 + i)[0] for i, c in enumerate(CATEGORIES)]
    times = {p: [] for p in encs}
    ious = {p: {c: [] for c in CATEGORIES} for p in encs}
    coss = {p: [] for p in encs}
    for c, im in zip(CATEGORIES, images):
        embs = {}
        for prec, enc in encs.items():
            runner.encoder = enc
            for r in range(args.repeats):
                t = time.perf_counter()
                embs[prec] = runner.embed(im)
                times[prec].append(time.perf_counter() - t)
        pts, labels, boxes = fixed_prompts(im.shape[:2], n=9)
        ref = [runner.decode(embs["float32"], points=pts, point_labels=labels)[0],
               runner.decode(embs["float32"], boxes=boxes)[0]]
        for prec in encs:
            coss[prec].append(cosine(embs[prec].features, embs["float32"].features))
            got = [runner.decode(embs[prec], points=pts, point_labels=labels)[0],
                   runner.decode(embs[prec], boxes=boxes)[0]]
            for a, b in zip(got, ref):
                ious[prec][c] += [mask_iou(x, y) for x, y in zip(a.reshape(-1, *im.shape[:2]),
                                                                  b.reshape(-1, *im.shape[:2]))]
    cpu = detect_cpu()
    print(f"\nSAM {args.model} (random weights), CPU {cpu.model} flags {' '.join(cpu.flags)}, "
          f"{torch.get_num_threads()} threads, {args.repeats} runs per image, 5 images 512 px")
    base = float(np.median(times["float32"]))
    print("| precision | encoder median s | time / fp32 | emb. cosine min | mask IoU min / mean | per category min |")
    print("|---|---|---|---|---|---|")
    for prec in encs:
        med = float(np.median(times[prec]))
        allv = [v for vs in ious[prec].values() for v in vs]
        per = ", ".join(f"{c} {min(v):.3f}" for c, v in ious[prec].items())
        print(f"| {prec} | {med:.3f} | {med / base:.2f} | {min(coss[prec]):.5f} | {min(allv):.3f} / "
              f"{np.mean(allv):.4f} | {per} |")


if __name__ == "__main__":
    main()
