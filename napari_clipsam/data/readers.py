"""Readers for the anomaly-segmentation dataset layouts we evaluate on.

- :class:`MVTecDataset`: MVTec-AD (``<category>/test/<defect>/*.png`` with
  ``<category>/ground_truth/<defect>/<stem>_mask.png``).
- :class:`VisADataset`: VisA, driven by ``split_csv/1cls.csv``.
- :class:`FolderDataset`: ``images/`` + ``masks/`` (what the plugin exports).
- :class:`~.review_labels.ReviewDataset`: a folder review's labels folder (its accepted labels).
- :func:`open_dataset`: picks one of the above from the folder's contents.

Every reader checks the files up front (existence, masks present for every
anomalous image) and raises errors that name the offending path; pixels are
only read when a sample is indexed.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputFileError, InvalidInputError, MissingFileError, PathKindError
from ..io.images import IMAGE_SUFFIXES
from .review_labels import ReviewDataset, is_review_folder
from .samples import AnomalyDataset, Sample

SPLITS = ("train", "test")
LAYOUTS = ("auto", "mvtec", "visa", "folder", "review")
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def _read_text(path: Path) -> str:
    """A CSV's text: UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark (as spreadsheet
    programs save "Unicode text"); anything else raises InputFileError saying how to save it."""
    data = path.read_bytes()
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputFileError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as a UTF-8 CSV "
                             "(comma-separated, 'CSV UTF-8' in spreadsheet programs).") from err


def _existing_dir(root: str | Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingFileError(f"{what} root {root} does not exist; pass the folder that holds the dataset.")
    if not root.is_dir():
        raise PathKindError(f"{what} root {root} is a file, not a folder.")
    return root


def _listing(folder: Path, limit: int = 12) -> str:
    """Short human-readable listing of a folder's entries for error messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "found: " + ", ".join(names[:limit]) + more


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}.")


def _select(requested: str | Iterable[str] | None, available: list[str], root: Path) -> list[str]:
    """Validate a category request against the categories found under ``root``."""
    if requested is None:
        return available
    wanted = [requested] if isinstance(requested, str) else list(requested)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise InvalidInputError(
            f"Category {', '.join(map(repr, unknown))} not found in {root}; "
            f"available categories: {', '.join(available) or 'none'}."
        )
    return wanted


def _require_masks(samples: list[Sample], categories: list[str], root: Path, hint: str) -> None:
    """Raise when a selected category has no anomalous (masked) test image."""
    for category in categories:
        if not any(s.label == 1 for s in samples if s.category == category):
            raise InvalidInputError(
                f"Category {category!r} in {root} has no anomalous images with masks at all, "
                f"so pixel metrics cannot be computed; {hint}"
            )


class MVTecDataset(AnomalyDataset):
    """MVTec-AD layout.

    ``<root>/<category>/train/good/*.png``, ``<root>/<category>/test/<defect>/*.png``
    and ``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.

    Args:
        root: folder holding one sub-folder per category.
        categories: a category name, a list of names, or ``None`` for all.
        split: ``"test"`` (normal + anomalous with masks) or ``"train"`` (normal only).
    """

    layout = "mvtec"

    def __init__(self, root: str | Path, categories: str | Iterable[str] | None = None, split: str = "test"):
        root = _existing_dir(root, "MVTec-AD")
        _check_split(split)
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "test").is_dir())
        if not available:
            raise InvalidInputError(
                f"No MVTec-AD categories in {root}: expected <root>/<category>/test/<defect>/*.png; "
                f"{_listing(root)}."
            )
        selected = _select(categories, available, root)
        samples: list[Sample] = []
        for category in selected:
            samples.extend(self._category_samples(root / category, split))
        if split == "test":
            _require_masks(
                samples, selected, root,
                "expected defect folders under <category>/test/ with masks in <category>/ground_truth/.",
            )
        super().__init__(root, samples)

    @staticmethod
    def _category_samples(folder: Path, split: str) -> list[Sample]:
        category = folder.name
        split_dir = folder / split
        if not split_dir.is_dir():
            raise MissingFileError(f"Category {category!r} has no {split!r} folder: {split_dir} is missing.")
        defects = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if split == "train":
            defects = [d for d in defects if d == "good"]
        anomalous = [d for d in defects if d != "good"]
        gt_root = folder / "ground_truth"
        if anomalous and not gt_root.is_dir():
            raise MissingFileError(
                f"Category {category!r} has no masks at all: {gt_root} is missing "
                f"(needed for the defect folders {', '.join(anomalous)})."
            )
        samples = []
        for defect in defects:
            for image_path in _image_files(split_dir / defect):
                if defect == "good":
                    samples.append(Sample(image_path, None, category, "good", 0))
                    continue
                mask_path = gt_root / defect / f"{image_path.stem}_mask.png"
                if not mask_path.is_file():
                    raise MissingFileError(
                        f"Mask missing for anomalous image {image_path}: expected {mask_path}."
                    )
                samples.append(Sample(image_path, mask_path, category, defect, 1))
        return samples


class VisADataset(AnomalyDataset):
    """VisA layout, driven by ``<root>/split_csv/1cls.csv``.

    The CSV has columns ``object,split,label,image,mask``; ``label`` is
    ``normal`` or ``anomaly`` and paths are relative to ``root`` (``mask``
    empty for normal images). VisA has no defect types, so anomalous samples
    get ``defect="anomaly"``.

    Args:
        root: the VisA root (holding ``split_csv/`` and the category folders).
        categories: a category name, a list of names, or ``None`` for all.
        split: ``"test"`` or ``"train"``.
    """

    layout = "visa"

    def __init__(self, root: str | Path, categories: str | Iterable[str] | None = None, split: str = "test"):
        root = _existing_dir(root, "VisA")
        _check_split(split)
        rows = self._read_csv(root)
        available = list(dict.fromkeys(row["object"] for row in rows))
        selected = _select(categories, available, root)
        samples = []
        for line, row in enumerate(rows, start=2):
            if row["split"] != split or row["object"] not in selected:
                continue
            samples.append(self._row_sample(root, row, line))
        samples.sort(key=lambda s: (selected.index(s.category), s.label, str(s.image_path)))
        if split == "test":
            _require_masks(samples, selected, root, f"check the 'label' and 'mask' columns of {root / VISA_CSV}.")
        super().__init__(root, samples)

    @staticmethod
    def _read_csv(root: Path) -> list[dict[str, str]]:
        csv_path = root / VISA_CSV
        if csv_path.is_dir():
            raise PathKindError(f"VisA split file {csv_path} is a folder; it must be the CSV file split_csv/1cls.csv.")
        if not csv_path.is_file():
            raise MissingFileError(
                f"VisA split file {csv_path} not found; VisA needs split_csv/1cls.csv ({_listing(root)})."
            )
        with io.StringIO(_read_text(csv_path), newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInputError(
                    f"{csv_path} lacks the column(s) {', '.join(missing)}; expected header "
                    f"{','.join(VISA_COLUMNS)}, got {','.join(reader.fieldnames or [])}."
                )
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]

    @staticmethod
    def _row_sample(root: Path, row: dict[str, str], line: int) -> Sample:
        where = f"{root / VISA_CSV} line {line}"
        image_path = root / row["image"]
        if not image_path.is_file():
            raise MissingFileError(f"Image {image_path} listed in {where} does not exist.")
        label = row["label"].lower()
        if label == "normal":
            return Sample(image_path, None, row["object"], "good", 0)
        if label != "anomaly":
            raise InvalidInputError(f"Unknown label {row['label']!r} in {where}; expected 'normal' or 'anomaly'.")
        if not row["mask"]:
            raise InvalidInputError(f"Anomalous image {image_path} has no mask in {where}; fill in its 'mask' column.")
        mask_path = root / row["mask"]
        if not mask_path.is_file():
            raise MissingFileError(f"Mask missing for anomalous image {image_path}: {mask_path} ({where}).")
        return Sample(image_path, mask_path, row["object"], "anomaly", 1)


class FolderDataset(AnomalyDataset):
    """Plain folder layout: ``<root>/images/<stem>.<ext>`` + ``<root>/masks/``.

    A mask is looked up as ``masks/<stem>_mask.png`` (what the plugin's
    MVTec-style exporter writes) and then ``masks/<stem>.png``; an image without
    either is normal. Anomalous samples get ``defect="anomaly"``.

    Args:
        root: folder holding ``images/`` and ``masks/``.
        category: the category name; defaults to the root folder's name.
        require_masks: raise when no image has a mask (the usual cause is a
            naming mismatch); set False to read a folder of unlabelled images.
    """

    layout = "folder"

    def __init__(self, root: str | Path, category: str | None = None, require_masks: bool = True):
        root = _existing_dir(root, "Folder dataset")
        images_dir, masks_dir = root / "images", root / "masks"
        if not images_dir.is_dir():
            raise MissingFileError(f"Folder dataset needs {images_dir} ({_listing(root)}).")
        category = category or root.name
        images = _image_files(images_dir)
        if not images:
            raise InvalidInputError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}; "
                                    f"{_listing(images_dir)}.")
        samples = []
        for image_path in images:
            mask_path = self._find_mask(masks_dir, image_path.stem)
            if mask_path is None:
                samples.append(Sample(image_path, None, category, "good", 0))
            else:
                samples.append(Sample(image_path, mask_path, category, "anomaly", 1))
        if require_masks and not any(s.label for s in samples):
            found = _listing(masks_dir) if masks_dir.is_dir() else "the folder does not exist"
            raise InvalidInputError(
                f"Category {category!r} has no masks at all: none of the {len(images)} images in {images_dir} "
                f"has a mask {masks_dir}/<stem>_mask.png or <stem>.png ({found})."
            )
        super().__init__(root, samples)

    @staticmethod
    def _find_mask(masks_dir: Path, stem: str) -> Path | None:
        for name in (f"{stem}_mask.png", f"{stem}.png"):
            if (masks_dir / name).is_file():
                return masks_dir / name
        return None


def _layout_of(folder: Path) -> str | None:
    if (folder / VISA_CSV).is_file():
        return "visa"
    if is_review_folder(folder):
        return "review"
    if (folder / "images").is_dir():
        return "folder"
    if any(p.is_dir() and (p / "test").is_dir() for p in folder.iterdir()):
        return "mvtec"
    return None


def detect_layout(root: str | Path) -> str:
    """Return ``"visa"``, ``"review"``, ``"folder"`` or ``"mvtec"`` from a folder's contents.

    ``split_csv/1cls.csv`` → visa; ``clipsam_manifest.json`` → review; an ``images/`` folder → folder; sub-folders
    with a ``test/`` folder → mvtec. Otherwise raises ValueError listing what
    was found (and suggesting a sub-folder that holds a dataset, if any).
    """
    root = _existing_dir(root, "Dataset")
    layout = _layout_of(root)
    if layout is not None:
        return layout
    nested = [p.name for p in sorted(root.iterdir()) if p.is_dir() and _layout_of(p)]
    hint = f" Did you mean {root / nested[0]}?" if nested else ""
    raise InvalidInputError(
        f"Cannot recognise the dataset layout of {root}: expected split_csv/1cls.csv (VisA), "
        f"an images/ folder (folder layout) or <category>/test/ folders (MVTec-AD); {_listing(root)}.{hint}"
    )


def open_dataset(
    root: str | Path,
    layout: str = "auto",
    categories: str | Iterable[str] | None = None,
    split: str = "test",
) -> AnomalyDataset:
    """Open a dataset of any supported layout.

    Args:
        root: the dataset folder.
        layout: ``"auto"`` (see :func:`detect_layout`), ``"mvtec"``, ``"visa"``, ``"folder"`` or ``"review"``
            (a folder review's labels folder: its accepted labels, see :mod:`.review_labels`).
        categories: categories to keep (``None`` = all). For the folder and review
            layouts, a single name renames the category.
        split: ``"test"`` or ``"train"`` (MVTec-AD and VisA only).
    """
    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "mvtec":
        return MVTecDataset(root, categories, split)
    if layout == "visa":
        return VisADataset(root, categories, split)
    if split != "test":
        raise InvalidInputError(f"The {layout} layout has no {split!r} split ({root}); use split='test'.")
    names = [categories] if isinstance(categories, str) else list(categories or [])
    if len(names) > 1:
        raise InvalidInputError(f"The {layout} layout holds one category; got {names} for {root}.")
    if layout == "review":
        return ReviewDataset(root, category=names[0] if names else None)
    return FolderDataset(root, category=names[0] if names else None)
