"""A dataset folder you can train on: the train/val split and the images written beside the labels.

Split: an image goes to ``val`` when a hash of its export stem (SHA-256 of ``"<seed>:<stem>"``, read as a
fraction in [0, 1)) is below ``val_fraction``, else to ``train``. The split of an image depends only on its
own stem, the seed and the fraction, so it never changes when more images are added to the folder (about
``val_fraction`` of them land in ``val``; a very small folder can have an empty ``val``). Defaults:
``val_fraction=0.2``, ``seed=0``.

Images: with ``dataset_images`` on, the exporter writes the image itself next to its labels:
``yolo/images/<split>/<stem><ext>`` (Ultralytics finds ``yolo/labels/<split>/<stem>.txt`` from it) and
``coco/images/<split>/<stem><ext>`` (the COCO ``file_name``, relative to the ``coco`` folder). An image
file in a format the trainers read is copied byte for byte; an in-memory array is written as PNG.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError

__all__ = [
    "SPLITS",
    "DEFAULT_VAL_FRACTION",
    "DEFAULT_SPLIT_SEED",
    "IMAGE_SUFFIXES",
    "dataset_split",
    "check_split_options",
    "image_payload",
]

SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
# Suffixes both Ultralytics (cv2/PIL) and the usual COCO loaders (PIL) read; others are re-encoded as PNG.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def dataset_split(stem: str, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED) -> str:
    """``"val"`` or ``"train"`` for an export stem (see the module docstring); deterministic and per-image."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode("utf-8", "surrogatepass")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if fraction < val_fraction else "train"


def check_split_options(val_fraction, seed) -> None:
    """ExportError unless ``0 <= val_fraction <= 1`` and ``seed`` is an integer."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating, np.integer)):
        raise ExportError(f"val_fraction must be a number in [0, 1], got {val_fraction!r}")
    if not 0.0 <= float(val_fraction) <= 1.0:
        raise ExportError(f"val_fraction must be in [0, 1] (share of images put in 'val'), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ExportError(f"split_seed must be an integer, got {seed!r}")


def image_payload(image_file: str | None, image: np.ndarray | None) -> tuple[bytes, str]:
    """``(bytes, suffix)`` of the image to write into the dataset.

    ``image`` (an ``(H, W)`` or ``(H, W, 3|4)`` uint8/uint16 array) wins and is encoded as PNG; otherwise
    ``image_file`` is copied as it is when its suffix is in :data:`IMAGE_SUFFIXES`, else read and re-encoded
    as PNG. Raises :class:`ExportError` when neither is usable.
    """
    if image is not None:
        return _png(np.asarray(image), "image"), ".png"
    if image_file is None:
        raise ExportError(
            "dataset_images needs the image: pass image_file (a readable file) or image (the pixels), "
            "or set dataset_images=False"
        )
    path = Path(image_file)
    if not path.is_file():
        raise ExportError(
            f"dataset_images: the image file {path} does not exist (image_file must be a readable path "
            "when the images are written into the dataset); pass image= (the pixels) instead"
        )
    suffix = path.suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            return path.read_bytes(), suffix
        import imageio.v3 as iio

        return _png(np.asarray(iio.imread(path)), str(path)), ".png"
    except OSError as err:
        raise ExportError(f"dataset_images: cannot read the image file {path}: {err}") from err


def _png(arr: np.ndarray, what: str) -> bytes:
    import imageio.v3 as iio

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ExportError(f"{what}: cannot write an image of shape {arr.shape} as PNG; give (H, W) or (H, W, 3)")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        raise ExportError(
            f"{what}: PNG holds uint8 or uint16 pixels, got {arr.dtype}; convert the image "
            "(e.g. skimage.util.img_as_ubyte) or pass the original file as image_file"
        )
    return iio.imwrite("<bytes>", arr, extension=".png")


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in posix form (``images/train/a.png``)."""
    return Path(os.path.relpath(path, root)).as_posix()
