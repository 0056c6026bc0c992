"""Multiscale (pyramid) display of large rough maps, so napari draws a 20 MP map without a full-size texture.

Level 0 is the engine's rough map itself (no copy); each further level halves both sides by the **maximum** of
2×2 blocks (a small hot spot stays visible when zoomed out, where a mean or a stride would fade or drop it),
until the long side is at most :data:`PYRAMID_MIN_SIDE`. Only maps whose long side exceeds
:data:`PYRAMID_FROM_SIDE` get a pyramid; smaller ones stay a plain array. The levels add a third of level 0's
memory (float32), instead of napari copying a downsampled full array per update.
"""
from __future__ import annotations

import numpy as np

PYRAMID_FROM_SIDE = 4096
"""A rough map whose long side is above this many pixels is shown as a pyramid."""
PYRAMID_MIN_SIDE = 1024
"""The coarsest pyramid level's long side is at most this many pixels."""


def needs_pyramid(shape) -> bool:
    """True when a map of ``shape`` (…, H, W) is shown as a pyramid."""
    return max(shape[-2:]) > PYRAMID_FROM_SIDE


def max_halve(plane: np.ndarray) -> np.ndarray:
    """Halve the last two axes by the maximum of 2×2 blocks (odd edges keep their last row / column)."""
    h, w = plane.shape[-2:]
    ph, pw = h + (h % 2), w + (w % 2)
    if (ph, pw) != (h, w):
        pad = [(0, 0)] * (plane.ndim - 2) + [(0, ph - h), (0, pw - w)]
        plane = np.pad(plane, pad, mode="edge")
    blocks = plane.reshape(*plane.shape[:-2], ph // 2, 2, pw // 2, 2)
    return blocks.max(axis=(-3, -1))


def rough_pyramid(rough: np.ndarray) -> list[np.ndarray]:
    """Pyramid levels of a (…, H, W) float32 rough map: ``[rough, max-halved, …]``; level 0 *is* ``rough``."""
    levels = [rough]
    while max(levels[-1].shape[-2:]) > PYRAMID_MIN_SIDE:
        levels.append(max_halve(levels[-1]))
    return levels


def blank_pyramid(shape) -> list[np.ndarray]:
    """The levels :func:`rough_pyramid` gives for an all-zero map of ``shape``, without computing any maximum."""
    levels = [np.zeros(shape, np.float32)]
    while max(levels[-1].shape[-2:]) > PYRAMID_MIN_SIDE:
        h, w = levels[-1].shape[-2:]
        levels.append(np.zeros((*levels[-1].shape[:-2], (h + 1) // 2, (w + 1) // 2), np.float32))
    return levels


def level0(data) -> np.ndarray:
    """The full-resolution array of a layer's data (plain or multiscale)."""
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        return np.asarray(data[0])
    return np.asarray(data)
