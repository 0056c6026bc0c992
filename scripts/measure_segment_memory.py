"""Peak memory of a cold ``segment`` with the OpenVINO encoders, torch copies kept or memory-mapped.

Each variant runs in a child process of its own (so one cannot inherit the other's pages): it loads the preset's
architectures with random weights, prepares the OpenVINO encoders (converted once into ``--cache``; run the
script twice to measure loads, not conversions), then either keeps the torch copies of the encoders in memory
(``keep``) or memory-maps them (``release``: :meth:`EncoderBackend.release_torch_copies`, what
``ClipSAM.from_config`` does), and segments one synthetic image. Reported per variant: the resident memory
before the segment, the peak during it (``VmHWM`` after resetting it through ``/proc/self/clear_refs``) and the
peak of the whole child (loading included: the larger of the two).

    HF_HUB_OFFLINE=1 python scripts/measure_segment_memory.py [--preset cpu] [--size 512] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(variant: str, preset: str, size: int, bands: int) -> dict:
    import gc

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.engine.loading import load_models

    config = ClipSAMConfig.preset(preset, clip_weights="random", sam_weights="random", backend="openvino",
                                  device="cpu", sam_attention_bands=bands)
    clip, tok, sam, umci, config, identity = load_models(config)
    engine = ClipSAM(clip, tok, sam, umci, config, identity=identity)
    engine.backend.prepare(release=variant == "release")  # as ClipSAM.from_config: each copy mapped once compiled
    files = engine.backend.release_torch_copies() if variant == "release" else []  # the files (none new)
    loaded = _status_mib("VmHWM")
    image = synthetic_image("metal", "scratch", size, seed=1)[0]
    gc.collect()
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    result = engine.segment(image, "metal plate")
    return {"variant": variant, "bands": bands, "load_peak_mib": loaded, "rss_before_segment_mib": before,
            "segment_peak_mib": _status_mib("VmHWM"),
            "process_peak_mib": max(loaded, _status_mib("VmHWM")),  # the reset above also resets ru_maxrss
            "spilled_files": [str(f) for f in files], "plan": engine.backend.plan.describe(),
            "mask_pixels": int(result.mask.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--cache", default="", help="napari-clipsam cache folder (converted models, spilled weights)")
    p.add_argument("--variants", default="keep,release")
    p.add_argument("--bands", type=int, default=0, help="sam_attention_bands (0: the config's default)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.child:
        from napari_clipsam.config import ClipSAMConfig

        print(json.dumps(child(args.child, args.preset, args.size, args.bands or ClipSAMConfig().sam_attention_bands)))
        return
    env = dict(os.environ)
    if args.cache:
        env["NAPARI_CLIPSAM_CACHE"] = args.cache
    out = []
    for variant in args.variants.split(","):
        run = subprocess.run([sys.executable, __file__, "--child", variant, "--preset", args.preset, "--size",
                              str(args.size), "--bands", str(args.bands)], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{variant}: child failed\n{run.stderr[-3000:]}")
        fig = json.loads(run.stdout.strip().splitlines()[-1])
        out.append(fig)
        print(f"{variant:<8} bands {fig['bands']}: load peak {fig['load_peak_mib']:.0f} MiB, RSS before segment {fig['rss_before_segment_mib']:.0f} MiB, peak during segment "
              f"{fig['segment_peak_mib']:.0f} MiB, process peak {fig['process_peak_mib']:.0f} MiB "
              f"(SAM {fig['plan']['sam_precision']}, CLIP {fig['plan']['clip_precision']}; "
              f"{fig['mask_pixels']} mask pixels)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
