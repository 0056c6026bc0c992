"""Datasets for evaluation: MVTec-AD, VisA, plain folders, and a synthetic generator.

Readers only index files (checking that every anomalous image has its mask);
pixels are read on access as ``(H, W, 3) uint8`` images and ``(H, W) bool``
masks. Nothing here imports torch.
"""

from .readers import FolderDataset, MVTecDataset, VisADataset, detect_layout, open_dataset
from .samples import AnomalyDataset, Sample, load_image, load_mask
from .synthetic import CATEGORIES, CATEGORY_DEFECTS, DEFECTS, make_synthetic_dataset, synthetic_image

__all__ = [
    "CATEGORIES",
    "CATEGORY_DEFECTS",
    "DEFECTS",
    "AnomalyDataset",
    "FolderDataset",
    "MVTecDataset",
    "Sample",
    "VisADataset",
    "detect_layout",
    "load_image",
    "load_mask",
    "make_synthetic_dataset",
    "open_dataset",
    "synthetic_image",
]
