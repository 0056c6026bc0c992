"""Input checks of :class:`napari_clipsam.export.ExportRequest`: every refusal is an ExportError naming
the argument, raised before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import ExportError

FORMATS = ("mvtec", "tiff", "coco", "yolo")
DEFAULT_CLASS = "defect"


def check_instances(instances) -> np.ndarray:
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


def check_formats(formats) -> tuple[str, ...]:
    """The requested formats in :data:`FORMATS` order."""
    requested = [formats] if isinstance(formats, str) else list(formats)
    unknown = [f for f in requested if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {FORMATS}")
    if not requested:
        raise ExportError(f"no export format requested; choose from {FORMATS}")
    return tuple(f for f in FORMATS if f in requested)


def resolve_classes(
    ids: list[int], instance_classes: Mapping | None, classes: Iterable[str] | None
) -> tuple[list[str], dict[int, str]]:
    """``(class list, {id: class name} for every present id)``; see :class:`~.request.ExportRequest`."""
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
