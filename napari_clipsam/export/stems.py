"""Export stems: the one place that says what an image's exported files are named after.

Every file an export writes is named ``<stem>…`` (``masks/<stem>_mask.png``, ``labels/<stem>.tif``, ...; see
:mod:`napari_clipsam.export`). The stem comes from one of three sources:

* **a folder of images** (the folder review and ``napari-clipsam segment``), :func:`export_stems`: the file stem,
  with the sub-folder path joined by ``__`` in recursive walks (``sub/a.png`` → ``sub__a``). Images whose stems
  would clash (case-insensitively: ``a.png`` and ``a.jpg``; ``x__a.png`` and ``x/a.png``) all get their extension
  appended (``a_png``, ``a_jpg``), then ``_2``, ``_3``... if they still clash. Stems already recorded (a folder
  review's manifest) are kept and stay reserved even for images that left the folder, so no export overwrites
  another's.
* **a napari layer** (the Export tab and the npe2 writer), :func:`source_stem` / :func:`layer_stem`: the source
  image file's stem, else the layer name, with white space runs made ``_``.
* **one frame of a stack**, :func:`frame_stem`: ``<stem>_f003``.

All of them pass through :func:`safe_stem` (characters a file name cannot hold become ``_``, long stems are cut
with a stable hash) and :func:`check_stem` is what every export request checks its stem with.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from ..errors import ExportError

__all__ = ["MAX_STEM_BYTES", "check_stem", "export_stems", "frame_stem", "layer_stem", "safe_stem", "source_stem"]

MAX_STEM_BYTES = 200
"""Longest export stem in UTF-8 bytes: file systems allow 255 bytes per name, and the longest name an export
writes is ``.<stem>_mask.png.<8 hex>.tmp`` (stem + 23), leaving room for suffixes."""

_UNSAFE_IN_NAME = re.compile(r'[\\/<>:"|?*\x00-\x1f]')
"""Characters no file name may hold on some system the dataset meets (Windows' reserved ones and control codes)."""


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_stem(stem) -> str:
    """``stem`` itself when it can name export files; else an :class:`ExportError` saying what is wrong."""
    if not isinstance(stem, str) or not stem or stem.strip() != stem or stem in (".", ".."):
        raise ExportError(f"stem must be a non-empty file stem without surrounding spaces, got {stem!r}")
    bad = sorted(set(_UNSAFE_IN_NAME.findall(stem)))
    if bad:
        raise ExportError(f"stem {stem!r} cannot be a file name: it contains {bad!r}; use the image file's stem only")
    size = _utf8_size(stem)
    if size > MAX_STEM_BYTES:
        raise ExportError(f"stem {stem[:40]!r}… is {size} bytes long; file systems allow 255 bytes per file name and "
                          f"the exports add suffixes, so use at most {MAX_STEM_BYTES} (safe_stem() shortens one).")
    return stem


def safe_stem(text: str) -> str:
    """A usable export stem made from free text (a layer name, a relative path): characters a file name cannot
    hold become ``_``; an empty, ``.`` or ``..`` result becomes ``image``; a stem longer than
    :data:`MAX_STEM_BYTES` is cut and ends with ``~`` and 8 hex digits of a hash of the whole text (stable)."""
    stem = _UNSAFE_IN_NAME.sub("_", str(text)).strip()
    if _utf8_size(stem) > MAX_STEM_BYTES:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = stem.encode("utf-8", "surrogatepass")[:MAX_STEM_BYTES - 9].decode("utf-8", "ignore").rstrip()
        stem = f"{head}~{digest}"
    return stem if stem not in ("", ".", "..") else "image"


def frame_stem(stem: str, frame: int | None) -> str:
    """``stem`` for a 2-D image (``frame`` None), ``<stem>_f003`` for frame 3 of a stack. A stem too long to take
    the suffix is cut as :func:`safe_stem` cuts one (``~`` and a hash of the whole stem), keeping ``_f003`` readable."""
    if frame is None:
        return stem
    suffix = f"_f{int(frame):03d}"
    if _utf8_size(stem) + len(suffix) > MAX_STEM_BYTES:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = stem.encode("utf-8", "surrogatepass")[:MAX_STEM_BYTES - 9 - len(suffix)].decode("utf-8", "ignore")
        stem = f"{head.rstrip()}~{digest}"
    return stem + suffix


def layer_stem(name: str) -> str:
    """A file stem made from a layer or file name, safe for every tool a dataset meets: runs of white space
    become ``_`` (``"metal plate"`` → ``metal_plate``), then :func:`safe_stem`, without edge dots."""
    return safe_stem("_".join(str(name).split())).strip(".") or "image"


def source_stem(name: str, file: str | None) -> str:
    """The export name of a source image: its file's stem when the layer came from a file, else the layer name
    (either made file-safe by :func:`layer_stem`)."""
    return layer_stem(Path(file).stem) if file else layer_stem(name)


def export_stems(keys: Iterable[str], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """A unique export stem per image key (a path relative to the folder, posix); see the module notes.

    ``known``: stems already recorded (key → stem, e.g. from a folder review's manifest). They are kept for the
    keys listed, and reserved even for keys not listed (images that left the folder still own their exports).
    """
    keys = list(keys)
    known = dict(known or {})
    stems: dict[str, str] = {}
    taken = {s.casefold() for s in known.values() if s}
    kept: set[str] = set()
    for key in keys:
        stem = known.get(key)
        if stem and safe_stem(stem) == stem and stem.casefold() not in kept:  # a hand-edited duplicate is redone
            stems[key] = stem
            kept.add(stem.casefold())
    rest = [k for k in keys if k not in stems]
    base = {k: safe_stem("__".join(PurePosixPath(k).with_suffix("").parts)) for k in rest}
    clashes = Counter(b.casefold() for b in base.values())
    for key in rest:
        stem = base[key]
        if clashes[stem.casefold()] > 1 or stem.casefold() in taken:
            stem = safe_stem(f"{stem}_{PurePosixPath(key).suffix.lstrip('.').lower()}")
        unique, n = stem, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{stem}_{n}"
        stems[key] = unique
        taken.add(unique.casefold())
    return {k: stems[k] for k in keys}
