"""CLIP float32 against bfloat16 on OpenVINO, on maps with contrast (few-shot and folder mutual), per category.

Runs :func:`napari_clipsam.bench.clip_precision.compare_precisions` for the tiny random CLIP (224 px, the issue-20
proxies' geometry) and, with ``--real``, the real ViT-B/16 and ViT-L/14@336 architectures with random weights
(architecture matters for bf16 error: depth, width, LayerNorm scale). SAM is the tiny one in float32 for both
precisions, so only CLIP differs. Prints one line per (architecture, mode, category), then the worst figures
against :data:`napari_clipsam.engine.backends.clip_bf16.BOUNDS`; ``--json FILE`` writes everything.

    HF_HUB_OFFLINE=1 python scripts/clip_bf16_fidelity.py [--real] [--categories metal,pcb] [--json out.json]

Needs OpenVINO and a CPU with native bf16 (elsewhere bf16 is emulated, and ``auto`` never picks it).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHITECTURES = {
    # name: (open_clip model, input px, feature layers, few-shot references, good, defective test images)
    "tiny": (None, 224, (1, 2, 3, 4), 4, 6, 14),
    "ViT-B-16": ("ViT-B-16-quickgelu", 224, (3, 6, 9, 12), 4, 3, 7),
    "ViT-L-14-336": ("ViT-L-14-336-quickgelu", 336, (6, 12, 18, 24), 2, 2, 4),
}


def models(arch: str):
    from napari_clipsam.heavy_imports import prepare_heavy_imports
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam, seeded

    prepare_heavy_imports()
    name, size = ARCHITECTURES[arch][:2]
    if name is None:
        clip, tok = make_tiny_clip(0, image_size=size)
    else:
        import open_clip

        with seeded(0):
            clip = open_clip.create_model(name, pretrained=None).eval()
        tok = open_clip.get_tokenizer(name)
    return clip, tok, make_tiny_sam(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", action="store_true", help="also the real ViT-B/16 and ViT-L/14@336 architectures")
    p.add_argument("--only", default="", help="comma-separated architectures (tiny, ViT-B-16, ViT-L-14-336)")
    p.add_argument("--categories", default="", help="comma-separated (default: all for tiny, metal,pcb for real)")
    p.add_argument("--modes", default="fewshot,mutual")
    p.add_argument("--cache", default="", help="converted-model cache folder (default: a temporary one)")
    p.add_argument("--json", default="")
    args = p.parse_args()
    os.environ["NAPARI_CLIPSAM_CACHE"] = args.cache or tempfile.mkdtemp(prefix="clip-bf16-")

    import torch

    from napari_clipsam.bench.clip_precision import build_pair, compare_precisions, worst
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import CATEGORIES
    from napari_clipsam.engine.backends import detect_cpu
    from napari_clipsam.engine.backends.clip_bf16 import BOUNDS, within_bounds

    cpu = detect_cpu()
    print(f"CPU {cpu.model} (native bf16: {cpu.bf16_native}, {cpu.bf16_source}); {torch.get_num_threads()} threads")
    archs = [a for a in (args.only.split(",") if args.only else
                         (list(ARCHITECTURES) if args.real else ["tiny"])) if a]
    out = {"cpu": cpu.as_dict(), "bounds": BOUNDS, "architectures": {}}
    for arch in archs:
        _, size, layers, refs, good, bad = ARCHITECTURES[arch]
        cats = (args.categories.split(",") if args.categories else
                (list(CATEGORIES) if arch == "tiny" else ["metal", "pcb"]))
        clip, tok, sam = models(arch)
        cfg = ClipSAMConfig(image_size=size, feature_layers=layers, device="cpu", fewshot_augment=arch == "tiny",
                            mutual_min_images=min(5, good + bad))
        engines = build_pair(clip, tok, sam, cfg)
        t0 = time.perf_counter()
        for eng in engines.values():
            eng.vision.tower.encoder_for(tuple(i - 1 for i in layers), "NCHW", False).prepare()
        print(f"{arch}: converted and compiled in {time.perf_counter() - t0:.0f} s; {refs} references, "
              f"{good} good + {bad} defective images of {', '.join(cats)}")
        t0 = time.perf_counter()
        figures = compare_precisions(engines, cats, refs=refs, good=good, defective=bad,
                                     modes=tuple(args.modes.split(",")))
        w = worst(figures)
        ok, why = within_bounds(w)
        print(f"{arch}: worst {json.dumps({k: round(v, 6) for k, v in w.items()})} → "
              f"{'within the bounds' if ok else 'outside the bounds: ' + why} ({time.perf_counter() - t0:.0f} s)")
        out["architectures"][arch] = {"figures": figures, "worst": w, "within_bounds": ok, "why": why}
        del engines, clip, sam
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
