"""Tiled CLIP stage for large images (issue 24): the tile grid, the blending window and the tile rule.

A large image squashed to CLIP's input (336 px by default) loses small defects: on a 4096×3072 image a 2-px-wide
scratch becomes a fifth of a pixel. With tiling, CLIP sees overlapping square tiles of the (once normalised) image,
each resized to its input, and the per-tile rough maps are blended back into one map at image resolution.

**The rule** (``tiling="auto"``, the default): the tile side is :data:`AUTO_SCALE` × CLIP's input size ``S``
image pixels, so one CLIP input pixel covers ``AUTO_SCALE`` × ``AUTO_SCALE`` image pixels (a 14-px ViT patch
covers 28 image pixels: 672-px tiles at the default 336); an image is tiled when its short side is at least
:data:`AUTO_MIN_SIDE` pixels and at least :data:`AUTO_MIN_TILES` tile sides (1008 px at 336), so a 5 MP
2592×1944 image is seen as 5 × 4 tiles and an image of 1 MP or less is squashed as before. An integer ``tiling`` sets the tile side in image pixels (clipped to the image), ``"off"``
squashes the whole image as before. Neighbouring tiles overlap by :data:`OVERLAP` of the tile side, the last
row and column of tiles end exactly at the image's border (every pixel is covered), and each tile's map is
weighted by a smooth window (:func:`blend_window`: highest in the tile's centre, never 0) so tile seams do not
show. No map is normalised per tile: the training-free, UMCI and few-shot maps are absolute probabilities, so
the tiles of one image (and of different images) are on one scale.
"""
from __future__ import annotations

import math

import numpy as np

from ..config_checks import check_tiling

AUTO_MIN_SIDE = 1024
"""``tiling="auto"`` tiles only images whose short side is at least this many pixels."""
AUTO_MIN_TILES = 1.5
"""... and at least this many tile sides (fewer tiles would see nearly the same pixels twice)."""
AUTO_SCALE = 2
"""``tiling="auto"``: the tile side in image pixels is this many CLIP input sizes."""
OVERLAP = 0.25
"""Fraction of the tile side that neighbouring tiles share."""
WINDOW_FLOOR = 0.05
"""The blending window's weight at a tile's very edge (relative to 1 at its centre): above 0 so that the image's
border, covered by one tile only, still gets that tile's map."""
MAX_REFERENCE_VIEWS = 96
"""Most tiles (and augmented views of tiles) of the normal references that enter a tiled few-shot bank; bounds
the bank's build memory (views × patches × width × 4 bytes per layer: 0.9 GB for 4 layers of ViT-L/14@336)."""

Box = tuple[int, int, int, int]  # (row0, col0, row1, col1), end exclusive


def tile_side(shape: tuple[int, int], tiling, clip_size: int) -> int | None:
    """The tile side (image pixels) for an image of ``shape`` under the ``tiling`` setting, or None (not tiled)."""
    check_tiling(tiling)
    if tiling == "off":
        return None
    if tiling == "auto":
        side = int(AUTO_SCALE * clip_size)
        return side if min(shape[:2]) >= max(AUTO_MIN_SIDE, AUTO_MIN_TILES * side) else None
    side = int(tiling)
    return side if max(shape[:2]) > side else None  # a tile as large as the image is the squashed image


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile starts along one axis: evenly spread, the first at 0 and the last ending at ``length``."""
    if tile >= length:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    n = math.ceil((length - tile) / stride) + 1
    return sorted({int(round(i * (length - tile) / (n - 1))) for i in range(n)})


def tile_grid(shape: tuple[int, int], tile: int, overlap: float = OVERLAP) -> list[Box]:
    """The tile boxes of an image of ``shape`` (row-major), each ``tile`` × ``tile`` (clipped to the image), with
    at least ``overlap`` of the side shared by neighbours and the image covered to its border."""
    h, w = shape[:2]
    th, tw = min(tile, h), min(tile, w)
    return [(r, c, r + th, c + tw) for r in _starts(h, th, overlap) for c in _starts(w, tw, overlap)]


def blend_window(h: int, w: int) -> np.ndarray:
    """(h, w) float32 weights: a separable raised-cosine (Hann) window, 1 at the centre, :data:`WINDOW_FLOOR` at
    the edges."""
    def axis(n: int) -> np.ndarray:
        x = (np.arange(n) + 0.5) / n
        return WINDOW_FLOOR + (1.0 - WINDOW_FLOOR) * np.sin(np.pi * x) ** 2

    return np.outer(axis(h), axis(w)).astype(np.float32)


class Blender:
    """Accumulates per-tile maps into one map at image resolution: the window-weighted mean of every tile covering
    a pixel. Memory: two float32 images."""

    def __init__(self, shape: tuple[int, int]):
        self.total = np.zeros(shape[:2], np.float32)
        self.weight = np.zeros(shape[:2], np.float32)

    def add(self, box: Box, tile_map: np.ndarray) -> None:
        r0, c0, r1, c1 = box
        win = blend_window(r1 - r0, c1 - c0)
        self.total[r0:r1, c0:c1] += win * tile_map
        self.weight[r0:r1, c0:c1] += win

    def result(self) -> np.ndarray:
        if not (self.weight > 0).all():
            raise AssertionError("tile grid left pixels uncovered")  # tile_grid covers every pixel
        return np.clip(self.total / self.weight, 0.0, 1.0).astype(np.float32)


def reference_tile_views(rgbs: list[np.ndarray], tile: int, augment: bool,
                         limit: int = MAX_REFERENCE_VIEWS) -> tuple[list[np.ndarray], list[int]]:
    """The views of the normal references that enter a tiled few-shot bank, and the reference each view was cut
    from (its index in ``rgbs``, for the bank's calibration, which compares a tile only with other references'
    tiles): every tile of every reference (the same tile side as the images scored), evenly thinned to ``limit``;
    with ``augment`` and room left, the tiles' flips and rotations are added (round-robin over tiles) up to
    ``limit``."""
    from .fewshot import augmented_views

    tiles = [(rgb[r0:r1, c0:c1], i) for i, rgb in enumerate(rgbs) for (r0, c0, r1, c1) in tile_grid(rgb.shape, tile)]
    if len(tiles) > limit:
        keep = np.linspace(0, len(tiles) - 1, limit).round().astype(int)
        tiles = [tiles[i] for i in dict.fromkeys(keep.tolist())]
    views = [np.ascontiguousarray(t) for t, _ in tiles]
    sources = [i for _, i in tiles]
    if augment:
        extra = [augmented_views(np.ascontiguousarray(t), True)[1:] for t, _ in tiles]
        for k in range(5):
            for e, (_, i) in zip(extra, tiles):
                if len(views) >= limit:
                    return views, sources
                views.append(e[k])
                sources.append(i)
    return views, sources
