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
            "image_top": config.mutual_image_top,
            "weights": {"mutual": config.mutual_weight, "clip": config.mutual_clip_weight,
                        "fewshot": config.mutual_fewshot_weight},
            "precision": config.mutual_precision,
            "calibration": {"quantile": mutual.CALIBRATION_QUANTILE, "ratio": mutual.CALIBRATION_RATIO,
                            "width": mutual.CALIBRATION_WIDTH, "floor": mutual.CALIBRATION_FLOOR}}


def fast_path(precision: str, device) -> bool:
    """Whether ``mutual_precision`` means the bf16 nearest-patch search on ``device``: ``"bfloat16"`` always,
    ``"float32"`` never, ``"auto"`` on a CUDA GPU that supports bf16. On a CPU ``"auto"`` is the float32 blocked
    path (:mod:`napari_clipsam.clip.mutual_blocks`): one product for every radius and both directions, measured
    faster than the per-radius bf16 search even with AVX-512 BF16 (docs/performance.md)."""
    if precision != "auto":
        return precision == "bfloat16"
    return device.type == "cuda" and bool(torch.cuda.is_bf16_supported())


def mutual_maps(cfg, layers, cancelled=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, scores)``: the (N, h, w) calibrated mutual maps in [0, 1] of the rough map per ``mutual_window`` and
    ``mutual_window_mode`` (with a window in mode ``"max"`` / ``"mean"``, the global and the windowed scores are
    calibrated apart and combined), and the (N,) image scores: :func:`~napari_clipsam.clip.mutual.image_scores`
    of those maps (``mutual_image_top``), with ``mutual_image_window`` the larger of that and the same score of
    the map windowed by it (each window's map computed once; the global and one window from the same products)."""
    fast = fast_path(cfg.mutual_precision, layers[0].device)
    rough = [cfg.mutual_window]
    if cfg.mutual_window is not None and cfg.mutual_window_mode != "only":
        rough = [None, cfg.mutual_window]
    iw = cfg.mutual_image_window
    extra = iw is not None and not (iw == cfg.mutual_window and cfg.mutual_window_mode == "only")
    windows = rough + [iw] if extra and iw not in rough else rough
    raw = mutual.mutual_scores_windows(layers, windows, radii=cfg.mutual_radii, interval=cfg.mutual_interval,
                                       subset_size=cfg.mutual_subset_size, cancelled=cancelled,
                                       fast=fast)  # the global score and one window from the same products
    calibrated = {w: mutual.calibrate(s) for w, s in raw.items()}
    if cfg.mutual_window is None or cfg.mutual_window_mode == "only":
        maps = calibrated[cfg.mutual_window]
    else:
        g, w = calibrated[None], calibrated[cfg.mutual_window]
        maps = torch.maximum(g, w) if cfg.mutual_window_mode == "max" else (g + w) / 2
    scores = mutual.image_scores(maps, cfg.mutual_image_top)
    if extra:
        scores = torch.maximum(scores, mutual.image_scores(calibrated[iw], cfg.mutual_image_top))
    return maps, scores


def segment_folder(engine, images, object_name: str, step: Stepper, contrast_limits=None):
    """See :meth:`napari_clipsam.engine.clipsam.ClipSAM.segment_folder` (called inside its per-call settings)."""
    cfg = engine.config
    _check_images(images)
    mutual.check_folder_size(len(images), cfg.mutual_min_images)
    clean_object_name(object_name)
    prepared = [normalise_image(im, contrast_limits) for im in images]  # validate everything first
    keys = [image_key(rgb) for rgb, _ in prepared]
    n = len(prepared)
    _check_tiling(cfg, prepared)
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
    results = []
    for i in range(n):
        step("mutual", 0.4 + 0.6 * i / n)
        results += engine._masks_for(prepared[i:i + 1], keys[i:i + 1], roughs[i:i + 1], object_name, step,
                                     0.4 + 0.6 * i / n, 0.6 / n)
    parts = ["mutual (folder of %d images)" % n]
    if use_clip:
        parts.append(f"CLIP {engine.mode} (weight {cfg.mutual_clip_weight:g})")
    if use_few:
        parts.append(f"few-shot (weight {cfg.mutual_fewshot_weight:g})")
    described = " + ".join(parts)
    settings = folder_settings(cfg)
    out = []
    for res, score in zip(results, image_scores):
        prov = dict(res.provenance)
        prov.update({"mode": MODE, "clip_mode": engine.mode, "rough_map": described,
                     "folder": {"size": n, "subset_size": cfg.mutual_subset_size, "settings": settings},
                     "image_score": float(score)})
        out.append(dataclasses.replace(res, provenance=prov, image_score=float(score)))
    step("merge", 1.0)
    return out


def _check_tiling(cfg, prepared) -> None:
    """Mutual scoring compares whole images' patch grids and does not tile yet: an explicit tile side that would
    tile an image is refused; ``"auto"`` squashes every image as before (said in the log)."""
    from ..clip.tiling import tile_side

    if not any(tile_side(rgb.shape[:2], cfg.tiling, cfg.image_size) for rgb, _ in prepared):
        return
    if cfg.tiling != "auto":
        raise InvalidInputError(f"tiling = {cfg.tiling!r} is not supported by folder mutual scoring yet (it compares "
                                "whole images); pass settings={'tiling': 'off'} (or 'auto'), or segment the "
                                "images one by one with segment() / segment_many(), which tile.")
    import logging

    logging.getLogger(__name__).info("folder mutual scoring squashes large images (it does not tile yet)")
