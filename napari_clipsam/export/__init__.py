"""Pseudo-label export: one call writes an image's instances in several dataset formats at once.

>>> report = export_pseudo_labels("out", "000", instances, {1: "scratch"}, classes=["defect", "scratch"])

Output layout inside ``out_dir`` (``<stem>`` is the image's file stem, ``<split>`` ``train`` or ``val``):

=========================================  ========================================================
``masks/<stem>_mask.png``                  "mvtec": binary uint8 mask, exactly 0 / 255
``labels/<stem>.tif`` + ``.json``          "tiff": uint16 instance ids + ``{id: class}`` sidecar
``coco/shards/<stem>.json``               "coco": this image's entry and annotations
``coco/annotations.json``                  "coco": all shards merged (see :mod:`.coco_merge`)
``coco/images/<split>/<stem>.<ext>``       "coco" with ``dataset_images``: the image (``file_name``)
``yolo/labels/<split>/<stem>.txt``         "yolo": one polygon per instance, normalised coordinates
``yolo/images/<split>/<stem>.<ext>``       "yolo" with ``dataset_images``: the image
``yolo/data.yaml``                         "yolo": relative paths, class names (only grows)
``provenance/<stem>.json``                 always: who/what/when produced the files above
=========================================  ========================================================

The split is a seeded hash of the stem (:mod:`.dataset`): stable when images are added. Every file is
written atomically and the whole export is all-or-nothing (see :mod:`napari_clipsam.io.atomic`). The module imports no
torch, so the CLI and the widget can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..io.atomic import AtomicBatch
from .coco import COCO_FILE, SEGMENTATION_MODES, coco_annotations
from .coco_merge import encode_coco_shard, merge_coco
from .dataset import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_VAL_FRACTION,
    check_split_options,
    dataset_split,
    image_payload,
    relative_posix,
)
from .done import format_files, image_done, unfinished_formats
from .locking import clean_stale_files, folder_lock
from .mvtec import encode_mvtec_mask, mvtec_mask_path, read_mvtec_mask
from .provenance import PROVENANCE_DIR, encode_provenance, jsonable, package_version, provenance_path
from .tiff import MAX_LABEL_ID, encode_label_classes, encode_label_tiff, label_tiff_paths, read_label_tiff
from .validation import (DEFAULT_CLASS, FORMATS, MAX_STEM_BYTES, check_formats, check_instances, check_stem,
                         resolve_classes)
from .yolo import (
    YOLO_MIN_PIECE_AREA,
    check_class_order,
    data_yaml_path,
    encode_data_yaml,
    encode_yolo_labels,
    read_data_yaml,
    read_yolo_labels,
)

__all__ = [
    "FORMATS",
    "DEFAULT_CLASS",
    "PROVENANCE_DIR",
    "ExportError",
    "ExportReport",
    "export_pseudo_labels",
    "dataset_split",
    "image_done",
    "merge_coco",
    "clean_stale_files",
    "safe_stem",
    "read_mvtec_mask",
    "read_label_tiff",
    "read_yolo_labels",
]



_UNSAFE_IN_NAME = re.compile(r'[\\/<>:"|?*\x00-\x1f]')


def safe_stem(text: str) -> str:
    """A usable export stem made from free text (a layer name, a relative path): characters a file name cannot
    hold become ``_``; an empty, ``.`` or ``..`` result becomes ``image``; a stem longer than
    :data:`MAX_STEM_BYTES` is cut and ends with ``~`` and 8 hex digits of a hash of the whole text (stable)."""
    stem = _UNSAFE_IN_NAME.sub("_", str(text)).strip()
    if len(stem.encode("utf-8", "surrogatepass")) > MAX_STEM_BYTES:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        head = stem.encode("utf-8", "surrogatepass")[:MAX_STEM_BYTES - 9].decode("utf-8", "ignore").rstrip()
        stem = f"{head}~{digest}"
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
        written: files created or replaced, in writing order (provenance first; the merged
            ``coco/annotations.json`` last when the shard was merged).
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
    coco_merge: bool = True,
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
        coco_merge: fold this image's COCO shard into ``coco/annotations.json`` now (default). Batch
            writers pass False and call :func:`~.coco_merge.merge_coco` once at the end: the cost of one
            image's export then does not grow with the folder.
        dataset_images: also write the image into ``coco/images/<split>/`` and ``yolo/images/<split>/``
            (for the requested formats of those two), making a folder the trainers read as it is. Needs
            ``image`` or an existing ``image_file``.
        image: the image pixels (``(H, W)`` or ``(H, W, 3)`` uint8/uint16), written as PNG when
            ``dataset_images``; default: the bytes of ``image_file``.
        val_fraction, split_seed: the train/val split (:func:`~.dataset.dataset_split`).
        yolo_min_piece_area: pieces of an instance smaller than this (pixels) are left out of its YOLO
            polygon, except its largest piece (see :mod:`.outline`).

    Existing files (one definition of "done" with ``segment``'s resume, see :mod:`.done`):
        * A format whose per-image files are all in place is skipped (files listed in
          ``report.skipped``, untouched) unless ``overwrite``; a format with a file missing, or left
          unfinished by an interrupted export, is written again in full. Files no export recorded
          (made by hand) and files changed after their export are never replaced without ``overwrite``.
        * COCO: the image's shard ``coco/shards/<stem>.json`` is its per-image file; the merge into
          ``coco/annotations.json`` keeps other images, image ids by stem and category ids.
        * ``yolo/data.yaml``: class names only ever grow (existing names keep their indices); an
          explicit ``classes`` list that orders known classes differently is refused.
        * ``provenance/<stem>.json``: a new record (first file of the batch, with the SHA-256 of each
          per-image file) whenever anything is written or none exists; older records are dropped once
          every format they wrote has been written again.
        * The folder's lock (:mod:`.locking`) is held throughout: shared files are re-read, merged and
          written by one process at a time.

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

    image_suffix = payload[1] if payload is not None else None
    with folder_lock(out_dir):  # shared files are read, merged and written by one process at a time
        report, coco_written = _export_locked(
            out_dir, stem, instances, formats, split, image_suffix, payload, overwrite, class_list, id_class,
            classes is not None, image_file, engine, coco_segmentation, int(yolo_min_piece_area))
        if coco_written and coco_merge:
            merged = merge_coco(out_dir, [stem])
            if merged is not None:
                report.written.append(merged)
    return report


def _export_locked(out_dir, stem, instances, formats, split, image_suffix, payload, overwrite, class_list,
                   id_class, classes_given, image_file, engine, coco_segmentation, yolo_min_piece_area):
    """The body of :func:`export_pseudo_labels`, run under the folder lock: ``(report, coco shard written)``."""
    outputs: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    done: list[str] = []
    class_ids: dict[str, dict[str, int]] = {}
    report = ExportReport(split=split)
    unfinished = set(formats) if overwrite else set(
        unfinished_formats(out_dir, stem, formats, split=split, image_suffix=image_suffix))

    def add(fmt: str, path: Path, encode) -> None:
        try:
            outputs.append((path, encode()))
        except ExportError:
            raise
        except Exception as err:  # an encoder failing must name the file, not crash anonymously
            raise ExportError(f"could not encode {path} ({fmt}): {err}") from err
        if fmt not in done:
            done.append(fmt)

    for fmt in formats:
        if fmt not in unfinished:
            skipped.extend(format_files(out_dir, stem, fmt, split, image_suffix))
    if "mvtec" in unfinished:
        add("mvtec", mvtec_mask_path(out_dir, stem), lambda: encode_mvtec_mask(instances))

    if "tiff" in unfinished:
        tif, sidecar = label_tiff_paths(out_dir, stem)
        add("tiff", tif, lambda: encode_label_tiff(instances))
        add("tiff", sidecar, lambda: encode_label_classes(stem, id_class, class_list, image_file))

    if "coco" in unfinished:
        shard, *image = format_files(out_dir, stem, "coco", split, image_suffix)
        if image:
            file_name = relative_posix(image[0], out_dir / COCO_FILE.parent)
            add("coco", image[0], lambda: payload[0])
        else:
            file_name = Path(image_file).name if image_file else stem
        annotations, holes = coco_annotations(instances, id_class, coco_segmentation)
        report.summary["coco_polygon_holes_as_rle"] = holes
        add("coco", shard, lambda: encode_coco_shard(stem=stem, file_name=file_name, shape=instances.shape,
                                                     split=split if image else None, classes=class_list,
                                                     annotations=annotations))

    if "yolo" in unfinished:
        label, *image = format_files(out_dir, stem, "yolo", split, image_suffix)
        yaml_path = data_yaml_path(out_dir)
        old = read_data_yaml(yaml_path)
        old_names = old.get("names", [])
        if classes_given:
            check_class_order(yaml_path, old_names, class_list)
        names = old_names + [c for c in class_list if c not in old_names]
        index = {name: i for i, name in enumerate(names)}
        labels, stats = encode_yolo_labels(instances, id_class, index, yolo_min_piece_area)
        for key in ("dropped_pieces", "dropped_pixels", "hole_pixels", "bridge_pixels"):
            report.summary[f"yolo_{key}"] = getattr(stats, key)
        if image:
            add("yolo", image[0], lambda: payload[0])
        add("yolo", label, lambda: labels)
        if names != old_names or old.get("train") != "images/train" or old.get("val") != "images/val" \
                or "path" in old and Path(str(old["path"])).is_absolute():
            add("yolo", yaml_path, lambda: encode_data_yaml(names, old))
        class_ids["yolo"] = {name: index[name] for name in class_list}

    prov = provenance_path(out_dir, stem)
    if outputs or not prov.exists():
        shared = {data_yaml_path(out_dir)}
        record = {
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package": "napari-clipsam",
            "package_version": package_version(),
            "image_file": image_file,
            "image_shape": list(instances.shape),
            "split": split,
            "formats": done,
            "files": [_relative(p, out_dir) for p, _ in outputs],
            "sha256": {_relative(p, out_dir): hashlib.sha256(data).hexdigest()
                       for p, data in outputs if p not in shared},
            "skipped": [_relative(p, out_dir) for p in skipped],
            "overwrite": bool(overwrite),
            "classes": class_list,
            "instance_classes": {str(i): name for i, name in sorted(id_class.items())},
            "class_ids": class_ids,
            "summary": dict(report.summary),
            "engine": engine,
        }
        # first in the batch: a crash between renames leaves a record of what was about to be written
        outputs.insert(0, (prov, encode_provenance(prov, stem, image_file, record)))

    # ---- write: all files or none
    with AtomicBatch() as batch:
        for path, data in outputs:
            batch.stage(path, data)
        report.written = batch.commit()
    report.skipped = skipped
    return report, "coco" in done


# ---------------------------------------------------------------- helpers


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
