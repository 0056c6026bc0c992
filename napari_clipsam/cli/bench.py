"""``napari-clipsam bench``: measure the engine on this machine (see napari_clipsam.bench.stages)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import DEFAULT_PRESET, PRESETS, preset_help
from ..config_checks import BACKENDS, DTYPES


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="time every stage and the fast paths on synthetic images",
        description="Builds the preset's real architectures (random weights with --random-weights, so no "
                    "download is needed), runs segment and refine on synthetic images and prints per-stage "
                    "times, the fast-path comparisons (each measured side by side in this run), peak memory, the "
                    "CPU's features, and the encoder backends and precisions side by side (speed and fidelity "
                    "against torch fp32).")
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET, help=preset_help())
    p.add_argument("--random-weights", action="store_true", help="random weights: no download needed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="torch precision of the per-stage figures (default float32; bfloat16 autocast)")
    p.add_argument("--image-px", type=int, default=512, help="side of the synthetic test images (default 512)")
    p.add_argument("--batch", type=int, default=4, help="images in the throughput comparison (default 4)")
    p.add_argument("--umci", action="store_true", help="time with a (random) UMCI head instead of training-free")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="the encoders' backend for the per-stage figures (default auto)")
    p.add_argument("--no-compare-backends", dest="compare_backends", action="store_false",
                   help="skip the side-by-side comparison of backends and precisions (torch fp32 / bf16 autocast, "
                        "OpenVINO fp32 / bf16; interleaved rounds, min and median)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of that comparison (default 3)")
    p.add_argument("--large-px", type=int, default=None,
                   help="also time one large synthetic image of this side (e.g. 4096): tiled CLIP + SAM crops "
                        "against squashed, in seconds per megapixel")
    p.add_argument("--no-mutual", dest="mutual", action="store_false",
                   help="skip the folder mutual-scoring rows (20, 50, 200 images against the encoders' time; "
                        "peak memory of a 500-image run in the CLI's groups: several minutes on 2 cores)")
    p.add_argument("--mutual-memory-images", type=int, default=500, metavar="N",
                   help="images of the mutual-scoring memory row (default 500; 0 skips it)")
    p.add_argument("--json", type=Path, help="write the figures to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..bench.stages import run_benchmark
    from ..errors import WeightsUnavailableError

    try:
        figures = run_benchmark(args.preset, random_weights=args.random_weights, device=args.device,
                                dtype=args.dtype, image_size=args.image_px, batch=args.batch, umci=args.umci,
                                backend=args.backend, compare_backends=args.compare_backends,
                                rounds=max(1, args.rounds), large_px=args.large_px, mutual=args.mutual,
                                mutual_memory_images=max(0, args.mutual_memory_images))
    except WeightsUnavailableError as exc:
        print(f"error: {exc}\n(use --random-weights to benchmark without downloading weights)", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str))
        print(f"figures written to {args.json}")
    return 0
