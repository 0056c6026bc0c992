"""The plugin in the order users meet it, each flow in a fresh process (nothing this test session imported
can hide an import-order crash): viewer first, widget from the npe2 manifest, torch loaded by the dock in the background."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FLOWS = Path(__file__).parent / "flows"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """local-dir CLIP and SAM folders with tiny random weights (the widget loads them like real ones)."""
    from napari_clipsam.testing import write_tiny_clip, write_tiny_sam

    root = tmp_path_factory.mktemp("weights")
    return write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One folder of converted (OpenVINO) models for the flows of a module: the first flow converts the tiny
    models as a new user's first Run does, the others find them converted, as a user's later sessions do."""
    return tmp_path_factory.mktemp("openvino")


def run_flow(script: str, *args, tmp_path: Path, timeout: int = 300, converted: Path | None = None,
             **env_extra: str) -> str:
    if converted is not None:  # the flow's own cache folder, with the module's converted models in it
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "openvino").symlink_to(converted, target_is_directory=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NAPARI_CLIPSAM_CONFIG_DIR=str(tmp_path / "config"),
               NAPARI_CLIPSAM_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               NAPARI_ENSURE_PLUGIN_MAIN_THREAD="1")  # napari refuses changes to its state from other threads
    env.update(env_extra)
    env.pop("QT_QPA_PLATFORM", None)
    assert env.get("DISPLAY"), "napari needs a display: run the tests with pytest-xvfb installed (dev extra)"
    proc = subprocess.run([sys.executable, str(FLOWS / script), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "[flow] ok" in out, f"exit {proc.returncode}:\n{out[-6000:]}"
    return out


def test_open_run_edit_refine_export_in_real_order(tiny_weights, converted, tmp_path):
    clip_dir, sam_dir = tiny_weights
    out = run_flow("plugin_real_order.py", clip_dir, sam_dir, tmp_path / "export", tmp_path=tmp_path,
                   converted=converted)
    assert "opened from the manifest: ClipSAMWidget" in out
    assert "refined" in out and "exported" in out


@pytest.mark.slow  # a second napari process (~20 s); the review in-process: test_widget_review.py
def test_folder_review_in_real_order(tiny_weights, converted, tmp_path):
    import tifffile
    from PIL import Image

    from napari_clipsam.data.synthetic import synthetic_image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(synthetic_image("part", "crack", size=96, seed=1)[0]).save(images / "a.png")
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    stack = np.stack([synthetic_image("part", "crack", size=96, seed=s)[0][..., 0] for s in (2, 3)])
    tifffile.imwrite(images / "c.tif", stack)
    clip_dir, sam_dir = tiny_weights
    out = run_flow("folder_review.py", clip_dir, sam_dir, images, tmp_path / "labels", tmp_path=tmp_path,
                   converted=converted)
    assert "multi-frame c.tif accepted" in out


@pytest.mark.slow  # a napari process (~22 s) for a crash llvmpipe showed once on a fresh machine
def test_review_switching_rgb_and_gray_does_not_crash(tiny_weights, converted, tmp_path):
    from PIL import Image

    from napari_clipsam.data.synthetic import synthetic_image

    images = tmp_path / "images"
    images.mkdir()
    rgb = [synthetic_image("part", "crack", size=64, seed=s)[0] for s in (1, 2, 3, 4)]
    Image.fromarray(rgb[0]).save(images / "a.png")
    Image.fromarray(rgb[1][..., 0]).save(images / "b.png")
    Image.fromarray(rgb[2]).save(images / "c.png")
    Image.fromarray((rgb[3][..., 0].astype(np.uint16) * 257)).save(images / "d.png")
    clip_dir, sam_dir = tiny_weights
    # the crash happens when llvmpipe compiles a new shader: a warm shader cache (any earlier napari run on this
    # machine) hides it, so the flow gets an empty one, as on a fresh CI machine
    run_flow("review_rgb_gray.py", clip_dir, sam_dir, images, tmp_path / "labels", tmp_path=tmp_path,
             converted=converted, MESA_SHADER_CACHE_DIR=str(tmp_path / "mesa-shader-cache"))
