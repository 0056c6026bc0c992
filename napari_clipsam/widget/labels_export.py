"""Export a napari Labels layer's instances as pseudo-labels (no Qt).

One function, :func:`export_label_image`, serves the widget's Export button, the folder review's Accept and
the npe2 writer :func:`write_pseudo_labels` (File ▸ Save Selected Layers ▸ "ClipSAM pseudo-labels (folder)").
Everything below it is :func:`napari_clipsam.export.write_export`.

What the masks layer carries (written by the widget, read here):

* ``features``: a table with ``index`` (instance id) and ``class`` (class name) columns.
* ``metadata["clipsam"]``: provenance of the latest ClipSAM result shown in the layer.
* ``metadata["clipsam_frames"]``: ``{frame: {"provenance", "prompts", "edited"}}`` (frame is None for a 2-D
  image), where ``prompts`` are the points/labels/boxes that made the masks and ``edited`` says whether the
  user changed the prompts or painted the masks by hand.
* ``metadata["clipsam_locked"]``: ids of the objects the person locked (exported as verified).
* ``metadata["clipsam_classes"]``: the user's class list (orders COCO ids and YOLO indices).
* ``metadata["clipsam_source"]``: ``{"name", "file"}`` of the image the masks were made from: files are named
  after ``file``'s stem, else ``name`` (by the Export tab and the writer alike, :func:`~napari_clipsam.export.stems.source_stem`) and COCO's
  ``file_name`` is ``file``'s name when the image came from a file.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..export import FORMATS, ExportError, ExportReport, ExportRequest, write_export
from ..export.stems import frame_stem, layer_stem, source_stem


def instance_classes(features) -> dict[int, str]:
    """``{instance id: class name}`` from a Labels features table (``index`` and ``class`` columns)."""
    if features is None or len(features) == 0 or "class" not in features:
        return {}
    ids = features["index"] if "index" in features else range(len(features))
    return {int(i): str(c) for i, c in zip(ids, features["class"]) if int(i) > 0 and isinstance(c, str) and c}


def frame_provenance(metadata: Mapping | None, frame: int | None) -> dict[str, Any] | None:
    """The provenance to export for one frame: the result's provenance plus prompts and edited flags."""
    metadata = metadata or {}
    record = (metadata.get("clipsam_frames") or {}).get(frame)
    if record is None:
        base = metadata.get("clipsam")
        return None if base is None else {**base, "frame": frame}
    return {**record.get("provenance", {}), "frame": frame, "prompts": record.get("prompts"),
            "edited": dict(record.get("edited", {}))}


def hand_verified(plane, written=None, edited=None, locked: Iterable[int] = ()) -> dict[int, bool]:
    """``{id: verified}`` for the instances of one frame as the dock knows them: an object is verified by a person
    when it is locked, or when hand edits (``edited``: painted, erased or filled pixels; or pixels where the plane
    differs from what ClipSAM ``written``) touch it, before or after the edit; every other object is ClipSAM's."""
    plane = np.asarray(plane)
    touched = np.zeros(plane.shape, bool) if edited is None else np.asarray(edited, bool).copy()
    if written is not None:
        written = np.asarray(written)
        touched |= plane != written
    ids = set(np.unique(plane[touched]).tolist()) | set(int(i) for i in locked)
    if written is not None:
        ids |= set(np.unique(written[touched]).tolist())
    return {int(i): int(i) in ids for i in np.unique(plane) if i > 0}


def export_label_image(out_dir: str | os.PathLike, name: str, data, *, features=None,
                       classes: Iterable[str] | None = None,
                       provenance: Mapping | Callable[[int | None], Mapping | None] | None = None,
                       frames: Iterable[int] | None = None, formats: Iterable[str] = FORMATS,
                       overwrite: bool = False, image_file: str | None = None,
                       verified: Mapping | bool | Callable[[int | None], Mapping | bool | None] | None = None,
                       dataset_images: bool = False, image: Callable[[int | None], Any] | None = None,
                       contrast_limits: tuple[float, float] | None = None, keep_original: bool = False,
                       ) -> list[tuple[str, ExportReport]]:
    """Export a (H, W) label image, or chosen frames of an (N, H, W) stack, under stems from ``name``.

    Args:
        out_dir: dataset folder. name: the image's name (stem for 2-D, ``<name>_f003`` per frame).
        data: integer label image or stack. features: the layer's features (``index``/``class``).
        classes: the user's class list. provenance: one mapping, or ``frame -> mapping`` (frame None for 2-D).
        frames: frames of a stack to export (default: all). formats, overwrite: see ExportRequest.
        image_file: the image's file (a 2-D image that came from a file): COCO's ``file_name`` and provenance.
        verified: which instances a person verified (see ExportRequest), or ``frame -> that``; default none.
        dataset_images: also write the images the trainers read (``coco/images``, ``yolo/images``): the file
            ``image_file`` for a 2-D image from a file, else the pixels ``image(frame)`` returns. contrast_limits,
            keep_original: how a non-8-bit image becomes 8-bit and whether its original is kept (ExportRequest).

    Returns:
        ``[(stem, ExportReport), ...]`` in frame order.

    Raises:
        ExportError: bad labels, names or formats, or a file that could not be written. Frames exported
            before the failing one stay written (each frame's export is all-or-nothing).
    """
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ExportError(f"labels must be (H, W) or a stack (N, H, W), got shape {arr.shape}")
    id_class = instance_classes(features)
    if arr.ndim == 2:
        planes = [(None, arr)]
    else:
        chosen = range(arr.shape[0]) if frames is None else sorted(set(int(f) for f in frames))
        bad = [f for f in chosen if not 0 <= f < arr.shape[0]]
        if bad:
            raise ExportError(f"frames {bad} are outside the stack of {arr.shape[0]} frames")
        planes = [(f, arr[f]) for f in chosen]
    reports = []
    for frame, plane in planes:
        prov = provenance(frame) if callable(provenance) else provenance
        stem = frame_stem(layer_stem(name), frame)
        request = ExportRequest(out_dir=out_dir, stem=stem, instances=plane, instance_classes=id_class,
                                classes=classes, formats=formats, provenance=prov, overwrite=overwrite,
                                image_file=image_file if frame is None else None,
                                verified=verified(frame) if callable(verified) else verified,
                                dataset_images=dataset_images, contrast_limits=contrast_limits,
                                keep_original=keep_original,
                                image=image(frame) if dataset_images and image is not None
                                and (frame is not None or not _is_file(image_file)) else None)
        reports.append((stem, write_export(request)))
    return reports


def _is_file(path: str | None) -> bool:
    return bool(path) and Path(path).is_file()


def write_pseudo_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 writer: save one Labels layer as a pseudo-label dataset folder (all formats, replacing files).

    ``path`` is the folder; files are named as the Export tab names them (after the source image's file, or its
    layer, of a ClipSAM masks layer, else after the layer; see :func:`~napari_clipsam.export.stems.source_stem`), a stack frame by frame. The
    images themselves are not written (the writer gets the labels only).
    """
    metadata = meta.get("metadata") or {}
    source = metadata.get("clipsam_source") or {}
    reports = export_label_image(
        Path(path), source_stem(source.get("name") or meta.get("name") or "labels", source.get("file")), data,
        features=meta.get("features"),
        classes=metadata.get("clipsam_classes"), provenance=lambda f: frame_provenance(metadata, f),
        formats=FORMATS, overwrite=True, image_file=source.get("file"),
        verified=lambda f: hand_verified(data if f is None else data[f], locked=metadata.get("clipsam_locked", ())))
    return [str(p) for _, report in reports for p in report.written]
