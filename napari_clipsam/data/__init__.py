"""Datasets for evaluation: MVTec-AD, VisA, plain folders, and a synthetic generator.

Readers only index files (checking that every anomalous image has its mask);
pixels are read on access as ``(H, W, 3) uint8`` images and ``(H, W) bool``
masks. Nothing here imports torch.
"""

from .readers import FolderDataset, MVTecDataset, VisADataset, detect_layout, open_dataset
from .review_labels import ReviewDataset, accepted_good_images, is_review_folder, read_review
from .samples import AnomalyDataset, Sample, load_image, load_mask
from .synthetic import CATEGORIES, CATEGORY_DEFECTS, DEFECTS, make_synthetic_dataset, synthetic_image

__all__ = [
    "CATEGORIES",
    "CATEGORY_DEFECTS",
    "DEFECTS",
    "AnomalyDataset",
    "FolderDataset",
    "MVTecDataset",
    "ReviewDataset",
    "Sample",
    "VisADataset",
    "accepted_good_images",
    "detect_layout",
    "is_review_folder",
    "load_image",
    "load_mask",
    "make_synthetic_dataset",
    "open_dataset",
    "read_review",
    "synthetic_image",
]
