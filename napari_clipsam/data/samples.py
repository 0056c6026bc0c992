"""One evaluation sample, and the two functions that turn it into arrays.

A :class:`Sample` only holds paths and labels; pixels are read on demand with
:func:`load_image` (always ``(H, W, 3) uint8`` RGB) and :func:`load_mask`
(always ``(H, W) bool``). :class:`AnomalyDataset` is the small list-like
container that every reader in :mod:`napari_clipsam.data.readers` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, MissingFileError
from ..io.images import normalise_image, read_image


@dataclass(frozen=True)
class Sample:
    """Paths and labels of one test (or train) image.

    Attributes:
        image_path: the image file.
        mask_path: the ground-truth mask file, or ``None`` for a normal image
            (its mask is all zeros).
        category: object/texture category, e.g. ``"bottle"``.
        defect: defect type, ``"good"`` for normal images.
        label: 0 for normal, 1 for anomalous.
    """

    image_path: Path
    mask_path: Path | None
    category: str
    defect: str
    label: int


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB: :func:`~napari_clipsam.io.images.read_image` then
    :func:`~napari_clipsam.io.images.normalise_image`, the engine's own rules (NaN pixels black, gray + alpha,
    16-bit and float by the 0.5/99.5 percentiles).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded or has an unusable shape (the message names the file).
    """
    pixels = read_image(path)
    try:
        return normalise_image(pixels)[0]
    except InvalidInputError as err:
        raise InvalidInputError(f"Image file {path}: {err}") from err


def _image_shape(path: Path) -> tuple[int, int]:
    return tuple(read_image(path).shape[:2])  # type: ignore[return-value]


def load_mask(sample: Sample, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read the ground-truth mask of ``sample`` as ``(H, W) bool``.

    Any non-zero pixel (in any channel) is anomalous. A sample without a mask
    (normal image) gives all zeros of ``shape[:2]``.

    Args:
        sample: the sample whose mask to read.
        shape: the image's shape, ``(H, W)`` or ``(H, W, 3)``. Required for
            normal samples; when given for anomalous ones the mask must match.
            When omitted for an anomalous sample, the image file is read to
            check the size.

    Raises:
        ValueError: the mask's size differs from the image's (both files are named).
        FileNotFoundError: the mask file is missing.
    """
    if sample.mask_path is None:
        if shape is None:
            shape = _image_shape(Path(sample.image_path))
        return np.zeros(tuple(shape[:2]), dtype=bool)
    mask_path = Path(sample.mask_path)
    if not mask_path.is_file():
        raise MissingFileError(
            f"Mask file not found: {mask_path} (for image {sample.image_path})."
        )
    raw = read_image(mask_path)
    if raw.ndim == 3 and raw.shape[-1] in (2, 4):
        raw = raw[..., :-1]  # an alpha channel is not part of the mask
    mask = raw != 0
    if mask.ndim == 3:
        mask = mask.any(axis=-1)
    if mask.ndim != 2:
        raise InvalidInputError(f"Mask {mask_path} has unusable shape {raw.shape}; expected (H, W).")
    expected = tuple(shape[:2]) if shape is not None else _image_shape(Path(sample.image_path))
    if mask.shape != expected:
        raise InvalidInputError(
            f"Mask {mask_path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but image "
            f"{sample.image_path} is {expected[0]}x{expected[1]}; masks must have the "
            "image's size (re-export the mask at the image's resolution)."
        )
    return mask


class AnomalyDataset:
    """A list of :class:`Sample` with lazy pixel loading.

    ``dataset[i]`` returns ``(image, mask, sample)`` with ``image`` an
    ``(H, W, 3) uint8`` array and ``mask`` an ``(H, W) bool`` array.

    Attributes:
        root: the dataset's root folder.
        samples: all samples, in a stable (sorted) order.
        categories: the categories present, in order of first appearance.
    """

    layout = "generic"

    def __init__(self, root: str | Path, samples: Sequence[Sample]):
        self.root = Path(root)
        self.samples: list[Sample] = list(samples)
        self.categories: tuple[str, ...] = tuple(dict.fromkeys(s.category for s in self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, Sample]:
        sample = self.samples[index]
        image = load_image(sample.image_path)
        return image, load_mask(sample, image.shape), sample

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    @property
    def labels(self) -> np.ndarray:
        """``(N,) int`` image labels (0 normal, 1 anomalous)."""
        return np.array([s.label for s in self.samples], dtype=int)

    def category(self, name: str) -> AnomalyDataset:
        """The subset of one category, as a dataset of the same kind of container."""
        if name not in self.categories:
            raise InvalidInputError(
                f"Category {name!r} is not in this dataset ({self.root}); "
                f"available: {', '.join(self.categories) or 'none'}."
            )
        subset = AnomalyDataset(self.root, [s for s in self.samples if s.category == name])
        subset.layout = self.layout
        return subset

    def __repr__(self) -> str:
        n_bad = int(self.labels.sum()) if self.samples else 0
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, categories={list(self.categories)}, "
            f"samples={len(self)}, anomalous={n_bad})"
        )
