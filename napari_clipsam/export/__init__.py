"""Pseudo-label export: one call writes an image's instances in several dataset formats at once.

>>> report = export_pseudo_labels("out", "000", instances, {1: "scratch"}, classes=["defect", "scratch"])

Output layout inside ``out_dir`` (``<stem>`` is the image's file stem, ``<split>`` ``train`` or ``val``):

=========================================  ========================================================
``masks/<stem>_mask.png``                  "mvtec": binary uint8 mask, exactly 0 / 255
``labels/<stem>.tif`` + ``.json``          "tiff": uint16 instance ids + ``{id: class}`` sidecar
``coco/annotations.json``                  "coco": shared by all images of the folder
``coco/images/<split>/<stem>.<ext>``       "coco" with ``dataset_images``: the image (``file_name``)
``yolo/labels/<split>/<stem>.txt``         "yolo": one polygon per instance, normalised coordinates
``yolo/images/<split>/<stem>.<ext>``       "yolo" with ``dataset_images``: the image
``yolo/data.yaml``                         "yolo": relative paths, class names (only grows)
``provenance/<stem>.json``                 always: who/what/when produced the files above
=========================================  ========================================================

The split is a seeded hash of the stem (:mod:`.dataset`): stable when images are added. Every file is
written atomically and the whole export is all-or-nothing (see :mod:`.atomic`). The module imports no
torch, so the CLI and the widget can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import AtomicBatch, ExportError
from .coco import (
    COCO_FILE,
    SEGMENTATION_MODES,
    coco_category_ids,
    encode_coco,
    find_coco_image,
    load_coco,
    put_coco_image,
    remember_coco,
)
from .dataset import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    check_split_options,
    dataset_split,
    image_payload,
    relative_posix,
)
from .mvtec import encode_mvtec_mask, mvtec_mask_path, read_mvtec_mask
from .provenance import PROVENANCE_DIR, encode_provenance, jsonable, package_version, provenance_path
from .validation import DEFAULT_CLASS, FORMATS, check_formats, check_instances, check_stem, resolve_classes
from .tiff import MAX_LABEL_ID, encode_label_classes, encode_label_tiff, label_tiff_paths, read_label_tiff
from .yolo import (
    YOLO_MIN_PIECE_AREA,
    data_yaml_path,
    encode_data_yaml,
    encode_yolo_labels,
    read_data_yaml,
    read_yolo_labels,
    yolo_image_path,
    yolo_label_path,
)

__all__ = [
    "FORMATS",
    "DEFAULT_CLASS",
    "PROVENANCE_DIR",
    "ExportError",
    "ExportReport",
    "export_pseudo_labels",
    "dataset_split",
    "safe_stem",
    "read_mvtec_mask",
    "read_label_tiff",
    "read_yolo_labels",
]



_UNSAFE_IN_NAME = re.compile(r'[\\/<>:"|?*\x00-\x1f]')


def safe_stem(text: str) -> str:
    """A usable export stem made from free text (a layer name, a relative path): characters a file name cannot
    hold become ``_``; an empty, ``.`` or ``..`` result becomes ``image``."""
    stem = _UNSAFE_IN_NAME.sub("_", str(text)).strip()
    return stem if stem not in ("", ".", "..") else "image"


SUMMARY_KEYS = (
    "yolo_dropped_pieces",
    "yolo_dropped_pixels",
    "yolo_hole_pixels",
    "yolo_bridge_pixels",
    "coco_polygon_holes_as_rle",
)


@dataclasses.dataclass
class ExportReport:
    """What one export did.

    Attributes:
        written: files created or replaced, in writing order (provenance last).
        skipped: existing files left untouched because ``overwrite`` was False.
        split: ``"train"`` or ``"val"``, the image's split in the dataset.
        summary: what the formats could not hold, in pixels or counts (0 when nothing was written):
            ``yolo_dropped_pieces`` / ``yolo_dropped_pixels`` (pieces below the minimum area),
            ``yolo_hole_pixels`` (hole pixels a YOLO polygon fills), ``yolo_bridge_pixels`` (background
            pixels drawn by the cuts joining pieces), ``coco_polygon_holes_as_rle`` (instances written as
            RLE in polygon mode because they have a hole).
    """

    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    split: str = "train"
    summary: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SUMMARY_KEYS, 0))


def export_pseudo_labels(
    out_dir: str | os.PathLike,
    stem: str,
    instances: np.ndarray,
    instance_classes: Mapping[int, str] | None = None,
    *,
    classes: Iterable[str] | None = None,
    formats: Iterable[str] = FORMATS,
    provenance: Mapping | None = None,
    image_file: str | os.PathLike | None = None,
    overwrite: bool = False,
    coco_segmentation: str = "rle",
    dataset_images: bool = False,
    image: np.ndarray | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    split_seed: int = DEFAULT_SPLIT_SEED,
    yolo_min_piece_area: int = YOLO_MIN_PIECE_AREA,
) -> ExportReport:
    """Write the pseudo-labels of one image in the requested formats.

    Args:
        out_dir: dataset folder, created if missing.
        stem: the image's file stem (``"000"``); must be usable as a file name (no path separators).
        instances: ``(H, W)`` integer (or bool) instance map; 0 = background, other values are
            instance ids, not necessarily contiguous. Must be non-negative; at most 65535 for "tiff".
        instance_classes: instance id -> class name. Ids missing here get ``"defect"``; ids not
            present in ``instances`` are ignored.
        classes: the user's class list, which orders COCO category ids and YOLO class indices in new
            files. Classes used by the instances but missing from it are appended. Default: the
            classes used (``["defect"]`` when there are none). A COCO file or ``data.yaml`` that
            already exists keeps its own order and gets new classes appended; the ids actually used
            are recorded under ``class_ids`` in the provenance.
        formats: any subset of :data:`FORMATS`.
        provenance: engine information (version, models, thresholds, prompts, edited flags...). Numpy
            scalars and small arrays, paths, enums, dates and dataclasses are converted to JSON.
        image_file: the original image file, recorded in the COCO entry (its name only, unless the
            images are written) and the provenance (as given); copied when ``dataset_images``.
        overwrite: replace this image's existing outputs (see below).
        coco_segmentation: ``"rle"`` (exact masks) or ``"polygon"`` (outer outlines of each piece; RLE
            for instances with a hole).
        dataset_images: also write the image into ``coco/images/<split>/`` and ``yolo/images/<split>/``
            (for the requested formats of those two), making a folder the trainers read as it is. Needs
            ``image`` or an existing ``image_file``.
        image: the image pixels (``(H, W)`` or ``(H, W, 3)`` uint8/uint16), written as PNG when
            ``dataset_images``; default: the bytes of ``image_file``.
        val_fraction, split_seed: the train/val split (:func:`~.dataset.dataset_split`).
        yolo_min_piece_area: pieces of an instance smaller than this (pixels) are left out of its YOLO
            polygon, except its largest piece (see :mod:`.outline`).

    Existing files:
        * Per-image files (mask PNG, label TIFF + JSON, YOLO txt, dataset images) are replaced only
          when ``overwrite`` is True. A format whose files all exist is skipped for this image and its
          files listed in ``report.skipped``, untouched; a format with only some of its files (left by
          an interrupted export) is written again in full, so it never pairs with another export.
        * ``coco/annotations.json``: other images are always kept and a new stem is always added; an
          existing entry for this stem is replaced only when ``overwrite`` is True (or its image is
          missing), else the file is untouched and listed in ``report.skipped``. Categories keep their
          ids; new ones are appended.
        * ``yolo/data.yaml``: (re)written, when this image's YOLO labels are written, if it is
          missing, lacks the relative layout or new class names have to be appended; existing names
          keep their indices.
        * ``provenance/<stem>.json``: a history updated whenever anything was written: the new record
          is appended, and older records are dropped once every format they wrote has been written
          again by a newer one. Nothing written means no new record.

    Returns:
        An :class:`ExportReport` of written and skipped files, the split and the summary.

    Raises:
        ExportError: invalid input (raised before anything is written), an unreadable shared file,
            or a file that could not be encoded or written (the folder is then left as it was).
    """
    # ---- validate everything before touching the disk
    instances = check_instances(instances)
    stem = check_stem(stem)
    formats = check_formats(formats)
    if coco_segmentation not in SEGMENTATION_MODES:
        raise ExportError(f"coco_segmentation must be one of {SEGMENTATION_MODES}, got {coco_segmentation!r}")
    check_split_options(val_fraction, split_seed)
    if isinstance(yolo_min_piece_area, bool) or not isinstance(yolo_min_piece_area, (int, np.integer)) \
            or yolo_min_piece_area < 1:
        raise ExportError(f"yolo_min_piece_area must be a whole number of pixels >= 1, got {yolo_min_piece_area!r}")
    ids = [int(i) for i in np.unique(instances) if i > 0]
    if "tiff" in formats and ids and ids[-1] > MAX_LABEL_ID:
        raise ExportError(
            f"instance id {ids[-1]} does not fit a uint16 label TIFF (max {MAX_LABEL_ID}); "
            "relabel the instances (e.g. skimage.segmentation.relabel_sequential) or leave out 'tiff'"
        )
    class_list, id_class = resolve_classes(ids, instance_classes, classes)
    engine = jsonable(provenance, "provenance") if provenance is not None else None
    if image_file is not None and not isinstance(image_file, (str, os.PathLike)):
        raise ExportError(f"image_file must be a file name, got {type(image_file).__name__}")
    image_file = None if image_file is None else os.fspath(image_file)
    out_dir = Path(out_dir)
    split = dataset_split(stem, float(val_fraction), int(split_seed))
    payload = None
    if dataset_images and {"coco", "yolo"} & set(formats):
        payload = image_payload(image_file, image)
        if image is not None and np.asarray(image).shape[:2] != instances.shape:
            raise ExportError(
                f"image has shape {np.asarray(image).shape[:2]} but instances {instances.shape}; they must match"
            )

    # ---- render every output in memory; reading the shared files may still refuse the export
    outputs: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    done: list[str] = []
    class_ids: dict[str, dict[str, int]] = {}
    report = ExportReport(split=split)

    def add(fmt: str, path: Path, encode) -> None:
        try:
            outputs.append((path, encode()))
        except ExportError:
            raise
        except Exception as err:  # an encoder failing must name the file, not crash anonymously
            raise ExportError(f"could not encode {path} ({fmt}): {err}") from err
        if fmt not in done:
            done.append(fmt)

    def complete(paths: list[Path]) -> bool:
        """Skip a format whose files all exist (unless overwrite); a partial one is written again."""
        if not overwrite and all(p.is_file() for p in paths):
            skipped.extend(paths)
            return True
        return False

    if "mvtec" in formats:
        path = mvtec_mask_path(out_dir, stem)
        if not complete([path]):
            add("mvtec", path, lambda: encode_mvtec_mask(instances))

    if "tiff" in formats:
        tif, sidecar = label_tiff_paths(out_dir, stem)
        if not complete([tif, sidecar]):
            add("tiff", tif, lambda: encode_label_tiff(instances))
            add("tiff", sidecar, lambda: encode_label_classes(stem, id_class, class_list, image_file))

    coco_written = None
    if "coco" in formats:
        path = out_dir / COCO_FILE
        coco = load_coco(path)
        coco_image = None if payload is None else path.parent / "images" / split / f"{stem}{payload[1]}"
        entry = find_coco_image(coco, stem)
        if entry is not None and not overwrite and (coco_image is None or coco_image.is_file()):
            skipped.extend([path] + ([coco_image] if coco_image is not None else []))
            remember_coco(path, coco)  # unchanged: the next export need not parse it again
        else:
            coco_written = (path, coco)
            category_ids = coco_category_ids(coco, class_list)
            if coco_image is not None:
                file_name = relative_posix(coco_image, path.parent)
            else:
                file_name = Path(image_file).name if image_file else stem
            _, holes = put_coco_image(
                coco,
                stem=stem,
                file_name=file_name,
                instances=instances,
                instance_classes=id_class,
                category_ids=category_ids,
                segmentation=coco_segmentation,
                split=split if coco_image is not None else None,
            )
            report.summary["coco_polygon_holes_as_rle"] = holes
            if coco_image is not None:
                add("coco", coco_image, lambda: payload[0])
            add("coco", path, lambda: encode_coco(coco))
            class_ids["coco"] = category_ids

    if "yolo" in formats:
        path = yolo_label_path(out_dir, stem, split)
        files = [path] + ([yolo_image_path(out_dir, stem, split, payload[1])] if payload is not None else [])
        if not complete(files):
            yaml_path = data_yaml_path(out_dir)
            old = read_data_yaml(yaml_path)
            old_names = old.get("names", [])
            names = old_names + [c for c in class_list if c not in old_names]
            index = {name: i for i, name in enumerate(names)}
            labels, stats = encode_yolo_labels(instances, id_class, index, int(yolo_min_piece_area))
            for key in ("dropped_pieces", "dropped_pixels", "hole_pixels", "bridge_pixels"):
                report.summary[f"yolo_{key}"] = getattr(stats, key)
            if payload is not None:
                add("yolo", files[1], lambda: payload[0])
            add("yolo", path, lambda: labels)
            if names != old_names or old.get("train") != "images/train" or old.get("val") != "images/val" \
                    or "path" in old and Path(str(old["path"])).is_absolute():
                add("yolo", yaml_path, lambda: encode_data_yaml(names, old))
            class_ids["yolo"] = index

    if outputs:
        record = {
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package": "napari-clipsam",
            "package_version": package_version(),
            "image_file": image_file,
            "image_shape": list(instances.shape),
            "split": split,
            "formats": done,
            "files": [_relative(p, out_dir) for p, _ in outputs],
            "skipped": [_relative(p, out_dir) for p in skipped],
            "overwrite": bool(overwrite),
            "classes": class_list,
            "instance_classes": {str(i): name for i, name in sorted(id_class.items())},
            "class_ids": class_ids,
            "summary": dict(report.summary),
            "engine": engine,
        }
        path = provenance_path(out_dir, stem)
        add("provenance", path, lambda: encode_provenance(path, stem, image_file, record))

    # ---- write: all files or none
    with AtomicBatch() as batch:
        for path, data in outputs:
            batch.stage(path, data)
        report.written = batch.commit()
    report.skipped = skipped
    if coco_written is not None:
        remember_coco(*coco_written)
    return report


# ---------------------------------------------------------------- helpers


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
