"""Tiny random-initialised models built with the real open_clip and segment_anything classes.

They load through exactly the same ``local-dir:`` code paths as real weights and run in milliseconds on a CPU:
for the tests (:mod:`napari_clipsam.testing`), the README screenshot and ``napari-clipsam demo`` (the interface
without any download; the maps are random).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from ..heavy_imports import prepare_heavy_imports, wait_for_preload

TINY_CLIP_NAME = "clipsam-tiny"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 56, "layers": 4, "width": 64, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_SAM_CFG = dict(image_size=256, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                    encoder_global_attn_indexes=[1], window_size=4, prompt_embed_dim=32, decoder_depth=1,
                    decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


@contextmanager
def seeded(seed: int):
    """torch's global (CPU) RNG seeded with ``seed`` inside the block and given back as it was afterwards, so
    building a tiny model gives the same weights every time and does not reseed the code that builds it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a ``local-dir:`` CLIP folder (open_clip_config.json + open_clip_pytorch_model.bin)."""
    prepare_heavy_imports()
    wait_for_preload()  # the dock's background import of the same stack
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    with seeded(seed):
        model = open_clip.CLIP(**TINY_CLIP_CFG)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def make_tiny_clip(seed: int = 0, image_size: int = 56):
    """(model, tokenizer): an open_clip ``CLIP`` with the tiny config, random weights, QuickGELU."""
    prepare_heavy_imports()
    wait_for_preload()  # the dock's background import of the same stack
    import open_clip

    cfg = json.loads(json.dumps(TINY_CLIP_CFG))
    cfg["vision_cfg"]["image_size"] = image_size
    with seeded(seed):
        model = open_clip.CLIP(**cfg).eval()
    return model, open_clip.get_tokenizer("ViT-B-32")


def make_tiny_sam(seed: int = 0, **overrides):
    """A ``segment_anything.modeling.Sam`` with a tiny 256-px geometry and random weights."""
    prepare_heavy_imports()
    wait_for_preload()  # the dock's background import of the same stack
    from .sam_arch import build_sam

    with seeded(seed):
        return build_sam({**TINY_SAM_CFG, **overrides})


def write_tiny_sam(folder: str | Path, seed: int = 0) -> Path:
    """Write a ``local-dir:`` SAM folder (sam_config.json + sam.pth) with the tiny geometry."""
    from .sam_arch import save_local_dir

    return save_local_dir(folder, make_tiny_sam(seed), TINY_SAM_CFG)
