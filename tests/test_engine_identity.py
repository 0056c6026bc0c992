"""Building an engine: only unnamed weights are fingerprinted, and a config that disagrees with the models is
either refused (a value the caller chose) or changed with a warning and recorded (a default)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_clipsam import clip as clip_package
from napari_clipsam.clip.text_encoder import weights_fingerprint
from napari_clipsam.clip.umci import UMCI
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.errors import ConfigError
from napari_clipsam.engine.clipsam import ClipSAM
from napari_clipsam.testing import make_tiny_clip, make_tiny_sam, tiny_config

TINY = dict(device="cpu", backend="torch", umci_heads=4)


@pytest.fixture
def no_fingerprints(monkeypatch):
    """Fail the test if any weights are fingerprinted (hashed tensor by tensor)."""
    def refuse(module):
        raise AssertionError(f"{type(module).__name__} was fingerprinted although its identity was given")

    monkeypatch.setattr(clip_package.text_encoder, "weights_fingerprint", refuse)


def test_loaded_weights_are_identified_by_their_files_not_hashed(tmp_path, no_fingerprints):
    engine = ClipSAM.from_config(tiny_config(tmp_path))
    assert engine.identity["clip_weights"].startswith("sha256:")
    assert engine.identity["sam_weights"].startswith("sha256:")
    assert engine.identity["umci_weights"] is None


def test_a_given_identity_is_used_and_only_the_missing_weights_are_fingerprinted():
    clip, tok = make_tiny_clip(seed=0)
    sam = make_tiny_sam(seed=0)
    cfg = ClipSAMConfig(image_size=56, feature_layers=(1, 2, 3, 4), **TINY)
    partial = ClipSAM(clip, tok, sam, None, cfg, identity={"clip_model": "mine", "clip_weights": "sha256:abc"})
    assert partial.identity["clip_weights"] == "sha256:abc"
    assert partial.identity["sam_weights"] == "fingerprint:" + weights_fingerprint(sam)
    again = ClipSAM(make_tiny_clip(seed=0)[0], tok, make_tiny_sam(seed=0), None, cfg)
    assert again.identity["clip_weights"] == "fingerprint:" + weights_fingerprint(clip)  # same weights, same id
    with torch.no_grad():
        next(sam.parameters()).view(-1)[0] += 1.0
    assert "fingerprint:" + weights_fingerprint(sam) != again.identity["sam_weights"]  # one weight changed


def test_a_chosen_value_the_models_contradict_is_refused():
    clip, tok = make_tiny_clip(image_size=56)
    with pytest.raises(ConfigError, match=r"image_size = 224 contradicts.*fix it to 56.*CLIP model's input size"):
        ClipSAM.from_models(clip, tok, make_tiny_sam(), None,
                            ClipSAMConfig(image_size=224, feature_layers=(1, 2, 3, 4), **TINY))
    head = UMCI(64, 32, (1, 2, 3, 4), heads=4)
    with pytest.raises(ConfigError, match=r"feature_layers = \(2, 4\) contradicts.*\(1, 2, 3, 4\)"):
        ClipSAM.from_models(clip, tok, make_tiny_sam(), head,
                            ClipSAMConfig(image_size=56, feature_layers=(2, 4), **TINY))


def test_a_default_the_models_contradict_is_replaced_with_a_warning_and_recorded():
    clip, tok = make_tiny_clip(image_size=56)
    head = UMCI(64, 32, (1, 2, 3, 4), heads=4)
    default = ClipSAMConfig()
    with pytest.warns(UserWarning, match=rf"image_size {default.image_size} → 56.*feature_layers"):
        engine = ClipSAM.from_models(clip, tok, make_tiny_sam(), head, ClipSAMConfig(**TINY))
    assert (engine.config.image_size, engine.config.feature_layers) == (56, (1, 2, 3, 4))
    rgb = np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    result = engine.segment(rgb, "bottle")
    replaced = {"image_size": {"config": default.image_size, "model": 56},
                "feature_layers": {"config": list(default.feature_layers), "model": [1, 2, 3, 4]}}
    assert result.provenance["config_replaced"] == replaced
    assert result.provenance["thresholds"]["image_size"] == 56
    assert engine.refine(result, points=[[10, 10]]).provenance["config_replaced"] == replaced


def test_models_without_a_config_need_no_replacement():
    clip, tok = make_tiny_clip(image_size=84)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = ClipSAM.from_models(clip, tok, make_tiny_sam())
    assert engine.config.image_size == 84 and "config_replaced" not in engine.identity
