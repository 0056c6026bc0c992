"""The unit of a ``segment`` run: one image, i.e. an image file or one frame of a multi-frame TIFF.

A multi-frame TIFF (``N×H×W[×C]``) is segmented frame by frame, as the folder review does: frame ``f`` of the file
exported as ``<stem>`` is exported as ``<stem>_f000``, ``<stem>_f001``, …
(:func:`~napari_clipsam.export.stems.frame_stem`), each frame its own image of the dataset (written as PNG into ``coco/images`` and ``yolo/images``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Item:
    """One image of a ``segment`` run: ``path``, and ``frame`` (axis 0) of a multi-frame file or None."""

    path: Path
    frame: int | None = None

    def __str__(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame})"


def expand_frames(files: list[Path]) -> list[Item]:
    """The items of ``files``, in order: one per file, or one per frame of a multi-frame TIFF (read from its
    header; :func:`~napari_clipsam.io.images.frame_count`)."""
    from ..io.images import frame_count

    items = []
    for f in files:
        n = frame_count(f)
        items += [Item(f)] if n is None else [Item(f, i) for i in range(n)]
    return items


def item_stems(items: list[Item], file_stems: dict[Path, str]) -> dict[Item, str]:
    """Export stem of each item: its file's stem, with ``_f000``… for the frames of a multi-frame file."""
    from ..export.stems import frame_stem

    return {it: file_stems[it.path] if it.frame is None else frame_stem(file_stems[it.path], it.frame)
            for it in items}


class ItemReader:
    """Reads items' pixels; the frames of a multi-frame file come from one read of that file (kept until
    :meth:`release`, or until another multi-frame file is read when ``keep_one``)."""

    def __init__(self, keep_one: bool = True):
        self.keep_one = keep_one
        self.files: dict[Path, np.ndarray] = {}

    def read(self, item: Item) -> np.ndarray:
        """The item's raw pixels (:func:`~napari_clipsam.io.images.read_image`); errors as that function's, and an
        InvalidInputError naming the file when a file that was one image now holds several frames (or fewer)."""
        from ..errors import InvalidInputError
        from ..io.images import read_image

        if item.frame is None:
            pixels = read_image(item.path)
            if pixels.ndim == 4 or pixels.ndim == 3 and pixels.shape[-1] > 4:
                raise InvalidInputError(f"{item.path} holds {pixels.shape[0]} frames (shape {pixels.shape}); save "
                                        "it as a multi-frame TIFF to have each frame segmented, or one image per file.")
            return pixels
        stack = self.files.get(item.path)
        if stack is None:
            if self.keep_one:
                self.files.clear()
            stack = self.files[item.path] = read_image(item.path)
        if not (stack.ndim == 4 or stack.ndim == 3 and stack.shape[-1] > 4) or item.frame >= stack.shape[0]:
            raise InvalidInputError(f"{item.path} has no frame {item.frame} (shape {stack.shape}); was the file "
                                    "changed during the run? Run the command again.")
        return stack[item.frame]

    def release(self) -> None:
        self.files.clear()
