"""OpenVINO against torch on the real architectures (random weights): SAM vit_b at 1024 px and CLIP
ViT-L/14@336 (features of blocks 6/12/18/24). Converting them takes minutes, so these run only on request::

    python -m pytest -n 0 -s -m slow tests/test_backends_full.py     # -s prints the measured figures
"""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.engine.backends.fidelity import cosine, relative_l2, sam_mask_ious
from napari_clipsam.engine.backends.openvino_runtime import openvino_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not openvino_available(), reason="OpenVINO is an optional extra")]


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path_factory.mktemp("ov-full")))
        yield


def _precisions():
    from napari_clipsam.engine.backends.cpu_features import detect_cpu

    return ["float32", "bfloat16"] if detect_cpu().bf16_native else ["float32"]


def test_sam_vit_b_openvino_matches_torch(ov_cache):
    import torch

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoSamEncoder
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.mmr.sam_decoder import SamRunner
    from napari_clipsam.weights.sam_arch import OFFICIAL, build_sam

    torch.manual_seed(0)
    sam = build_sam(OFFICIAL["vit_b"]).eval()
    image = synthetic_image("metal", "scratch", size=512, seed=1)[0]
    ref = SamRunner(sam)
    e_ref = ref.embed(image)
    for prec in _precisions():
        ov = SamRunner(sam)
        ov.encoder = OpenVinoSamEncoder(sam.image_encoder, {"model": "vit_b", "weights": "random-seed-0"}, prec,
                                        attention_bands=ClipSAMConfig().sam_attention_bands)  # as the engine
        e_ov = ov.embed(image)
        ious = sam_mask_ious(ov, e_ov, ref, e_ref, image.shape[:2])
        cos, rel = cosine(e_ov.features, e_ref.features), relative_l2(e_ov.features, e_ref.features)
        print(f"\nSAM vit_b {prec}: embedding cosine {cos:.6f}, relative L2 {rel:.2e}, "
              f"mask IoU min {min(ious):.4f} mean {np.mean(ious):.4f} ({len(ious)} masks)")
        assert cos >= 0.999 and min(ious) >= 0.98
        if prec == "float32":
            assert rel <= 1e-4


def test_clip_vit_l_336_openvino_matches_torch(ov_cache):
    import open_clip
    import torch

    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoClipTower
    from napari_clipsam.clip.vision import ClipVision
    from napari_clipsam.data.synthetic import synthetic_image

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-L-14-336-quickgelu", pretrained=None).eval()
    vision = ClipVision(model)
    x = vision.preprocess([synthetic_image("wood", "stain", size=400, seed=2)[0]])
    layers = (6, 12, 18, 24)
    with torch.no_grad():
        ref = vision.patch_tokens(x, layers)
        for prec in _precisions():
            vision.tower = OpenVinoClipTower(vision.visual, 336, {"model": "ViT-L-14-336", "weights": "random-0"}, prec)
            got = vision.patch_tokens(x, layers)
            vision.tower = None
            figures = [(cosine(g, r), relative_l2(g, r)) for g, r in zip(got, ref)]
            print(f"\nCLIP ViT-L/14@336 {prec}: per layer (cosine, relative L2) "
                  + ", ".join(f"{layer}: ({c:.6f}, {e:.1e})" for layer, (c, e) in zip(layers, figures)))
            for c, e in figures:
                assert c >= 0.9999 and e <= (1e-4 if prec == "float32" else 0.01)
