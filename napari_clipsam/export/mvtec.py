"""MVTec-AD style binary ground-truth masks: ``masks/<stem>_mask.png``.

The mask is a single-channel uint8 PNG of the image's size whose pixels are exactly 255 where any
instance is (``instances > 0``) and 0 elsewhere, like the ``ground_truth/<defect>/<stem>_mask.png``
files of MVTec-AD. Instance ids and classes are not kept in this format.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

__all__ = ["MASK_DIR", "mvtec_mask_path", "encode_mvtec_mask", "read_mvtec_mask"]

MASK_DIR = "masks"
FOREGROUND = 255


def mvtec_mask_path(out_dir: Path, stem: str) -> Path:
    """``out_dir/masks/<stem>_mask.png``."""
    return Path(out_dir) / MASK_DIR / f"{stem}_mask.png"


def encode_mvtec_mask(instances: np.ndarray) -> bytes:
    """PNG bytes of the binary mask of an ``(H, W)`` instance map: uint8, 255 where ``instances > 0``."""
    mask = np.where(instances > 0, np.uint8(FOREGROUND), np.uint8(0))
    return iio.imwrite("<bytes>", mask, extension=".png")


def read_mvtec_mask(path: str | Path) -> np.ndarray:
    """Read an MVTec-style mask PNG as an ``(H, W)`` bool array (True where the pixel is >= 128).

    A colour or RGBA mask is reduced to its first channel.
    """
    mask = iio.imread(path)
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask >= 128
