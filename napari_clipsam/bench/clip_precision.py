"""CLIP float32 against bfloat16 (OpenVINO), judged on maps with contrast: the few-shot map and the folder mutual map.

The random-weight zero-shot rough map is nearly flat (it spans ~0.003), so it cannot judge bf16 noise; the few-shot
map (normal references) and the folder mutual map of a random CLIP do separate defects on the synthetic categories
(pixel AUROC ≈ 0.95). For each category, both precisions run the same models (SAM, the decoder, the text encoder
and every other step identical; SAM's encoder in float32) and :func:`compare_precisions` reports:

- ``auroc_fp32``, ``auroc_bf16``, ``auroc_drop`` (fp32 − bf16, pixel AUROC against the exact defect masks);
- ``map_corr``: Pearson correlation of the two maps over every pixel of the category's images;
- ``mask_iou_pooled`` (IoU of the final masks over all the images together) and ``mask_iou_min`` (worst image;
  1 when both masks of an image are empty);
- ``feature_cos_min`` / ``feature_rel_l2_max``: the CLIP patch tokens of every feature layer, worst layer and image.

``scripts/clip_bf16_fidelity.py`` runs it for the tiny random CLIP and the real ViT-B/16 and ViT-L/14@336
architectures with random weights; ``docs/performance.md`` has the figures and
:data:`napari_clipsam.engine.backends.clip_bf16.BOUNDS` the bounds they are held to.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.backends.fidelity import cosine, mask_iou, relative_l2


def category_images(category: str, refs: int, good: int, defective: int, size: int, seed: int = 0):
    """``refs`` normal training images, then ``good`` normal and ``defective`` defective test images (defect
    types in turn) of one synthetic category: ``(references, [(image, mask), ...])``."""
    from ..data.synthetic import CATEGORY_DEFECTS, _image_seed, synthetic_image

    references = [synthetic_image(category, None, size, _image_seed(seed, category, "train", "good", i))[0]
                  for i in range(refs)]
    test = [synthetic_image(category, None, size, _image_seed(seed, category, "test", "good", i))
            for i in range(good)]
    kinds = CATEGORY_DEFECTS[category]
    for i in range(defective):
        d = kinds[i % len(kinds)]
        test.append(synthetic_image(category, d, size, _image_seed(seed, category, "test", d, i)))
    return references, test


def map_agreement(maps_a, maps_b, masks, finals_a, finals_b) -> dict[str, float]:
    """The map and mask figures of one category (``a`` float32, ``b`` bfloat16): see the module docstring."""
    from ..metrics.pixel import pixel_auroc

    a, b, m = np.stack(maps_a), np.stack(maps_b), np.stack(masks)
    au_a, au_b = pixel_auroc(a, m), pixel_auroc(b, m)
    fa, fb = np.stack(finals_a).astype(bool), np.stack(finals_b).astype(bool)
    corr = np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1]
    return {"auroc_fp32": au_a, "auroc_bf16": au_b, "auroc_drop": au_a - au_b,
            "map_corr": float(corr) if np.isfinite(corr) else float(np.array_equal(a, b)),
            "mask_iou_pooled": mask_iou(fa, fb), "mask_iou_min": min(mask_iou(x, y) for x, y in zip(fa, fb)),
            "mask_pixels_fp32": int(fa.sum())}


def feature_agreement(engine_a, engine_b, images) -> dict[str, float]:
    """Worst cosine and relative L2 error (bf16 against fp32) of the patch tokens of every feature layer."""
    import torch

    layers = tuple(engine_a.config.feature_layers)
    cos, rel = [], []
    with torch.no_grad():
        for im in images:
            x = engine_a.vision.preprocess([im])
            for ta, tb in zip(engine_a.vision.patch_tokens(x, layers), engine_b.vision.patch_tokens(x, layers)):
                cos.append(cosine(tb, ta))
                rel.append(relative_l2(tb, ta))
    return {"feature_cos_min": min(cos), "feature_rel_l2_max": max(rel)}


def build_pair(clip_model, tokenizer, sam_model, config) -> dict[str, Any]:
    """Two engines over the same modules, OpenVINO CLIP in float32 and in bfloat16 (SAM float32 in both)."""
    from ..engine.clipsam import ClipSAM

    out = {}
    for prec in ("float32", "bfloat16"):
        cfg = config.replace(backend="openvino", sam_precision="float32", clip_precision=prec)
        out[prec] = ClipSAM.from_models(clip_model, tokenizer, sam_model, None, cfg)
    return out


def compare_precisions(engines: dict[str, Any], categories, *, refs: int = 4, good: int = 6, defective: int = 14,
                       size: int = 128, modes=("fewshot", "mutual"), feature_images: int = 3,
                       log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float]]]:
    """``{mode: {category: figures}}`` for the engines of :func:`build_pair` (modes ``"fewshot"``: the rough
    map with ``fewshot_weight`` 1 after :meth:`set_normal_references`; ``"mutual"``: :meth:`segment_folder`'s
    fused map, no references)."""
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in modes}
    for c in categories:
        references, test = category_images(c, refs, good, defective, size)
        images, masks = [t[0] for t in test], [t[1] for t in test]
        feats = feature_agreement(engines["float32"], engines["bfloat16"], images[good:good + feature_images])
        for mode in modes:
            maps, finals = {}, {}
            for prec, eng in engines.items():
                eng.clear_normal_references()
                if mode == "fewshot":
                    eng.set_normal_references(references, c, cache=False)
                    results = [eng.segment(im, c, settings={"fewshot_weight": 1.0}) for im in images]
                else:
                    results = eng.segment_folder(images, c)
                maps[prec] = [r.rough_map for r in results]
                finals[prec] = [r.mask for r in results]
                eng.clear_normal_references()
                eng.clear_caches()
            fig = {**map_agreement(maps["float32"], maps["bfloat16"], masks, finals["float32"], finals["bfloat16"]),
                   **feats}
            out[mode][c] = fig
            log(f"  {mode:<8} {c:<7} AUROC fp32 {fig['auroc_fp32']:.4f} bf16 {fig['auroc_bf16']:.4f} "
                f"(drop {fig['auroc_drop']:+.4f}), map corr {fig['map_corr']:.5f}, final-mask IoU pooled "
                f"{fig['mask_iou_pooled']:.3f} / min {fig['mask_iou_min']:.3f} ({fig['mask_pixels_fp32']} px), "
                f"features cos ≥ {fig['feature_cos_min']:.6f}, rel L2 ≤ {fig['feature_rel_l2_max']:.1e}")
    return out


def worst(figures: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """The worst of every figure over modes and categories (the figures :data:`~..engine.backends.clip_bf16.BOUNDS`
    are checked on)."""
    rows = [f for per in figures.values() for f in per.values()]
    return {"auroc_drop_max": max(f["auroc_drop"] for f in rows), "map_corr_min": min(f["map_corr"] for f in rows),
            "mask_iou_pooled_min": min(f["mask_iou_pooled"] for f in rows),
            "feature_cos_min": min(f["feature_cos_min"] for f in rows),
            "feature_rel_l2_max": max(f["feature_rel_l2_max"] for f in rows)}
