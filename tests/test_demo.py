"""``napari-clipsam demo``: tiny random models written once, the demo's own settings (the person's untouched),
and napari opened with the dock on them; and the default config fitting a CLIP shallower than ViT-L."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from test_plugin_flows import run_flow


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "napari_clipsam", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))


def test_demo_writes_models_and_its_own_settings_once(tmp_path):
    proc = _cli("demo", "--no-viewer", "--models", tmp_path / "demo")
    assert proc.returncode == 0, proc.stderr
    assert "interface only" in proc.stdout and "napari_clipsam.widget.demo" in proc.stdout
    settings = json.loads((tmp_path / "demo" / "settings" / "widget.json").read_text())
    assert settings["clip_weights"] == str(tmp_path / "demo" / "clip")
    assert (tmp_path / "demo" / "clip" / "open_clip_config.json").is_file()
    assert (tmp_path / "demo" / "sam" / "sam.pth").is_file()
    weights = tmp_path / "demo" / "clip" / "open_clip_pytorch_model.bin"
    stamp = weights.stat().st_mtime_ns
    assert _cli("demo", "--no-viewer", "--models", tmp_path / "demo").returncode == 0
    assert weights.stat().st_mtime_ns == stamp  # written once


def test_demo_refuses_a_file_for_its_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _cli("demo", "--no-viewer", "--models", tmp_path / "f")
    assert proc.returncode == 2 and "is a file" in proc.stderr


@pytest.mark.slow  # a napari process (~20 s); the demo's files and its shallow-CLIP fit: the default run
def test_demo_opens_the_dock_on_its_models_and_runs(tmp_path):
    assert _cli("demo", "--no-viewer", "--models", tmp_path / "demo").returncode == 0
    (tmp_path / "config").mkdir()  # run_flow points NAPARI_CLIPSAM_CONFIG_DIR here, as `demo` does at its settings
    (tmp_path / "config" / "widget.json").write_bytes((tmp_path / "demo" / "settings" / "widget.json").read_bytes())
    out = run_flow("demo_interface.py", tmp_path / "demo" / "clip", tmp_path / "demo" / "sam", tmp_path=tmp_path)
    assert "few-shot run on the demo models: layers (1, 2, 3, 4)" in out


def test_default_layers_fit_a_shallow_clip_for_few_shot_and_say_so():
    from napari_clipsam import ClipSAM, ClipSAMConfig
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.engine.identity import layers_for_depth
    from napari_clipsam.errors import ConfigError
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    assert layers_for_depth((6, 12, 18, 24), 24) == (6, 12, 18, 24)
    assert layers_for_depth((6, 12, 18, 24), 12) == (3, 6, 9, 12)
    assert layers_for_depth((6, 12, 18, 24), 4) == (1, 2, 3, 4)
    assert layers_for_depth((6, 12, 18, 24), 2) == (1, 2)
    clip, tok = make_tiny_clip()
    sam = make_tiny_sam()
    with pytest.warns(UserWarning, match="depth"):
        engine = ClipSAM.from_models(clip, tok, sam, None, ClipSAMConfig(image_size=56, device="cpu", backend="torch"))
    assert engine.config.feature_layers == (1, 2, 3, 4)
    assert engine.identity["config_replaced"]["feature_layers"] == {"config": [6, 12, 18, 24], "model": [1, 2, 3, 4]}
    good = [synthetic_image("metal", None, 64, seed)[0] for seed in (1, 2)]
    engine.set_normal_references(good, "metal")
    image, _ = synthetic_image("metal", "scratch", 64, 3)
    assert np.isfinite(engine.segment(image, "metal").rough_map).all()
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="feature_layers"):
        warnings.simplefilter("ignore")
        ClipSAM.from_models(clip, tok, sam, None, ClipSAMConfig(image_size=56, feature_layers=(2, 9), device="cpu",
                                                                backend="torch"))
