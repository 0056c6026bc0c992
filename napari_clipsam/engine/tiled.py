"""How the engine runs the tiled CLIP stage (issue 24; the geometry and the rule are in :mod:`..clip.tiling`).

For each image the config's ``tiling`` tiles (:func:`~napari_clipsam.clip.tiling.tile_side`), the tiles of the
normalised image go through CLIP's vision tower a batch at a time (progress per tile and per block, a cancel seen
between tiles and inside the encoder), each batch's rough maps (fused with the tiled few-shot map when normal
references apply) are blended into the image's map and the batch's features dropped: memory grows with the tile
size and the batch, not with the image. Tile features go into the engine's bounded cache, keyed by the image's
content key, the tile box and the tile side, so a second run of the same image and setting skips CLIP while they
fit. Images the setting does not tile take the engine's ordinary path.

The few-shot bank of a tiled image is built from the normal references' tiles of the same side
(:func:`~napari_clipsam.clip.tiling.reference_tile_views`), once per (object, tile side, few-shot settings), in
memory only. Its calibration compares each reference tile only with the other references' tiles (overlapping tiles
of one image are near-copies), and its coreset keeps ``fewshot_bank_size`` patches per reference image: one large
reference holds as many patches as a whole set of small ones, and at 4096 patches for three 2048² references the
coreset dropped enough of the texture that a normal image's peak rose above a thin scratch's (measured,
docs/method.md#large-images-tiling).
"""
from __future__ import annotations

import threading

import numpy as np

from ..clip.fewshot import NormalBank
from ..clip.references import reference_tokens
from ..clip.rough_map import to_image_resolution
from ..clip.tiling import Blender, reference_tile_views, tile_grid, tile_side
from ..io.images import image_key, normalise_image
from .batching import stack, transformer_blocks
from .progress import PartStepper, Stepper


class TiledReferences:
    """The normal reference images the engine was given (per object name, as :class:`~..clip.references.
    ReferenceSets`) and the tiled banks built from them, per (object, tile side, settings)."""

    def __init__(self):
        self._images: dict[str | None, list[np.ndarray]] = {}
        self._banks: dict[tuple, NormalBank] = {}
        self._lock = threading.Lock()

    def remember(self, object_name: str | None, images) -> None:
        """Keep the normalised references of ``object_name`` (duplicates once) for tiled banks."""
        rgbs = {}
        for im in images:
            rgb, _ = normalise_image(im)
            rgbs.setdefault(image_key(rgb), rgb)
        with self._lock:
            self._images[object_name] = [rgbs[k] for k in sorted(rgbs)]
            self._banks = {k: v for k, v in self._banks.items() if k[0] != object_name}

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._banks.clear()

    def bank(self, engine, object_name: str | None, tile: int, step: Stepper) -> NormalBank | None:
        """The tiled bank for ``object_name`` at tile side ``tile`` (built on first use), or None without
        references."""
        cfg = engine.config
        with self._lock:
            owner = object_name if object_name in self._images else None
            rgbs = self._images.get(owner)
        if rgbs is None:
            return None
        layers = tuple(int(i) for i in cfg.feature_layers)
        key = (owner, tile, layers, cfg.fewshot_augment, cfg.fewshot_bank_size, cfg.fewshot_neighbourhood)
        with self._lock:
            bank = self._banks.get(key)
        if bank is None:
            views, sources = reference_tile_views(rgbs, tile, cfg.fewshot_augment)
            blocks = transformer_blocks(engine.clip_model.visual, "transformer", "resblocks")
            with step.per_block(blocks, "references", step.last, 0.0):
                tokens = reference_tokens(engine.vision, views, layers, 8 if engine.device.type == "cuda" else 1,
                                          engine.autocast, lambda i, n: step("references", step.last))
            bank = NormalBank.build(tokens, layers, [image_key(r) for r in rgbs],
                                    bank_size=int(cfg.fewshot_bank_size) * len(rgbs), groups=sources,
                                    neighbourhood=int(cfg.fewshot_neighbourhood)).to(engine.device)
            engine._counts["references"].miss()
            with self._lock:
                self._banks[key] = bank
        return bank


def tile_batch(engine) -> int:
    """Tiles per encoder batch: 8 on CUDA, 1 on the CPU (as images: batching measured slower there)."""
    return 8 if engine.device.type == "cuda" else 1


def rough_maps(engine, prepared, keys, T, object_name, step: Stepper, done: float, span: float,
               zero_shot) -> list[np.ndarray] | None:
    """Rough maps at image resolution of the ``(rgb, valid)`` images, tiled where the config says so; None when
    no image is tiled (the caller's ordinary path). ``zero_shot(prepared, keys)`` is that ordinary path for the
    images left untiled."""
    cfg = engine.config
    sides = [tile_side(rgb.shape[:2], cfg.tiling, cfg.image_size) for rgb, _ in prepared]
    if all(s is None for s in sides):
        return None
    out: list[np.ndarray | None] = [None] * len(prepared)
    plain = [i for i, s in enumerate(sides) if s is None]
    if plain:
        for i, r in zip(plain, zero_shot([prepared[i] for i in plain], [keys[i] for i in plain])):
            out[i] = r
    for i, side in enumerate(sides):
        if side is not None:
            out[i] = _tiled_map(engine, prepared[i], keys[i], side, T, object_name, step, done, span)
    return out


def _tiled_map(engine, item, key, side: int, T, object_name, step: Stepper, done, span) -> np.ndarray:
    """One image's blended rough map (H, W) from its tiles of side ``side``."""
    cfg = engine.config
    rgb, valid = item
    refs = engine._tiled_references
    w = float(cfg.fewshot_weight)
    bank = refs.bank(engine, object_name, side, step) if w > 0 else None
    fuse = bank is not None
    w = w if fuse else 0.0
    boxes = tile_grid(rgb.shape[:2], side)
    blender = Blender(rgb.shape[:2])
    b = tile_batch(engine)
    for s in range(0, len(boxes), b):
        chunk = boxes[s:s + b]
        tstep = PartStepper(step, s, len(boxes))
        tstep("clip", done, span)  # a cancel is seen between tiles
        crops = [(rgb[r0:r1, c0:c1], None) for r0, c0, r1, c1 in chunk]
        tkeys = [f"{key}/tile{side}/{r0},{c0},{r1},{c1}" for r0, c0, r1, c1 in chunk]
        feats = engine._features_for(crops, tkeys, fuse, tstep, done, span)
        small = engine.rough_maps(stack([feats[k][0] for k in tkeys]), T) if w < 1.0 else 0.0
        if fuse:
            few = bank.anomaly_map(stack([feats[k][1] for k in tkeys]), cfg.image_size)
            small = (1.0 - w) * small + w * few.to(engine.device)
        for box, m in zip(chunk, small):
            blender.add(box, to_image_resolution(m, (box[2] - box[0], box[3] - box[1]), cfg.rough_sigma))
        del feats, small
    step("rough map", done, span)
    rough = blender.result()
    rough[~valid] = 0.0
    return rough

