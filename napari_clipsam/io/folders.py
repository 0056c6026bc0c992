"""Folders of images: which files count as images, and in which order they are walked.

One rule for the folder review, ``napari-clipsam segment`` and the widget's reference folder:
:func:`find_images` lists a folder's images (hidden files and folders skipped, symlinked folders not followed)
in :func:`natural_key` order (``img2`` before ``img10``); :func:`normalise_extensions` turns what a person typed
(``"png"``, ``".PNG"``) into the suffixes it matches.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ..errors import InvalidInputError
from .images import IMAGE_SUFFIXES

__all__ = ["DEFAULT_EXTENSIONS", "find_images", "natural_key", "normalise_extensions"]

DEFAULT_EXTENSIONS = IMAGE_SUFFIXES
"""The file suffixes taken as images when none are given: every suffix :func:`~.images.read_image` reads."""


def natural_key(relative_path: str | PurePosixPath) -> tuple:
    """Sort key that orders numbers by value, case-insensitively, part by part: ``img2`` < ``img10``,
    ``a/z.png`` < ``b.png``. Ties (``01`` vs ``1``) fall back to the plain text."""
    parts = PurePosixPath(relative_path).parts
    # re.split with a group alternates text, number, text...: even positions are text, odd ones digits
    return tuple(tuple(int(t) if j % 2 else t.casefold() for j, t in enumerate(re.split(r"(\d+)", part)))
                 for part in parts), str(relative_path)


def find_images(folder: Path, extensions: Iterable[str], recursive: bool = False,
                exclude: Path | None = None) -> list[Path]:
    """Image files of ``folder`` in natural order; hidden files/folders and the ``exclude`` folder are skipped.

    ``extensions`` are lower-case suffixes with their dot (see :func:`normalise_extensions`). Symlinked folders
    are not followed (no cycles).
    """
    folder = Path(folder)
    suffixes = {e.lower() for e in extensions}
    found = []
    for root, dirs, files in os.walk(folder):
        root = Path(root)
        dirs[:] = [d for d in dirs if recursive and not d.startswith(".") and (root / d) != exclude]
        found += [root / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in suffixes
                  and (root / f).is_file()]
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """File suffixes as :func:`find_images` matches them (``"PNG"`` → ``".png"``), in order, without repeats.

    Raises:
        InvalidInputError: an entry is not a suffix, or there are none.
    """
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip(". "):
            raise InvalidInputError(f"extensions must be file suffixes such as '.png', got {ext!r}")
        ext = "." + ext.strip().lstrip(".").lower()
        if ext not in out:
            out.append(ext)
    if not out:
        raise InvalidInputError("extensions is empty; give at least one file suffix such as '.png'")
    return tuple(out)


#: Default of ``segment --mutual-group-size``: images scored together (memory and time per image grow with it).
DEFAULT_GROUP_SIZE = 50


def folder_groups(items: list, size: int) -> list[list]:
    """``items`` in ``ceil(N / size)`` interleaved groups (item ``i`` in group ``i mod k``), each in input order:
    the mutual-scoring groups ``napari-clipsam segment`` scores one after another (``cli/segment_groups.py``;
    the bench's memory row uses the same split)."""
    k = max(1, -(-len(items) // size))
    return [items[g::k] for g in range(k)]
