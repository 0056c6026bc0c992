"""Folder review: walk a folder of images, accept / reject / skip each one, resume where you stopped.

::

    s = QASession("plates/", "plates_labels/")
    s.resume()                                   # first image without a verdict
    result = engine.segment(s.read_image(), "metal plate")
    s.accept(result.instances, provenance=result.provenance)
    s.next()

The session holds no engine and imports no Qt: the napari widget, the CLI and scripts drive it the same way.
Verdicts live in the output folder's manifest (:mod:`.manifest`), saved atomically on every change.

Each image's labels are written under an *export stem*, made by :func:`napari_clipsam.export.stems.export_stems`
and kept in the manifest once the image has a verdict.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..export import FORMATS, ExportError, ExportReport, ExportRequest, label_tiff_paths, read_label_tiff, write_export
from ..export.stems import export_stems, frame_stem
from ..io.folders import DEFAULT_EXTENSIONS, find_images, normalise_extensions
from ..io.images import read_image
from .manifest import Entry, Manifest, Verdict, utc_now

__all__ = ["QASession"]


class QASession:
    """A review of the images of ``input_dir``, with labels and verdicts written to ``output_dir``.

    Args:
        input_dir: folder of images (read only, never written to).
        output_dir: where pseudo-labels and the manifest go; created on the first verdict.
        extensions: file suffixes taken as images (case-insensitive; ``"png"`` and ``".png"`` both work).
        recursive: also look in sub-folders. Hidden files and folders (``.name``) are ignored, and so is the
            output folder when it lies inside the input folder.

    Attributes:
        images: the image files, in natural order (``img2`` before ``img10``), listed once at opening.
        stems: image key (path relative to ``input_dir``, posix) → export stem.

    Raises:
        ValueError: the input folder is missing or holds no images, the output folder is a file, or its
            manifest belongs to another input folder (see :meth:`.Manifest.open`).
    """

    def __init__(self, input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                 extensions: Iterable[str] = DEFAULT_EXTENSIONS, recursive: bool = False):
        self.input_dir = _input_folder(input_dir)
        self.output_dir = Path(output_dir).expanduser().resolve()
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise InvalidInputError(f"The output folder {self.output_dir} is a file; choose a folder.")
        if recursive and self.output_dir == self.input_dir:
            raise InvalidInputError(f"The output folder is the input folder {self.input_dir}; in a recursive session "
                                    "its exported masks would be read as images. Choose a separate output folder.")
        self.extensions = normalise_extensions(extensions)
        self.recursive = bool(recursive)
        self.images: list[Path] = find_images(self.input_dir, self.extensions, self.recursive,
                                              exclude=self.output_dir)
        if not self.images:
            hint = "" if recursive else " (sub-folders were not searched; use recursive=True to include them)"
            raise InvalidInputError(f"No images found in {self.input_dir}{hint}: looked for files ending in "
                                    f"{', '.join(self.extensions)}. Choose a folder of images or add extensions.")
        self._manifest = Manifest.open(self.output_dir, self.input_dir)
        self._keys = [p.relative_to(self.input_dir).as_posix() for p in self.images]
        self._index_of = {key: i for i, key in enumerate(self._keys)}
        self.stems: dict[str, str] = export_stems(self._keys, {k: e.stem for k, e in self._manifest.entries.items()})
        self._index = 0

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"QASession({str(self.input_dir)!r} → {str(self.output_dir)!r}, "
                f"image {self._index + 1}/{len(self)}, {self.summary()})")

    # ------------------------------------------------------------------ where we are
    @property
    def index(self) -> int:
        """Position of the current image in :attr:`images` (setting it is :meth:`goto`)."""
        return self._index

    @index.setter
    def index(self, i: int) -> None:
        self.goto(i)

    @property
    def current(self) -> Path:
        return self.images[self._index]

    @property
    def manifest_path(self) -> Path:
        return self._manifest.path

    @property
    def manifest_csv_path(self) -> Path:
        return self._manifest.csv_path

    @property
    def manifest_recovered(self) -> Path | None:
        """Where an unreadable manifest found at opening was moved to (None if there was none): tell the user."""
        return self._manifest.moved_aside

    def next(self) -> Path:
        """Move to the next image (stays on the last one) and return it."""
        self._index = min(self._index + 1, len(self) - 1)
        return self.current

    def previous(self) -> Path:
        """Move to the previous image (stays on the first one) and return it."""
        self._index = max(self._index - 1, 0)
        return self.current

    def goto(self, path_or_index: int | str | os.PathLike) -> Path:
        """Move to an image given by position, path, or path relative to the input folder; return it."""
        self._index = self._locate(path_or_index)
        return self.current

    def first_undecided(self) -> int | None:
        """Position of the first image without a verdict, or None when every image has one."""
        return next((i for i, key in enumerate(self._keys) if key not in self._manifest.entries), None)

    def resume(self) -> Path:
        """Go to the first image without a verdict (the last image when all are decided) and return it."""
        i = self.first_undecided()
        return self.goto(len(self) - 1 if i is None else i)

    # ------------------------------------------------------------------ reading
    def key(self, path_or_index=None) -> str:
        """The image's path relative to the input folder (posix): its key in the manifest."""
        return self._keys[self._locate(path_or_index)]

    def stem(self, path_or_index=None) -> str:
        """The export stem of an image (the current one by default); see the module notes."""
        return self.stems[self.key(path_or_index)]

    def entry(self, path_or_index=None) -> Entry | None:
        """The manifest entry of an image (the current one by default), None when undecided."""
        return self._manifest.entries.get(self.key(path_or_index))

    def verdict(self, path_or_index=None) -> Verdict | None:
        """The verdict of an image (the current one by default), None when undecided."""
        entry = self.entry(path_or_index)
        return None if entry is None else entry.verdict

    def read_image(self, path_or_index=None) -> np.ndarray:
        """The raw pixels of an image (the current one by default), not rescaled: the engine normalises."""
        return read_image(self.images[self._locate(path_or_index)])

    def summary(self) -> dict[str, int]:
        """``{"accepted": n, "rejected": n, "skipped": n, "undecided": n, "total": n}`` over :attr:`images`."""
        counts = Counter(e.verdict for k in self._keys if (e := self._manifest.entries.get(k)) is not None)
        out = {v.value: counts[v] for v in Verdict}
        out["undecided"] = len(self) - sum(counts.values())
        out["total"] = len(self)
        return out

    # ------------------------------------------------------------------ verdicts
    def accept(self, instances, instance_classes: Mapping[int, str] | None = None, *,
               classes: Iterable[str] | None = None, provenance: Mapping | None = None,
               formats: Iterable[str] = FORMATS, overwrite: bool = True, edited: bool = False,
               note: str = "", multi_frame: bool = False) -> ExportReport:
        """Export the current image's pseudo-labels and record it as accepted (does not move on).

        ``instances`` is (H, W), or with ``multi_frame`` (N, H, W) for a multi-frame image (each frame under
        ``<stem>_f003``, as the Export tab names frames). ``instance_classes`` ... ``overwrite`` are passed to
        :class:`~napari_clipsam.export.ExportRequest` (with this image's export stem and its path relative
        to the input folder as ``image_file``). A label TIFF is always written (it is what :meth:`saved_labels`
        reads back when the review returns to the image). Every instance of an accepted image is recorded as verified
        by a person (``verified=True`` in each export; ``n_verified`` in the manifest). ``edited`` says the user corrected the engine's labels;
        it goes to the manifest and, as ``"edited"``, to the provenance when that is a mapping without such a key.

        Raises:
            ExportError: invalid labels, or a file (label or manifest) could not be written. The manifest
                then keeps the image's previous verdict.
        """
        key, stem = self.key(), self.stem()
        if isinstance(provenance, Mapping) and "edited" not in provenance:
            provenance = {**provenance, "edited": bool(edited)}
        formats = list(dict.fromkeys([*formats, "tiff"]))
        arr = np.asarray(instances)
        if multi_frame and arr.ndim != 3:
            raise ExportError(f"multi-frame labels must be (N, H, W), got shape {arr.shape}")
        planes = [(frame_stem(stem, f), arr[f]) for f in range(arr.shape[0])] if multi_frame else [(stem, arr)]
        reports = [write_export(ExportRequest(out_dir=self.output_dir, stem=s, instances=plane,
                                              instance_classes=instance_classes, classes=classes, formats=formats,
                                              provenance=provenance, image_file=key, overwrite=overwrite,
                                              verified=True))
                   for s, plane in planes]
        report = ExportReport(written=[p for r in reports for p in r.written],
                              skipped=[p for r in reports for p in r.skipped],
                              n_verified=sum(r.n_verified for r in reports), n_pseudo=sum(r.n_pseudo for r in reports))
        ids = np.unique(arr)
        outputs = [p.relative_to(self.output_dir).as_posix() for p in report.written + report.skipped]
        self._manifest.set(key, Entry(Verdict.ACCEPTED, utc_now(), stem, outputs=list(dict.fromkeys(outputs)),
                                      n_instances=int((ids > 0).sum()), edited=bool(edited), note=str(note),
                                      n_verified=report.n_verified))
        return report

    def saved_labels(self, path_or_index=None, frames: int | None = None):
        """The labels an earlier Accept saved for an image: ``(labels, {id: class})`` or None.

        ``labels`` is (H, W), or (N, H, W) when ``frames`` is N (a multi-frame image). None when the image is not
        accepted or its label TIFF is missing or unreadable (then there is nothing to show).
        """
        entry = self.entry(path_or_index)
        if entry is None or entry.verdict is not Verdict.ACCEPTED:
            return None
        stems = [entry.stem] if frames is None else [frame_stem(entry.stem, f) for f in range(frames)]
        planes, classes = [], {}
        for stem in stems:
            path = label_tiff_paths(self.output_dir, stem)[0]
            try:
                labels, table = read_label_tiff(path)
            except (OSError, ValueError):
                return None
            planes.append(np.asarray(labels, np.int32))
            classes.update(table)
        return (planes[0] if frames is None else np.stack(planes)), classes

    def reject(self, note: str = "") -> None:
        """Record the current image as rejected. Label files of an earlier Accept are left on disk (and listed)."""
        self._record(Verdict.REJECTED, note)

    def skip(self, note: str = "") -> None:
        """Record the current image as skipped (seen, no decision). Earlier label files are left on disk."""
        self._record(Verdict.SKIPPED, note)

    # ------------------------------------------------------------------ internals
    def _record(self, verdict: Verdict, note: str) -> None:
        key = self.key()
        old = self._manifest.entries.get(key)
        self._manifest.set(key, Entry(verdict, utc_now(), self.stems[key],
                                      outputs=list(old.outputs) if old else [], note=str(note)))

    def _locate(self, path_or_index) -> int:
        """Position of an image given as None (current), an index, or a path (absolute or input-relative)."""
        if path_or_index is None:
            return self._index
        if isinstance(path_or_index, (int, np.integer)) and not isinstance(path_or_index, (bool, np.bool_)):
            i = int(path_or_index)
            if not 0 <= i < len(self):
                raise IndexError(f"image index {i} is out of range: this session has {len(self)} images "
                                 f"(0..{len(self) - 1})")
            return i
        if not isinstance(path_or_index, (str, os.PathLike)):
            raise TypeError(f"expected an image index or path, got {type(path_or_index).__name__}")
        path = Path(path_or_index)
        candidates = [path]
        if path.is_absolute():
            candidates = []
            for p in (path, path.resolve()):
                try:
                    candidates.append(p.relative_to(self.input_dir))
                except ValueError:
                    pass
        for rel in candidates:
            i = self._index_of.get(rel.as_posix())
            if i is not None:
                return i
        raise InvalidInputError(f"{path_or_index} is not one of the {len(self)} images of this session "
                                f"({self.input_dir})")


# ---------------------------------------------------------------- folder helpers


def _input_folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.exists():
        raise InvalidInputError(f"The input folder {folder} does not exist; choose a folder of images.")
    if not folder.is_dir():
        raise InvalidInputError(f"The input {folder} is a file, not a folder; choose the folder that holds the images.")
    return folder
