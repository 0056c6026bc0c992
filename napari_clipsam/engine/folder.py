"""``ClipSAM.segment_folder``: folder mutual scoring (method §5, :mod:`napari_clipsam.clip.mutual`) fused with the
CLIP rough map (and the few-shot map when normal references apply), then the unchanged MMR on every image.

Adding or removing images changes the other images' scores (each is scored against the rest of the folder), so a
result belongs to its folder: the provenance records the folder's size and the mutual settings.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..clip import mutual
from ..clip.rough_map import to_image_resolution
from ..clip.text_prompts import clean_object_name
from ..clip.tiling import tile_grid
from ..errors import InvalidInputError
from ..io.images import image_key, normalise_image
from .batching import stack
from .progress import Stepper

MODE = "mutual"


def _check_images(images) -> None:
    if not isinstance(images, (Sequence, np.ndarray)) or isinstance(images, (str, bytes)) or (
            isinstance(images, np.ndarray) and (images.ndim == 2 or images.ndim == 3 and images.shape[-1] in (3, 4))):
        raise InvalidInputError("segment_folder needs a list of images of one object (or an N×H×W[×C] stack), got "
                                f"{type(images).__name__}; for one image use segment().")


def folder_settings(config) -> dict:
    """The mutual-scoring settings recorded in each result's provenance."""
    return {"radii": list(config.mutual_radii), "interval": config.mutual_interval,
            "subset_size": config.mutual_subset_size, "window": config.mutual_window,
            "window_mode": config.mutual_window_mode, "image_window": config.mutual_image_window,
            "image_top": config.mutual_image_top, "image_score_map": config.mutual_image_score,
            "weights": {"mutual": config.mutual_weight, "clip": config.mutual_clip_weight,
                        "fewshot": config.mutual_fewshot_weight},
            "precision": config.mutual_precision,
            "calibration": {"quantile": config.mutual_calibration_quantile, "ratio": config.mutual_calibration_ratio,
                            "width": mutual.CALIBRATION_WIDTH, "floor": mutual.CALIBRATION_FLOOR}}


def fast_path(precision: str, device) -> bool:
    """Whether ``mutual_precision`` means the bf16 nearest-patch search on ``device``: ``"bfloat16"`` always,
    ``"float32"`` never, ``"auto"`` on a CUDA GPU that supports bf16. On a CPU ``"auto"`` is the float32 blocked
    path (:mod:`napari_clipsam.clip.mutual_blocks`): one product for every radius and both directions, measured
    faster than the per-radius bf16 search even with AVX-512 BF16 (docs/performance.md)."""
    if precision != "auto":
        return precision == "bfloat16"
    return device.type == "cuda" and bool(torch.cuda.is_bf16_supported())


def _windows(cfg) -> tuple[list, bool]:
    """The windows whose raw scores the folder needs (the rough map's per ``mutual_window`` and
    ``mutual_window_mode``, then ``mutual_image_window``'s), and whether the image score takes the latter too."""
    rough = [cfg.mutual_window]
    if cfg.mutual_window is not None and cfg.mutual_window_mode != "only":
        rough = [None, cfg.mutual_window]
    iw = cfg.mutual_image_window
    extra = iw is not None and not (iw == cfg.mutual_window and cfg.mutual_window_mode == "only")
    return (rough + [iw] if extra and iw not in rough else rough), extra


def raw_scores(cfg, layers, cancelled=None) -> dict:
    """``{window: (N, h, w) raw mutual scores}`` of the folder's ``layers`` for every window :func:`_windows`
    names (the global score and one window from the same products)."""
    return mutual.mutual_scores_windows(layers, _windows(cfg)[0], radii=cfg.mutual_radii,
                                        interval=cfg.mutual_interval, subset_size=cfg.mutual_subset_size,
                                        cancelled=cancelled, fast=fast_path(cfg.mutual_precision, layers[0].device))


def calibrated_maps(cfg, raw: dict, image_scores=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`raw_scores`' maps (N, …) → ``(maps, scores)``: each window's map calibrated apart by the images'
    maxima (over everything after the first axis: all of an image's tiles, when tiled), combined per
    ``mutual_window_mode``, and the (N,) image scores, ``image_scores(maps)`` (default
    :func:`~napari_clipsam.clip.mutual.image_scores` with ``mutual_image_top``), with ``mutual_image_window`` the
    larger of that and the same score of the map windowed by it."""
    score = image_scores or (lambda m: mutual.image_scores(m, cfg.mutual_image_top))
    calibrated = {w: mutual.calibrate(s, cfg.mutual_calibration_quantile, cfg.mutual_calibration_ratio)
                  for w, s in raw.items()}
    if cfg.mutual_window is None or cfg.mutual_window_mode == "only":
        maps = calibrated[cfg.mutual_window]
    else:
        g, w = calibrated[None], calibrated[cfg.mutual_window]
        maps = torch.maximum(g, w) if cfg.mutual_window_mode == "max" else (g + w) / 2
    scores = score(maps)
    if _windows(cfg)[1]:
        scores = torch.maximum(scores, score(calibrated[cfg.mutual_image_window]))
    return maps, scores


def mutual_maps(cfg, layers, cancelled=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, scores)``: the (N, h, w) calibrated mutual maps in [0, 1] of the rough map per ``mutual_window`` and
    ``mutual_window_mode`` (with a window in mode ``"max"`` / ``"mean"``, the global and the windowed scores are
    calibrated apart and combined), and the (N,) image scores: :func:`~napari_clipsam.clip.mutual.image_scores`
    of those maps (``mutual_image_top``), with ``mutual_image_window`` the larger of that and the same score of
    the map windowed by it (each window's map computed once; the global and one window from the same products)."""
    return calibrated_maps(cfg, raw_scores(cfg, layers, cancelled))


def segment_folder(engine, images, object_name: str, step: Stepper, contrast_limits=None):
    """See :meth:`napari_clipsam.engine.clipsam.ClipSAM.segment_folder` (called inside its per-call settings)."""
    cfg = engine.config
    _check_images(images)
    mutual.check_folder_size(len(images), cfg.mutual_min_images)
    clean_object_name(object_name)
    limits = _limits_per_image(contrast_limits, len(images))
    prepared = [normalise_image(im, lim) for im, lim in zip(images, limits)]  # validate everything first
    keys = [image_key(rgb) for rgb, _ in prepared]
    n = len(prepared)
    side = _common_tile_side(cfg, prepared)
    if side is None:
        roughs, image_scores, use_clip, use_few = _folder_maps(engine, prepared, keys, object_name, step)
    else:  # large images of one size: tile by tile position (engine/folder_tiled.py)
        from .folder_tiled import tiled_folder_maps

        roughs, image_scores, use_clip, use_few = tiled_folder_maps(engine, prepared, keys, side, object_name, step)
    score_from = "fused map" if cfg.mutual_image_score == "fused" or (
        cfg.mutual_image_score == "auto" and use_few) else "mutual map"
    if score_from == "fused map":  # the smoothed map at image resolution (pixels outside the image are 0)
        image_scores = [float(r.max()) for r in roughs]
    results = []
    for i in range(n):
        step("mutual", 0.4 + 0.6 * i / n)
        results += engine._masks_for(prepared[i:i + 1], keys[i:i + 1], roughs[i:i + 1], object_name, step,
                                     0.4 + 0.6 * i / n, 0.6 / n, view_sides=[side])
    parts = ["mutual (folder of %d images%s)" % (n, "" if side is None else f", {side}-px tiles by position")]
    if use_clip:
        parts.append(f"CLIP {engine.mode} (weight {cfg.mutual_clip_weight:g})")
    if use_few:
        parts.append(f"few-shot (weight {cfg.mutual_fewshot_weight:g})")
    described = " + ".join(parts)
    folder = {"size": n, "subset_size": cfg.mutual_subset_size, "settings": folder_settings(cfg),
              "image_score_from": score_from}
    if side is not None:
        folder["tiles"] = {"side": side, "per_image": len(tile_grid(prepared[0][0].shape[:2], side))}
    out = []
    for res, score in zip(results, image_scores):
        prov = dict(res.provenance)
        prov.update({"mode": MODE, "clip_mode": engine.mode, "rough_map": described, "folder": dict(folder),
                     "image_score": float(score)})
        out.append(dataclasses.replace(res, provenance=prov, image_score=float(score)))
    step("merge", 1.0)
    return out


def _folder_maps(engine, prepared, keys, object_name: str, step: Stepper):
    """The fused rough maps (image resolution) and image scores of a folder whose images are not tiled, and
    whether the CLIP and the few-shot map took part."""
    cfg, n = engine.config, len(prepared)
    bank = engine.normal_bank(object_name)
    use_few = bank is not None and cfg.mutual_fewshot_weight > 0
    use_clip = cfg.mutual_clip_weight > 0
    step("text", 0.0)
    T = engine.text_embeddings(object_name) if use_clip else None
    feats: dict = {}
    b = engine.default_batch_size
    for start in range(0, n, b):  # the encoder in batches; features cached per image
        feats.update(engine._features_for(prepared[start:start + b], keys[start:start + b], True, step,
                                          0.3 * start / n, 0.3 * min(b, n - start) / n, stored=True))
    layers = stack([feats[k][1] for k in keys])  # one (N, C, h, w) tensor per feature layer
    step("mutual", 0.3)
    calibrated, image_scores = mutual_maps(cfg, layers, step.cancelled)  # (N, h, w) in [0, 1], (N,)
    image_scores = image_scores.tolist()
    S = cfg.image_size
    mutual_map = F.interpolate(calibrated[:, None], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    clip_map = engine.rough_maps(stack([feats[k][0] for k in keys]), T).float() if use_clip else None
    few_map = bank.anomaly_map(layers, S).float().to(mutual_map.device) if use_few else None
    fused = mutual.fuse([mutual_map, clip_map, few_map],
                        [cfg.mutual_weight, cfg.mutual_clip_weight, cfg.mutual_fewshot_weight])
    roughs = []
    for (rgb, valid), r in zip(prepared, fused):
        rough = to_image_resolution(r, rgb.shape[:2], cfg.rough_sigma)
        rough[~valid] = 0.0
        roughs.append(rough)
    return roughs, image_scores, use_clip, use_few


def _common_tile_side(cfg, prepared) -> int | None:
    """The tile side when the ``tiling`` setting tiles the folder's images and they all have one size (then they
    are scored tile position by tile position); None when no image tiles. Images of several sizes that would
    tile: an explicit tile side is refused, ``"auto"`` squashes every image (said in the log)."""
    from ..clip.tiling import tile_side

    sides = {tile_side(rgb.shape[:2], cfg.tiling, cfg.image_size) for rgb, _ in prepared}
    if sides == {None}:
        return None
    if len({rgb.shape[:2] for rgb, _ in prepared}) == 1:
        return sides.pop()
    if cfg.tiling != "auto":
        raise InvalidInputError(f"tiling = {cfg.tiling!r} needs the folder's images to have one size for folder "
                                "mutual scoring (it compares the same tile position across the images); set "
                                "tiling to 'off' or 'auto' (which squashes images of mixed sizes), or segment the "
                                "images one at a time (segment(), or the CLI's --no-mutual), which tiles each.")
    import logging

    logging.getLogger(__name__).info("folder mutual scoring squashes large images of mixed sizes (it tiles only "
                                     "images of one size)")
    return None


def _limits_per_image(contrast_limits, n: int) -> list:
    """``contrast_limits`` for each of ``n`` images: None, one ``(low, high)`` pair for all, or a sequence of
    ``n`` pairs (or None), one per image (the dock's layers each have their own)."""
    if contrast_limits is None:
        return [None] * n
    items = list(contrast_limits)
    if any(x is None or np.ndim(x) == 1 for x in items):
        if len(items) != n:
            raise InvalidInputError(f"contrast_limits: {len(items)} pairs for {n} images; give one pair for all "
                                    "images or one per image.")
        return items
    return [contrast_limits] * n
