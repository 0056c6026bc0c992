"""Folder mutual scoring of large images (issues 20 and 24): tile by tile position.

When the ``tiling`` setting tiles the folder's images (:func:`~napari_clipsam.clip.tiling.tile_side`) and they all
have one size, every image is cut into the same grid of overlapping tiles, and each tile is scored against the
*same tile position* of the other images: position ``t`` of the folder is a folder of its own (N tiles), scored by
the unchanged mutual maths (:func:`~napari_clipsam.engine.folder.raw_scores`). A small defect is then seen at
the tile's scale, as in a tiled :meth:`~napari_clipsam.engine.clipsam.ClipSAM.segment`, where a squashed image
loses it. Images of one size from one inspection camera show the product at about the same place, so the same
tile position holds the same part of it; where they do not, the default ``tiling="auto"`` with images of mixed
sizes squashes them as before (said in the log), and ``tiling="off"`` always does.

The raw scores of all positions are calibrated together, by each image's maximum over all its tiles (one scale
for the whole folder, as for untiled images; not per tile: a tile's maximum over its few patches sits far below an
image's, and per-tile normalisation is what gave false alarms in tiled anomaly maps elsewhere), each tile's calibrated map is fused with
its CLIP and few-shot maps (the ``mutual_*`` weights; the tiled few-shot bank of :mod:`.tiled`), and an image's
tiles are blended into its rough map at image resolution (:class:`~napari_clipsam.clip.tiling.Blender`). The
image score is the highest of its tiles' scores.

Memory: one tile position's features at a time (N tiles, dropped once scored) plus the small per-tile maps of
the folder (positions × images × CLIP-size maps); CLIP runs positions × images times. Tile features go into the
engine's caches and the on-disk feature store, keyed by the image's content, the tile box and the tile side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..clip import mutual
from ..clip.rough_map import to_image_resolution
from ..clip.tiling import Blender, tile_grid
from .batching import stack
from .folder import calibrated_maps, raw_scores
from .progress import Stepper
from .tiled import tile_batch

ENCODE_SHARE = 0.35
"""The share of ``segment_folder``'s progress the tiles' CLIP passes and scoring take (MMR from 0.4)."""


def tiled_folder_maps(engine, prepared, keys, side: int, object_name: str, step: Stepper):
    """The fused rough maps (image resolution) and image scores of a folder of same-size images tiled at
    ``side`` px, and whether the CLIP and the few-shot map took part (see the module notes)."""
    cfg, n = engine.config, len(prepared)
    boxes = tile_grid(prepared[0][0].shape[:2], side)
    use_clip = cfg.mutual_clip_weight > 0
    bank = engine._tiled_references.bank(engine, object_name, side, step) \
        if cfg.mutual_fewshot_weight > 0 else None
    use_few = bank is not None
    step("text", 0.0)
    T = engine.text_embeddings(object_name) if use_clip else None
    S, b, total = cfg.image_size, tile_batch(engine), len(boxes) * n
    raws: list[dict] = []  # per position: {window: (N, h, w) raw map}
    clip_maps, few_maps = [], []  # per position: (N, S, S) or nothing
    for t, (r0, c0, r1, c1) in enumerate(boxes):
        tkeys = [f"{key}/tile{side}/{r0},{c0},{r1},{c1}" for key in keys]
        crops = [(rgb[r0:r1, c0:c1], None) for rgb, _ in prepared]
        feats: dict = {}
        for s in range(0, n, b):
            done = ENCODE_SHARE * (t * n + s) / total
            feats.update(engine._features_for(crops[s:s + b], tkeys[s:s + b], True, step, done,
                                              ENCODE_SHARE * min(b, n - s) / total, stored=True))
        layers = stack([feats[k][1] for k in tkeys])  # one (N, C, h, w) tensor per feature layer
        step("mutual", ENCODE_SHARE * (t + 1) / len(boxes))
        raws.append({w: r.cpu() for w, r in raw_scores(cfg, layers, step.cancelled).items()})
        if use_clip:
            clip_maps.append(engine.rough_maps(stack([feats[k][0] for k in tkeys]), T).float().cpu())
        if use_few:
            few_maps.append(bank.anomaly_map(layers, S).float().cpu())
        del feats, layers
    P = len(boxes)
    h, w = next(iter(raws[0].values())).shape[1:]
    # (N, P, h, w) per window: calibrated by the images' maxima over all their tiles, as untiled images are;
    # an image's score is the highest of its tiles' scores
    raw = {w: torch.stack([r[w] for r in raws], dim=1) for w in raws[0]}
    maps, scores = calibrated_maps(cfg, raw, lambda m: mutual.image_scores(m.reshape(n * P, h, w),
                                                                           cfg.mutual_image_top).view(n, P).amax(1))
    image_scores = scores.tolist()
    calibrated = maps.transpose(0, 1).reshape(P * n, h, w)  # position-major
    mutual_maps = F.interpolate(calibrated[:, None], size=(S, S), mode="bilinear",
                                align_corners=False)[:, 0].view(P, n, S, S)
    step("mutual", 0.4)
    roughs = []
    for i, (rgb, valid) in enumerate(prepared):
        blender = Blender(rgb.shape[:2])
        for t, box in enumerate(boxes):
            fused = mutual.fuse([mutual_maps[t, i:i + 1], clip_maps[t][i:i + 1] if use_clip else None,
                                 few_maps[t][i:i + 1] if use_few else None],
                                [cfg.mutual_weight, cfg.mutual_clip_weight, cfg.mutual_fewshot_weight])[0]
            blender.add(box, to_image_resolution(fused, (box[2] - box[0], box[3] - box[1]), cfg.rough_sigma))
        rough = blender.result()
        rough[~valid] = 0.0
        roughs.append(rough)
    return roughs, image_scores, use_clip, use_few
