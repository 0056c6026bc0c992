"""The folder review's output folder read as a training set (``--layout review``).

A review (:mod:`napari_clipsam.review`) writes, into its labels folder, ``clipsam_manifest.json`` (each image's
verdict, its export stem and the label files it wrote, the input folder's path) and the label files
(``masks/<stem>_mask.png``, ``labels/<stem>.tif``, ``provenance/<stem>.json``...). What a person accepted is what
can be learnt from:

- an image **accepted with objects** → an anomalous sample whose mask is the accepted labels (the MVTec-style
  mask, else the label TIFF);
- an image **accepted with no object** (a good part, Alt+G) → a normal sample (an all-normal mask);
- rejected, skipped and undecided images are left out.

The images themselves are read from the review's input folder (the manifest's ``input_dir``). The category (the
object named in the text prompts) is the object name the labels were made for (``provenance/<stem>.json``),
else the one given by the caller, else the input folder's name.

This module reads the manifest's JSON itself and never changes the folder (the review's own reader moves an
unreadable manifest aside; a training run must not). Nothing here imports torch.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputFileError, InvalidInputError, MissingFileError, PathKindError
from .samples import AnomalyDataset, Sample

MANIFEST_NAME = "clipsam_manifest.json"  # as napari_clipsam.review.manifest writes it
MANIFEST_FORMAT = "napari-clipsam/qa-manifest"
GOOD_VERDICTS = ("good", "defect-free")
"""Verdict names that mean "accepted as a defect-free part" (a review records these as ``accepted`` with no
object; the names are read too, should a manifest spell the verdict out)."""


@dataclass(frozen=True)
class ReviewedImage:
    """One image of a review with its verdict, as the training set sees it.

    ``kind``: ``"defect"`` (accepted with objects), ``"good"`` (accepted, no object), ``"rejected"``,
    ``"skipped"`` or ``"unusable"`` (accepted, but its labels are not usable here; ``why`` says why).
    """

    key: str
    image_path: Path
    stem: str
    kind: str
    mask_path: Path | None = None
    object_name: str | None = None
    edited: bool = False
    why: str = ""


@dataclass
class ReviewFolder:
    """What a review's labels folder holds: its input folder and every reviewed image."""

    labels_dir: Path
    input_dir: Path
    images: list[ReviewedImage] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[ReviewedImage]:
        return [im for im in self.images if im.kind in kinds]

    def counts(self) -> dict[str, int]:
        c = Counter(im.kind for im in self.images)
        return {k: c[k] for k in ("defect", "good", "rejected", "skipped", "unusable")}


def is_review_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a review's labels folder (holds ``clipsam_manifest.json``)."""
    return (Path(folder).expanduser() / MANIFEST_NAME).is_file()


def read_review(labels_dir: str | Path) -> ReviewFolder:
    """Read a review's labels folder; raises a clear error when it is not one or its manifest is unreadable."""
    labels_dir = Path(labels_dir).expanduser()
    if not labels_dir.exists():
        raise MissingFileError(f"The review labels folder {labels_dir} does not exist; give the output folder of a "
                               "folder review (the one holding clipsam_manifest.json).")
    if not labels_dir.is_dir():
        raise PathKindError(f"{labels_dir} is a file; give the output folder of a folder review.")
    labels_dir = labels_dir.resolve()
    path = labels_dir / MANIFEST_NAME
    if not path.is_file():
        raise InvalidInputError(
            f"{labels_dir} is not a review's labels folder: it holds no {MANIFEST_NAME}. Give the output folder "
            "you chose in the dock's folder review (Review tab; or `--layout folder` for an images/ + masks/ folder).")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputFileError(f"The review's manifest {path} cannot be read ({err}); open the folder in the dock's "
                             "folder review (Review tab) once (it repairs or sets aside a damaged manifest).") from err
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("images"), dict):
        raise InvalidInputError(f"{path} is not a napari-clipsam review manifest (format {MANIFEST_FORMAT!r} "
                                "with an 'images' table expected).")
    input_dir = doc.get("input_dir")
    if not isinstance(input_dir, str) or not input_dir:
        raise InvalidInputError(f"The review's manifest {path} names no input folder ('input_dir').")
    input_dir = Path(input_dir)
    folder = ReviewFolder(labels_dir, input_dir)
    for key, entry in sorted(doc["images"].items()):
        if isinstance(entry, dict):
            folder.images.append(_reviewed(labels_dir, input_dir, str(key), entry))
    return folder


def _reviewed(labels_dir: Path, input_dir: Path, key: str, entry: dict) -> ReviewedImage:
    verdict = str(entry.get("verdict", "")).lower()
    stem = str(entry.get("stem") or Path(key).stem)
    image = input_dir / key
    outputs = [o for o in entry.get("outputs") or [] if isinstance(o, str)]
    n = entry.get("n_instances")
    base = dict(key=key, image_path=image, stem=stem, edited=bool(entry.get("edited", False)),
                object_name=_object_name(labels_dir, stem))
    if verdict in ("rejected", "skipped"):
        return ReviewedImage(kind=verdict, **base)
    if verdict in GOOD_VERDICTS or (verdict == "accepted" and n == 0):
        kind = "good"
    elif verdict == "accepted":
        kind = "defect"
    else:
        return ReviewedImage(kind="unusable", why=f"unknown verdict {verdict!r}", **base)
    if not image.is_file():
        return ReviewedImage(kind="unusable", why=f"the image {image} is no longer there", **base)
    if any(o.startswith(f"labels/{stem}_f") for o in outputs) and f"labels/{stem}.tif" not in outputs:
        return ReviewedImage(kind="unusable", why="a multi-frame image (frames are not used for training)", **base)
    if kind == "good":
        return ReviewedImage(kind="good", **base)
    for rel in (f"masks/{stem}_mask.png", f"labels/{stem}.tif"):
        if (labels_dir / rel).is_file():
            return ReviewedImage(kind="defect", mask_path=labels_dir / rel, **base)
    return ReviewedImage(kind="unusable", why=f"its label files (masks/{stem}_mask.png, labels/{stem}.tif) are "
                         "missing", **base)


def _object_name(labels_dir: Path, stem: str) -> str | None:
    """The object name the latest export of ``stem`` was made for (its provenance file), or None."""
    try:
        doc = json.loads((labels_dir / "provenance" / f"{stem}.json").read_text(encoding="utf-8"))
        name = (doc["exports"][-1].get("engine") or {}).get("object_name")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return name.strip() if isinstance(name, str) and name.strip() else None


def accepted_good_images(labels_dir: str | Path) -> list[Path]:
    """The images a review accepted as defect-free parts (still on disk), in the manifest's order: the normal
    references a review's labels folder gives (``segment --normal LABELS_FOLDER``)."""
    return [im.image_path for im in read_review(labels_dir).of_kind("good")]


class ReviewDataset(AnomalyDataset):
    """A review's accepted labels as a dataset: accepted images with objects (their masks) and accepted good
    parts (all normal). See the module notes.

    Args:
        root: the review's labels folder.
        category: the object name for every sample (default: each label's own, else the input folder's name).

    Attributes:
        review: the :class:`ReviewFolder` read. notes: one line per image left out (and why).
    """

    layout = "review"

    def __init__(self, root: str | Path, category: str | None = None):
        self.review = read_review(root)
        fallback = category or self.review.input_dir.name or "object"
        samples, self.notes = [], []
        for im in self.review.images:
            if im.kind == "unusable":
                self.notes.append(f"{im.key}: left out, {im.why}")
                continue
            if im.kind not in ("defect", "good"):
                continue
            name = category or im.object_name or fallback
            samples.append(Sample(im.image_path, im.mask_path, name, "anomaly" if im.kind == "defect" else "good",
                                  int(im.kind == "defect")))
        super().__init__(self.review.labels_dir, samples)

    def provenance(self) -> dict:
        """What this training set is made of: the labels folder, its input folder and each image used."""
        used = {str(s.image_path) for s in self.samples}
        return {
            "labels_dir": str(self.review.labels_dir), "input_dir": str(self.review.input_dir),
            "verdicts": self.review.counts(),
            "images": [{"image": im.key, "stem": im.stem, "kind": im.kind, "edited": im.edited,
                        "mask": None if im.mask_path is None else im.mask_path.relative_to(
                            self.review.labels_dir).as_posix()}
                       for im in self.review.images if str(im.image_path) in used and im.kind in ("defect", "good")],
            "left_out": list(self.notes),
        }
