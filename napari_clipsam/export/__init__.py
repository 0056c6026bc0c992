"""Pseudo-label export: one call writes an image's instances in several dataset formats at once.

>>> report = export_pseudo_labels("out", "000", instances, {1: "scratch"}, classes=["defect", "scratch"])

Output layout inside ``out_dir`` (``<stem>`` is the image's file stem):

=====================================  ============================================================
``masks/<stem>_mask.png``              "mvtec": binary uint8 mask, exactly 0 / 255
``labels/<stem>.tif`` + ``.json``      "tiff": uint16 instance ids + ``{id: class}`` sidecar
``coco/annotations.json``              "coco": shared by all images of the folder
``yolo/labels/<stem>.txt``             "yolo": one polygon per line, normalised coordinates
``yolo/data.yaml``                     "yolo": shared class names (only grows)
``provenance/<stem>.json``             always: who/what/when produced the files above
=====================================  ============================================================

Every file is written atomically and the whole export is all-or-nothing (see :mod:`.atomic`).
The module imports no torch, so the CLI and the widget can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from enum import Enum
from pathlib import Path, PurePath

import numpy as np

from .. import strict_json
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
from .mvtec import encode_mvtec_mask, mvtec_mask_path, read_mvtec_mask
from .tiff import MAX_LABEL_ID, encode_label_classes, encode_label_tiff, label_tiff_paths, read_label_tiff
from .yolo import (
    data_yaml_path,
    encode_data_yaml,
    encode_yolo_labels,
    read_data_yaml_names,
    read_yolo_labels,
    yolo_label_path,
)

__all__ = [
    "FORMATS",
    "DEFAULT_CLASS",
    "ExportError",
    "ExportReport",
    "export_pseudo_labels",
    "safe_stem",
    "read_mvtec_mask",
    "read_label_tiff",
    "read_yolo_labels",
]

FORMATS = ("mvtec", "tiff", "coco", "yolo")
DEFAULT_CLASS = "defect"
PROVENANCE_DIR = "provenance"
_MAX_PROVENANCE_ARRAY = 1024  # elements; larger arrays (e.g. a whole anomaly map) do not belong in provenance
_UNSAFE_STEM_CHARS = set('/\\<>:"|?*') | {os.sep, os.altsep or os.sep}


_UNSAFE_IN_NAME = re.compile(r'[\\/<>:"|?*\x00-\x1f]')


MAX_STEM_BYTES = 200
"""Longest export stem in UTF-8 bytes: file systems allow 255 bytes per name, and the longest name an export
writes is ``.<stem>_mask.png.<8 hex>.tmp`` (stem + 23), leaving room for suffixes."""


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


@dataclasses.dataclass
class ExportReport:
    """What one export did.

    Attributes:
        written: files created or replaced, in writing order (provenance last).
        skipped: existing files left untouched because ``overwrite`` was False.
    """

    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)


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
        image_file: the original image file name, recorded in the COCO entry (its name only) and the
            provenance (as given). Without it the COCO ``file_name`` is the stem.
        overwrite: replace this image's existing outputs (see below).
        coco_segmentation: ``"rle"`` (exact masks) or ``"polygon"`` (outer outlines of each piece).

    Existing files:
        * Per-image files (mask PNG, label TIFF + JSON, YOLO txt) are replaced only when ``overwrite``
          is True. Otherwise the format is skipped for this image and its existing files are listed in
          ``report.skipped``, untouched (for "tiff", both files are skipped if either exists, so a
          TIFF never pairs with another export's JSON).
        * ``coco/annotations.json``: other images are always kept and a new stem is always added; an
          existing entry for this stem is replaced only when ``overwrite`` is True, else the file is
          untouched and listed in ``report.skipped``. Categories keep their ids; new ones are appended.
        * ``yolo/data.yaml``: (re)written, when this image's YOLO labels are written, if it is
          missing or new class names have to be appended; existing names keep their indices.
        * ``provenance/<stem>.json``: a history updated whenever anything was written: the new record
          is appended, and older records are dropped once every format they wrote has been written
          again by a newer one. Nothing written means no new record.

    Returns:
        An :class:`ExportReport` of written and skipped files.

    Raises:
        ExportError: invalid input (raised before anything is written), an unreadable shared file,
            or a file that could not be encoded or written (the folder is then left as it was).
    """
    # ---- validate everything before touching the disk
    instances = _check_instances(instances)
    stem = _check_stem(stem)
    formats = _check_formats(formats)
    if coco_segmentation not in SEGMENTATION_MODES:
        raise ExportError(f"coco_segmentation must be one of {SEGMENTATION_MODES}, got {coco_segmentation!r}")
    ids = [int(i) for i in np.unique(instances) if i > 0]
    if "tiff" in formats and ids and ids[-1] > MAX_LABEL_ID:
        raise ExportError(
            f"instance id {ids[-1]} does not fit a uint16 label TIFF (max {MAX_LABEL_ID}); "
            "relabel the instances (e.g. skimage.segmentation.relabel_sequential) or leave out 'tiff'"
        )
    class_list, id_class = _resolve_classes(ids, instance_classes, classes)
    engine = _jsonable(provenance, "provenance") if provenance is not None else None
    if image_file is not None and not isinstance(image_file, (str, os.PathLike)):
        raise ExportError(f"image_file must be a file name, got {type(image_file).__name__}")
    image_file = None if image_file is None else os.fspath(image_file)
    out_dir = Path(out_dir)

    # ---- render every output in memory; reading the shared files may still refuse the export
    outputs: list[tuple[Path, bytes]] = []
    skipped: list[Path] = []
    done: list[str] = []
    class_ids: dict[str, dict[str, int]] = {}

    def add(fmt: str, path: Path, encode) -> None:
        try:
            outputs.append((path, encode()))
        except ExportError:
            raise
        except Exception as err:  # an encoder failing must name the file, not crash anonymously
            raise ExportError(f"could not encode {path} ({fmt}): {err}") from err
        if fmt not in done:
            done.append(fmt)

    if "mvtec" in formats:
        path = mvtec_mask_path(out_dir, stem)
        if path.exists() and not overwrite:
            skipped.append(path)
        else:
            add("mvtec", path, lambda: encode_mvtec_mask(instances))

    if "tiff" in formats:
        tif, sidecar = label_tiff_paths(out_dir, stem)
        existing = [p for p in (tif, sidecar) if p.exists()]
        if existing and not overwrite:
            skipped.extend(existing)
        else:
            add("tiff", tif, lambda: encode_label_tiff(instances))
            add("tiff", sidecar, lambda: encode_label_classes(stem, id_class, class_list, image_file))

    coco_written = None
    if "coco" in formats:
        path = out_dir / COCO_FILE
        coco = load_coco(path)
        if find_coco_image(coco, stem) is not None and not overwrite:
            skipped.append(path)
            remember_coco(path, coco)  # unchanged: the next export need not parse it again
        else:
            coco_written = (path, coco)
            category_ids = coco_category_ids(coco, class_list)
            file_name = Path(image_file).name if image_file else stem
            put_coco_image(
                coco,
                stem=stem,
                file_name=file_name,
                instances=instances,
                instance_classes=id_class,
                category_ids=category_ids,
                segmentation=coco_segmentation,
            )
            add("coco", path, lambda: encode_coco(coco))
            class_ids["coco"] = category_ids

    if "yolo" in formats:
        path = yolo_label_path(out_dir, stem)
        if path.exists() and not overwrite:
            skipped.append(path)
        else:
            yaml_path = data_yaml_path(out_dir)
            old_names = read_data_yaml_names(yaml_path)
            names = old_names + [c for c in class_list if c not in old_names]
            index = {name: i for i, name in enumerate(names)}
            add("yolo", path, lambda: encode_yolo_labels(instances, id_class, index))
            if names != old_names or not yaml_path.exists():
                add("yolo", yaml_path, lambda: encode_data_yaml(yaml_path.parent, names))
            class_ids["yolo"] = index

    if outputs:
        record = {
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "package": "napari-clipsam",
            "package_version": _package_version(),
            "image_file": image_file,
            "image_shape": list(instances.shape),
            "formats": done,
            "files": [_relative(p, out_dir) for p, _ in outputs],
            "skipped": [_relative(p, out_dir) for p in skipped],
            "overwrite": bool(overwrite),
            "classes": class_list,
            "instance_classes": {str(i): name for i, name in sorted(id_class.items())},
            "class_ids": class_ids,
            "engine": engine,
        }
        path = out_dir / PROVENANCE_DIR / f"{stem}.json"
        add("provenance", path, lambda: _encode_provenance(path, stem, image_file, record))

    # ---- write: all files or none
    with AtomicBatch() as batch:
        for path, data in outputs:
            batch.stage(path, data)
        written = batch.commit()
    if coco_written is not None:
        remember_coco(*coco_written)
    return ExportReport(written=written, skipped=skipped)


# ---------------------------------------------------------------- validation


def _check_instances(instances) -> np.ndarray:
    """The instance map as a non-negative integer ``(H, W)`` array (bool becomes uint8 0/1)."""
    arr = np.asarray(instances)
    if arr.ndim != 2:
        raise ExportError(
            f"instances must be a 2-D (H, W) label image, got shape {arr.shape}; export one plane at a time"
        )
    if arr.size == 0:
        raise ExportError(f"instances is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise ExportError(
            f"instances must hold integer ids, got dtype {arr.dtype}; threshold or cast the map "
            "(e.g. labels.astype(np.int32)) before exporting"
        )
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ExportError(
            f"instances holds negative ids (min {int(arr.min())}); ids must be 0 (background) or positive"
        )
    return arr


def _check_stem(stem) -> str:
    if not isinstance(stem, str) or not stem or stem.strip() != stem or stem in (".", ".."):
        raise ExportError(f"stem must be a non-empty file stem without surrounding spaces, got {stem!r}")
    bad = sorted({c for c in stem if c in _UNSAFE_STEM_CHARS or ord(c) < 32})
    if bad:
        raise ExportError(f"stem {stem!r} cannot be a file name: it contains {bad!r}; use the image file's stem only")
    size = len(stem.encode("utf-8", "surrogatepass"))
    if size > MAX_STEM_BYTES:
        raise ExportError(f"stem {stem[:40]!r}… is {size} bytes long; file systems allow 255 bytes per file name and "
                          f"the exports add suffixes, so use at most {MAX_STEM_BYTES} (safe_stem() shortens one).")
    return stem


def _check_formats(formats) -> tuple[str, ...]:
    """The requested formats in :data:`FORMATS` order."""
    requested = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in requested if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {FORMATS}")
    if not requested:
        raise ExportError(f"no export format requested; choose from {FORMATS}")
    return tuple(f for f in FORMATS if f in requested)


def _resolve_classes(
    ids: list[int], instance_classes: Mapping | None, classes: Iterable[str] | None
) -> tuple[list[str], dict[int, str]]:
    """``(class list, {id: class name} for every present id)``; see :func:`export_pseudo_labels`."""
    if isinstance(classes, str):
        raise ExportError(f"classes must be a list of class names, not the string {classes!r}")
    class_list: list[str] = []
    for name in () if classes is None else classes:
        if not isinstance(name, str) or not name:
            raise ExportError(f"class names must be non-empty strings, got {name!r} in classes")
        if name not in class_list:
            class_list.append(name)
    given: dict[int, str] = {}
    if instance_classes is not None:
        if not isinstance(instance_classes, Mapping):
            kind = type(instance_classes).__name__
            raise ExportError(f"instance_classes must map instance id -> class name, got {kind}")
        for key, name in instance_classes.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
                raise ExportError(f"instance_classes keys must be integer ids, got {key!r}")
            if not isinstance(name, str) or not name:
                raise ExportError(f"instance_classes[{key!r}] must be a non-empty class name, got {name!r}")
            given[int(key)] = name
    id_class = {i: given.get(i, DEFAULT_CLASS) for i in ids}
    for name in id_class.values():
        if name not in class_list:
            class_list.append(name)
    return class_list or [DEFAULT_CLASS], id_class


def _jsonable(value, where: str):
    """``value`` converted to plain JSON types; ExportError naming the offending entry otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size > _MAX_PROVENANCE_ARRAY:
            raise ExportError(f"{where}: array of shape {value.shape} is too large for provenance; store a summary")
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value, where)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ExportError(f"{where}: key {key!r} cannot be a JSON key; use strings")
            out[str(key)] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(items)]
    raise ExportError(
        f"{where}: cannot store a {type(value).__name__} in JSON; convert it to numbers, strings, lists or dicts"
    )


# ---------------------------------------------------------------- provenance


def _package_version() -> str:
    from .. import __version__

    return __version__


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _encode_provenance(path: Path, stem: str, image_file: str | None, record: dict) -> bytes:
    """The provenance file with ``record`` appended to the records still describing existing files."""
    history = []
    if path.exists():
        try:
            history = json.loads(path.read_text(encoding="utf-8"))["exports"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise ExportError(
                f"cannot read the existing provenance file {path}: {err}; fix it or move it away"
            ) from err
    kept, covered = [], set(record["formats"])
    for old in reversed(history):  # newest first: keep a record while it is the latest for some format
        formats = set(old.get("formats", []))
        if formats - covered:
            kept.append(old)
            covered |= formats
    exports = list(reversed(kept)) + [record]
    provenance = {"stem": stem, "image_file": image_file, "exports": exports}
    return (strict_json.dumps(provenance, indent=2, ensure_ascii=False) + "\n").encode("utf-8")  # no NaN tokens
