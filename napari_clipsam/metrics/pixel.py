"""Pixel-level metrics, pooled over all pixels of a stack of images.

``maps`` is an ``(N, H, W)`` float array of anomaly maps (or a list of
``(H, W)`` arrays of one shape, or a single ``(H, W)`` map) and ``masks`` the
matching ``(N, H, W)`` bool ground truth. Maps are handled as float32.
"""

from __future__ import annotations

import numpy as np

from .classification import auroc, average_precision, f1_max


def as_stacks(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(maps float32 (N, H, W), masks bool (N, H, W))`` after checking shapes.

    Raises:
        ValueError: maps/masks are not 2-D or 3-D, their shapes differ, or maps are not finite.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks)
    masks = masks if masks.dtype == bool else masks != 0
    if maps.ndim == 2:
        maps = maps[None]
    if masks.ndim == 2:
        masks = masks[None]
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must be (N, H, W) or (H, W), got shape {maps.shape}.")
    if maps.shape != masks.shape:
        raise ValueError(
            f"anomaly maps {maps.shape} and masks {masks.shape} differ in shape; "
            "resize the maps to the masks' resolution first."
        )
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinite values.")
    return maps, masks


def pixel_auroc(maps, masks) -> float:
    """Pixel AUROC over all pooled pixels; nan when no pixel (or every pixel) is anomalous."""
    maps, masks = as_stacks(maps, masks)
    return auroc(maps, masks)


def pixel_ap(maps, masks) -> float:
    """Pixel average precision over all pooled pixels; nan when no pixel is anomalous."""
    maps, masks = as_stacks(maps, masks)
    return average_precision(maps, masks)


def pixel_f1_max(maps, masks) -> float:
    """Pixel F1-max (max of 2PR/(P+R) over thresholds) over pooled pixels; nan when no pixel is anomalous."""
    maps, masks = as_stacks(maps, masks)
    return f1_max(maps, masks)
