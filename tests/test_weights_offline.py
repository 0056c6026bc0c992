"""Missing weights: every missing file named in one message (URL, SHA-256, exact path), and a file placed at that
path is found and loaded (the default CLIP and SAM go through ClipSAM's own checksummed download)."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.errors import WeightsUnavailableError
from napari_clipsam.testing import TINY_CLIP_CFG, write_tiny_clip, write_tiny_sam
from napari_clipsam.weights.registry import CLIP_CHECKPOINTS, SAM_CHECKPOINTS, WeightsFile, cache_dir

UNREACHABLE = "http://127.0.0.1:9/weights/"  # the discard port: refused at once, nothing leaves the machine


@pytest.fixture
def offline_registry(monkeypatch, tmp_path):
    """The real registries, with the tiny CLIP architecture as an 'openai' entry and URLs that cannot answer."""
    import open_clip

    cfg = tmp_path / "clipsam-tiny-reg.json"
    cfg.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg)
    clip = WeightsFile("CLIP tiny (test)", "tiny-openai.pt", UNREACHABLE + "tiny-openai.pt", "0" * 64, 0)
    monkeypatch.setitem(CLIP_CHECKPOINTS, ("clipsam-tiny-reg", "openai"), clip)
    sam = dataclasses.replace(SAM_CHECKPOINTS["vit_b"], url=UNREACHABLE + "sam_vit_b_01ec64.pth")
    monkeypatch.setitem(SAM_CHECKPOINTS, "vit_b", sam)
    return clip, sam


def test_every_missing_file_in_one_message(offline_registry):
    from napari_clipsam.engine.clipsam import ClipSAM

    clip, sam = offline_registry
    config = ClipSAMConfig.preset("cpu", clip_model="clipsam-tiny-reg", clip_weights="openai", device="cpu",
                                  image_size=56, feature_layers=(1, 2, 3, 4))
    with pytest.raises(WeightsUnavailableError) as info:
        ClipSAM.from_config(config)
    text = str(info.value)
    assert "2 model file(s)" in text
    for spec, folder in ((clip, cache_dir() / "clip"), (sam, cache_dir() / "sam")):
        assert spec.url in text and spec.sha256 in text and str(folder / spec.filename) in text


def test_a_file_placed_where_the_message_says_is_loaded(offline_registry, tmp_path, monkeypatch):
    from napari_clipsam.engine.clipsam import ClipSAM

    clip, _ = offline_registry
    source = write_tiny_clip(tmp_path / "tiny", seed=3) / "open_clip_pytorch_model.bin"
    data = source.read_bytes()
    placed = cache_dir() / "clip" / clip.filename
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data)
    monkeypatch.setitem(CLIP_CHECKPOINTS, ("clipsam-tiny-reg", "openai"),
                        dataclasses.replace(clip, sha256=hashlib.sha256(data).hexdigest()))
    sam_dir = write_tiny_sam(tmp_path / "sam")
    config = ClipSAMConfig(clip_model="clipsam-tiny-reg", clip_weights="openai", sam_model=f"local-dir:{sam_dir}",
                           device="cpu", image_size=56, feature_layers=(1, 2, 3, 4), backend="torch")
    engine = ClipSAM.from_config(config)
    import torch

    expected = torch.load(source, weights_only=True)["visual.conv1.weight"]
    assert torch.equal(engine.clip_model.visual.conv1.weight, expected)
    assert engine.identity["clip_weights"] == "openai"
    # a placed file with the wrong content is refused by its checksum, never loaded
    placed.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(WeightsUnavailableError, match="SHA-256"):
        ClipSAM.from_config(config)
