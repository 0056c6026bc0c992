"""Sample images for napari's File ▸ Open Sample ▸ ClipSAM menu.

Drawn procedurally by :func:`napari_clipsam.data.synthetic.synthetic_image` (no download): every call returns
the same pixels. Each function returns napari layer-data tuples: the image and, hidden, its true defect mask
(so a user can compare ClipSAM's masks with the truth).
"""
from __future__ import annotations

import numpy as np

from .data.synthetic import synthetic_image

SIZE = 320
SEED = 7


def _layers(name: str, image: np.ndarray, truth: np.ndarray, **image_kwargs) -> list[tuple]:
    return [
        (image, {"name": name, **image_kwargs}, "image"),
        (truth.astype(np.uint8), {"name": f"{name} ground truth", "visible": False, "opacity": 0.5}, "labels"),
    ]


def metal_scratch_stain() -> list[tuple]:
    """Brushed metal, 320×320 RGB uint8, with a scratch (truth label 1) and a stain (label 2).

    The scratch image is the base; the stain's pixels come from a second draw (another seed, so the stain
    lies elsewhere) and the scratch is painted last, so the truth labels are exact.
    """
    image, scratch = synthetic_image("metal", "scratch", SIZE, SEED)
    stained, stain = synthetic_image("metal", "stain", SIZE, SEED + 1000)
    image = image.copy()
    image[stain & ~scratch] = stained[stain & ~scratch]
    truth = np.zeros(scratch.shape, np.uint8)
    truth[stain] = 2
    truth[scratch] = 1
    return _layers("metal plate", image, truth)


def pcb_missing_chip() -> list[tuple]:
    """A circuit board, 320×320 RGB uint8, with one chip missing (truth label 1)."""
    image, truth = synthetic_image("pcb", "missing_part", SIZE, SEED)
    return _layers("circuit board", image, truth)


def gray16_part_crack() -> list[tuple]:
    """A machined part as a 16-bit grayscale image (320×320 uint16, values about 20,000–50,000) with a crack.

    Shows how non-8-bit images are handled: ClipSAM maps them to 8 bits with the layer's contrast limits.
    """
    rgb, truth = synthetic_image("part", "crack", SIZE, SEED)
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    noise = np.random.default_rng(SEED).normal(0.0, 120.0, gray.shape)
    image = np.clip(8000 + gray * 180 + noise, 0, 65535).astype(np.uint16)
    return _layers("part (16-bit)", image, truth, colormap="gray")
