"""A dataset folder you can train on: the train/val split and the images written beside the labels.

Split: an image goes to ``val`` when a hash of its export stem (SHA-256 of ``"<seed>:<stem>"``, read as a
fraction in [0, 1)) is below ``val_fraction``, else to ``train``. The split of an image depends only on its
own stem, the seed and the fraction, so it never changes when more images are added to the folder (about
``val_fraction`` of them land in ``val``; a very small folder can have an empty ``val``). Defaults:
``val_fraction=0.2``, ``seed=0``.

Images: with ``dataset_images`` on, the exporter writes the image itself next to its labels:
``yolo/images/<split>/<stem><ext>`` (Ultralytics finds ``yolo/labels/<split>/<stem>.txt`` from it) and
``coco/images/<split>/<stem><ext>`` (the COCO ``file_name``, relative to the ``coco`` folder). An 8-bit image
file in a format the trainers read is copied byte for byte; an in-memory array is written as PNG. An image that is
not 8-bit (16-bit TIFF or PNG, floats) is written as the 8-bit image ClipSAM segmented (its normalisation, with
the request's ``contrast_limits``; a TIFF stays a TIFF, so the name does not change), and with ``keep_original``
the original also goes to ``originals/<stem><ext>`` (as it was; a TIFF for pixels), outside the trainers' folders.
"""

from __future__ import annotations

import dataclasses
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
    "DatasetImage",
    "trainer_suffix",
    "ORIGINALS_DIR",
]

SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
# Suffixes both Ultralytics (cv2/PIL) and the usual COCO loaders (PIL) read; others are re-encoded as PNG.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# With keep_original, a non-8-bit image is also written here, as it was (the trainers' folders hold the 8-bit one).
ORIGINALS_DIR = "originals"


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


@dataclasses.dataclass(frozen=True)
class DatasetImage:
    """The image to write into the dataset: ``data`` with ``suffix`` for the trainers, and ``original`` (bytes,
    suffix) when ``data`` is an 8-bit conversion of a non-8-bit image (None when the trainers get the original)."""

    data: bytes
    suffix: str
    original: tuple[bytes, str] | None = None


def image_payload(image_file: str | None, image: np.ndarray | None,
                  contrast_limits: tuple[float, float] | None = None) -> DatasetImage:
    """The image to write into the dataset, 8-bit for the trainers.

    ``image`` (an ``(H, W)`` or ``(H, W, 3|4)`` array) wins and is encoded as PNG; otherwise ``image_file`` is copied
    as it is when its suffix is in :data:`IMAGE_SUFFIXES` and it holds 8-bit pixels, else read and re-encoded (an
    8-bit PNG or TIFF keeps its suffix; another format becomes PNG). Pixels that are not 8-bit (16-bit, other
    integers, floats) are mapped to 8 bits exactly as ClipSAM maps them before segmenting
    (:func:`~napari_clipsam.io.images.normalise_image`: linearly from ``contrast_limits``, else from the 0.5/99.5
    percentiles; gray stays gray), and the original is returned beside them. Raises :class:`ExportError` when
    neither is usable.
    """
    if image is not None:
        arr = np.asarray(image)
        if _is_8bit(arr):
            return DatasetImage(_png(arr, "image"), ".png")
        return DatasetImage(_png(_to_8bit(arr, contrast_limits, "image"), "image"), ".png",
                            (_tiff(arr), ".tif"))
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
        if suffix in IMAGE_SUFFIXES and _file_is_8bit(path, suffix):
            return DatasetImage(path.read_bytes(), suffix)
        from ..io.images import read_image

        arr = np.asarray(read_image(path))
        if _is_8bit(arr):
            return DatasetImage(_png(arr, str(path)), ".png")
        pixels = _to_8bit(arr, contrast_limits, str(path))
        if suffix in (".tif", ".tiff"):
            return DatasetImage(_tiff(pixels), suffix, (path.read_bytes(), suffix))
        return DatasetImage(_png(pixels, str(path)), ".png", (path.read_bytes(), suffix))
    except OSError as err:
        raise ExportError(f"dataset_images: cannot read the image file {path}: {err}") from err
    except ValueError as err:  # InvalidInputError and decoder errors: a file that is not a usable image
        raise ExportError(f"dataset_images: cannot use the image file {path}: {err}") from err


def trainer_suffix(path: str | os.PathLike) -> str:
    """The suffix the dataset image of the file ``path`` gets (its own when trainers read it, else ``.png``)."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".png"


def _is_8bit(arr: np.ndarray) -> bool:
    return arr.dtype in (np.uint8, np.bool_)


def _file_is_8bit(path: Path, suffix: str) -> bool:
    """Whether an image file holds 8-bit pixels, from its header (no decoding)."""
    if suffix == ".png":
        with open(path, "rb") as f:
            head = f.read(26)
        return len(head) < 26 or head[24] <= 8  # IHDR bit depth; a damaged header is left to the copy
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return np.dtype(tif.pages[0].dtype) in (np.uint8, np.bool_)
        except (tifffile.TiffFileError, TypeError, ValueError):
            return True  # not a TIFF tifffile reads: copied as before
    return True  # JPEG, BMP, WebP hold 8-bit pixels


def _to_8bit(arr: np.ndarray, contrast_limits, what: str) -> np.ndarray:
    """``arr`` mapped to uint8 by ClipSAM's own normalisation; a gray image stays ``(H, W)``."""
    from ..io.images import normalise_image

    gray = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 2))
    try:
        rgb, _ = normalise_image(arr, contrast_limits)
    except ValueError as err:
        raise ExportError(f"{what}: cannot write this image for the trainers: {err}") from err
    return rgb[..., 0] if gray else rgb


def _tiff(arr: np.ndarray) -> bytes:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, arr, compression="zlib")
    return buffer.getvalue()


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
