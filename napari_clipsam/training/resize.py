"""Squash maps and masks to a square size (method §2 training masks, §4 "published style" evaluation).

Masks: bilinear resize of the 0/1 mask, then ``≥ 0.5`` → True (the APRIL-GAN recipe). Maps: bilinear.
Both ignore the aspect ratio, as CLIP's input does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5


def squash_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool → (size, size) bool: bilinear resize then threshold at 0.5."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t[0, 0] >= MASK_THRESHOLD).numpy()


def squash_map(anomaly_map: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float map → (size, size) float32 (bilinear; unchanged when already that size)."""
    m = np.ascontiguousarray(anomaly_map, dtype=np.float32)
    if m.shape == (size, size):
        return m
    t = F.interpolate(torch.from_numpy(m)[None, None], size=(size, size), mode="bilinear", align_corners=False)
    return t[0, 0].numpy()
