"""Evaluation metrics for anomaly segmentation (clipsam-method.md §4).

Pixel-level metrics pool all pixels of a category's ``(N, H, W)`` maps;
image-level metrics take one score per image. Everything is NumPy/SciPy/
scikit-learn only (no torch), and undefined metrics are ``nan``.
"""

from .classification import (
    auroc,
    average_precision,
    f1_max,
    image_ap,
    image_auroc,
    image_f1_max,
)
from .pixel import as_stacks, pixel_ap, pixel_auroc, pixel_f1_max
from .pro import FLAVOURS, aupro, label_regions, pro_curve, published_pro_points
from .report import METRIC_NAMES, evaluate

__all__ = [
    "FLAVOURS",
    "METRIC_NAMES",
    "as_stacks",
    "aupro",
    "auroc",
    "average_precision",
    "evaluate",
    "f1_max",
    "image_ap",
    "image_auroc",
    "image_f1_max",
    "label_regions",
    "pixel_ap",
    "pixel_auroc",
    "pixel_f1_max",
    "pro_curve",
    "published_pro_points",
]
