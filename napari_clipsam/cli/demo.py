"""``napari-clipsam demo``: try the plugin without downloading anything (tiny random models, interface only).

Writes a tiny random-weight CLIP and SAM (the real open_clip and segment_anything classes, loaded by the same
``local-dir:`` code path as real weights) and the demo's own widget settings pointing at them, then opens napari
with the ClipSAM dock on a sample image. The maps and masks are random: this shows the interface, not ClipSAM's
detection. The person's own widget settings are not touched (the demo uses ``NAPARI_CLIPSAM_CONFIG_DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS = {"object_name": "metal plate", "backend": "torch", "prompt_threshold": 0.03}
"""The demo's widget settings (besides the model folders): torch, as converting even a tiny model to OpenVINO
costs more than it saves; a threshold at which the random maps give some objects to edit (the tiny models'
training-free map of the metal sample spans about 0.016–0.034, so the default 0.5 finds nothing; the demo's
test checks that the first Run finds objects)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="open napari with tiny random models: the interface only, no download",
                              description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None)
    p.add_argument("--models", type=Path, default=None, metavar="FOLDER",
                   help="where to write the tiny models and the demo's settings "
                        "(default: the cache folder's demo/, see NAPARI_CLIPSAM_CACHE)")
    p.add_argument("--no-viewer", dest="viewer", action="store_false",
                   help="only write the models and settings, and print how to open napari with them")
    p.set_defaults(func=run)
    return p


def prepare(folder: Path) -> tuple[Path, Path, Path]:
    """Write (once) the tiny CLIP and SAM folders and the demo settings under ``folder``:
    ``(clip_dir, sam_dir, settings_dir)``."""
    from ..io.atomic import atomic_file
    from ..weights.tiny import write_tiny_clip, write_tiny_sam

    clip_dir, sam_dir, settings_dir = folder / "clip", folder / "sam", folder / "settings"
    if not (clip_dir / "open_clip_pytorch_model.bin").is_file():
        write_tiny_clip(clip_dir, seed=0)
    if not (sam_dir / "sam.pth").is_file():
        write_tiny_sam(sam_dir, seed=0)
    settings = dict(SETTINGS, clip_weights=str(clip_dir), sam_weights=str(sam_dir))
    with atomic_file(settings_dir / "widget.json") as f:
        f.write(json.dumps(settings, indent=2).encode("utf-8"))
    return clip_dir, sam_dir, settings_dir


def run(args) -> int:
    from ..weights.registry import cache_dir

    folder = (args.models or cache_dir() / "demo").expanduser()
    if folder.exists() and not folder.is_dir():
        print(f"error: --models {folder} is a file; give a folder for the demo's models.", file=sys.stderr)
        return 2
    clip_dir, sam_dir, settings_dir = prepare(folder)
    print(f"demo models (tiny, random weights: the interface only, no real detection):\n"
          f"  CLIP {clip_dir}\n  SAM  {sam_dir}\n  widget settings {settings_dir / 'widget.json'}")
    env = dict(os.environ, NAPARI_CLIPSAM_CONFIG_DIR=str(settings_dir))
    if not args.viewer:
        print(f"open it with: NAPARI_CLIPSAM_CONFIG_DIR={settings_dir} {sys.executable} -m napari_clipsam.widget.demo")
        return 0
    # napari runs in its own process: the viewer's OpenGL context must exist before torch is imported there
    return subprocess.run([sys.executable, "-m", "napari_clipsam.widget.demo"], env=env).returncode
