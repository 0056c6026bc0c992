"""Pseudo-label export: one call writes an image's instances in several dataset formats at once.

>>> request = ExportRequest(out_dir="out", stem="000", instances=instances, instance_classes={1: "scratch"},
...                         classes=["defect", "scratch"])      # checked here: bad fields raise ExportError
>>> report = write_export(request)
>>> report = export_pseudo_labels("out", "000", instances, {1: "scratch"}, classes=["defect", "scratch"])  # same

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
``originals/<stem>.<ext>``                 ``keep_original``: a non-8-bit image as it was (the others are 8-bit)
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
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..io.atomic import AtomicBatch
from .coco import COCO_FILE, coco_annotations
from .coco_merge import encode_coco_shard, merge_coco
from .dataset import ORIGINALS_DIR, DatasetImage, dataset_split, image_payload, relative_posix
from .done import format_files, image_done, resolve_split, unfinished_formats
from .locking import clean_stale_files, folder_lock
from .mvtec import encode_mvtec_mask, mvtec_mask_path, read_mvtec_mask
from .provenance import PROVENANCE_DIR, encode_provenance, package_version, provenance_path
from .request import ExportRequest
from .tiff import encode_label_classes, encode_label_tiff, label_tiff_paths, read_label_tiff, read_label_verified
from .stems import MAX_STEM_BYTES, safe_stem
from .validation import DEFAULT_CLASS, FORMATS
from .verified import COCO_VERIFIED_KEY
from .yolo import (
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
    "COCO_VERIFIED_KEY",
    "PROVENANCE_DIR",
    "ExportError",
    "ExportReport",
    "ExportRequest",
    "write_export",
    "export_pseudo_labels",
    "dataset_split",
    "resolve_split",
    "image_done",
    "merge_coco",
    "clean_stale_files",
    "safe_stem",
    "MAX_STEM_BYTES",
    "read_mvtec_mask",
    "read_label_tiff",
    "read_label_verified",
    "read_yolo_labels",
]


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
        removed: the image's files in the other split, removed because ``resplit`` moved it (:mod:`.done`).
        split: ``"train"`` or ``"val"``, the image's split in the dataset (the one it was written in before,
            unless ``resplit``).
        summary: what the formats could not hold, in pixels or counts (0 when nothing was written):
            ``yolo_dropped_pieces`` / ``yolo_dropped_pixels`` (pieces below the minimum area),
            ``yolo_hole_pixels`` (hole pixels a YOLO polygon fills), ``yolo_bridge_pixels`` (background
            pixels drawn by the cuts joining pieces), ``coco_polygon_holes_as_rle`` (instances written as
            RLE in polygon mode because they have a hole).
        n_verified, n_pseudo: the image's instances a person verified and those that are ClipSAM's unreviewed
            output (:mod:`.verified`; every format records which is which).
    """

    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    removed: list[Path] = dataclasses.field(default_factory=list)
    split: str = "train"
    summary: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SUMMARY_KEYS, 0))
    n_verified: int = 0
    n_pseudo: int = 0


def write_export(request: ExportRequest) -> ExportReport:
    """Write the pseudo-labels of one image as ``request`` says (:class:`~.request.ExportRequest`).

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
        ExportError: an unreadable image for ``dataset_images`` (raised before anything is written), an
            unreadable shared file, or a file that could not be encoded or written (the folder is then left as
            it was). Invalid fields are refused earlier, when the request is made.
    """
    if not isinstance(request, ExportRequest):
        raise ExportError(f"write_export takes an ExportRequest, got {type(request).__name__}")
    payload = image_payload(request.image_file, request.image, request.contrast_limits) \
        if request.writes_images else None
    with folder_lock(request.out_dir):  # shared files are read, merged and written by one process at a time
        split, leaving = resolve_split(request.out_dir, request.stem, request.formats, request.val_fraction,
                                       request.split_seed, request.resplit)
        report, coco_written = _export_locked(request, split, payload)
        for path in leaving:  # resplit moved the image to another split: its old copies go
            path.unlink(missing_ok=True)
            report.removed.append(path)
        if coco_written and request.coco_merge:
            merged = merge_coco(request.out_dir, [request.stem])
            if merged is not None:
                report.written.append(merged)
    return report


def export_pseudo_labels(out_dir: str | os.PathLike, stem: str, instances: np.ndarray,
                         instance_classes: Mapping[int, str] | None = None, **options) -> ExportReport:
    """Shorthand for ``write_export(ExportRequest(out_dir=..., stem=..., instances=..., instance_classes=...,
    **options))``: the options are :class:`~.request.ExportRequest`'s other fields, by keyword."""
    return write_export(ExportRequest(out_dir=out_dir, stem=stem, instances=instances,
                                      instance_classes=instance_classes, **options))


def _export_locked(request: ExportRequest, split: str, payload: DatasetImage | None):
    """The body of :func:`write_export`, run under the folder lock: ``(report, coco shard written)``."""
    out_dir, stem, instances, formats = request.out_dir, request.stem, request.instances, request.formats
    class_list, id_class, image_file = request.class_list, request.id_class, request.image_file
    overwrite = request.overwrite
    image_suffix = payload.suffix if payload is not None else None
    outputs: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    done: list[str] = []
    class_ids: dict[str, dict[str, int]] = {}
    report = ExportReport(split=split, n_verified=sum(request.id_verified.values()))
    report.n_pseudo = len(request.ids) - report.n_verified
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
        add("tiff", sidecar, lambda: encode_label_classes(stem, id_class, class_list, image_file,
                                                          request.id_verified))

    if "coco" in unfinished:
        shard, *image = format_files(out_dir, stem, "coco", split, image_suffix)
        if image:
            file_name = relative_posix(image[0], out_dir / COCO_FILE.parent)
            add("coco", image[0], lambda: payload.data)
        else:
            file_name = Path(image_file).name if image_file else stem
        annotations, holes = coco_annotations(instances, id_class, request.coco_segmentation)
        for annotation in annotations:
            annotation[COCO_VERIFIED_KEY] = request.id_verified[annotation["instance_id"]]
        report.summary["coco_polygon_holes_as_rle"] = holes
        add("coco", shard, lambda: encode_coco_shard(stem=stem, file_name=file_name, shape=instances.shape,
                                                     split=split if image else None, classes=class_list,
                                                     annotations=annotations))

    if "yolo" in unfinished:
        label, *image = format_files(out_dir, stem, "yolo", split, image_suffix)
        yaml_path = data_yaml_path(out_dir)
        old = read_data_yaml(yaml_path)
        old_names = old.get("names", [])
        if request.classes_given:
            check_class_order(yaml_path, old_names, class_list)
        names = old_names + [c for c in class_list if c not in old_names]
        index = {name: i for i, name in enumerate(names)}
        labels, stats = encode_yolo_labels(instances, id_class, index, request.yolo_min_piece_area)
        for key in ("dropped_pieces", "dropped_pixels", "hole_pixels", "bridge_pixels"):
            report.summary[f"yolo_{key}"] = getattr(stats, key)
        if image:
            add("yolo", image[0], lambda: payload.data)
        add("yolo", label, lambda: labels)
        if names != old_names or old.get("train") != "images/train" or old.get("val") != "images/val" \
                or "path" in old and Path(str(old["path"])).is_absolute():
            add("yolo", yaml_path, lambda: encode_data_yaml(names, old))
        class_ids["yolo"] = {name: index[name] for name in class_list}

    if payload is not None and payload.original is not None and request.keep_original \
            and ({"coco", "yolo"} & set(done)):
        fmt = "coco" if "coco" in done else "yolo"
        add(fmt, out_dir / ORIGINALS_DIR / f"{stem}{payload.original[1]}", lambda: payload.original[0])

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
            "verified": {str(i): flag for i, flag in sorted(request.id_verified.items())},
            "n_verified": report.n_verified,
            "n_pseudo": report.n_pseudo,
            "yolo_line_ids": list(request.ids) if "yolo" in done else None,
            "summary": dict(report.summary),
            "engine": request.engine,
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
