"""All evaluation metrics of clipsam-method.md §4 in one call."""

from __future__ import annotations

import numpy as np

from .classification import ap_and_f1_max, auroc, image_ap, image_auroc, image_f1_max
from .pixel import as_stacks
from .pro import aupro

#: Keys of the dictionary returned by :func:`evaluate`, in reporting order.
METRIC_NAMES = (
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "aupro_official",
    "aupro_published",
    "image_auroc",
    "image_ap",
    "image_f1_max",
)


def evaluate(maps, masks, image_scores=None, labels=None, max_fpr: float = 0.3) -> dict[str, float]:
    """Compute every pixel- and image-level metric for one category.

    Args:
        maps: ``(N, H, W)`` float anomaly maps (or a list of ``(H, W)`` arrays of one shape).
        masks: ``(N, H, W)`` bool ground truth.
        image_scores: ``(N,)`` float image anomaly scores; default: the maximum of each map.
        labels: ``(N,)`` 0/1 image labels; default: whether each mask has any anomalous pixel.
        max_fpr: FPR limit of both AUPRO flavours.

    Returns:
        ``{name: value}`` for every name in :data:`METRIC_NAMES`, as Python floats
        in [0, 1]; a metric that is undefined for these inputs (e.g. no anomalous
        pixel) is ``nan``.
    """
    maps, masks = as_stacks(maps, masks)
    n_images = len(maps)
    image_scores = maps.reshape(n_images, -1).max(axis=1) if image_scores is None else np.asarray(image_scores)
    labels = masks.reshape(n_images, -1).any(axis=1) if labels is None else np.asarray(labels)
    if image_scores.shape != (n_images,) or labels.shape != (n_images,):
        raise ValueError(
            f"image_scores {image_scores.shape} and labels {labels.shape} must both be ({n_images},), "
            "one value per map."
        )
    pixel_ap, pixel_f1 = ap_and_f1_max(maps, masks)
    return {
        "pixel_auroc": auroc(maps, masks),
        "pixel_ap": pixel_ap,
        "pixel_f1_max": pixel_f1,
        "aupro_official": aupro(maps, masks, max_fpr, "official"),
        "aupro_published": aupro(maps, masks, max_fpr, "published"),
        "image_auroc": image_auroc(image_scores, labels),
        "image_ap": image_ap(image_scores, labels),
        "image_f1_max": image_f1_max(image_scores, labels),
    }
