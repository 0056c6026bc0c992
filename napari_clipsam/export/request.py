"""What one export is asked to do: :class:`ExportRequest`, a frozen value checked when it is made.

Every refusal is an :class:`~napari_clipsam.errors.ExportError` naming the field, raised when the request is
built, before anything is written. The request also holds what the checks derive (the class list, the id -> class
table the provenance as JSON), so the writer reads one value instead of a row of arguments.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError, InvalidInputError
from ..io.images import check_contrast_limits
from .coco import SEGMENTATION_MODES
from .dataset import DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, check_split_options
from .provenance import jsonable
from .tiff import MAX_LABEL_ID
from .stems import check_stem
from .validation import FORMATS, check_formats, check_instances, resolve_classes
from .verified import resolve_verified
from .yolo import YOLO_MIN_PIECE_AREA

__all__ = ["ExportRequest"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ExportRequest:
    """One image's pseudo-labels to write, and how (see :func:`napari_clipsam.export.write_export`).

    Fields (keyword only):
        out_dir: dataset folder, created if missing.
        stem: the image's file stem (``"000"``); must be usable as a file name (no path separators).
        instances: ``(H, W)`` integer (or bool) instance map; 0 = background, other values are instance ids,
            not necessarily contiguous. Must be non-negative; at most 65535 for "tiff".
        instance_classes: instance id -> class name. Ids missing here get ``"defect"``; ids not present in
            ``instances`` are ignored.
        classes: the user's class list, which orders COCO category ids and YOLO class indices in new files.
            Classes used by the instances but missing from it are appended. Default: the classes used
            (``["defect"]`` when there are none). A COCO file or ``data.yaml`` that already exists keeps its own
            order and gets new classes appended; the ids actually used are recorded under ``class_ids`` in the
            provenance.
        verified: which instances a person verified (accepted in a review, locked or painted by hand in the dock):
            ``True`` or ``False`` for all of them, or ``{id: bool}`` (ids missing are unverified). Default: none
            (ClipSAM's unreviewed output). Written per instance in every format (see :mod:`.verified`).
        formats: any subset of :data:`~napari_clipsam.export.FORMATS`.
        provenance: engine information (version, models, thresholds, prompts, edited flags...). Numpy scalars
            and small arrays, paths, enums, dates and dataclasses are converted to JSON.
        image_file: the original image file, recorded in the COCO entry (its name only, unless the images are
            written) and the provenance (as given); copied when ``dataset_images``.
        overwrite: replace this image's existing outputs.
        coco_segmentation: ``"rle"`` (exact masks) or ``"polygon"`` (outer outlines of each piece; RLE for
            instances with a hole).
        coco_merge: fold this image's COCO shard into ``coco/annotations.json`` now (default). Batch writers pass
            False and call :func:`~napari_clipsam.export.merge_coco` once at the end.
        dataset_images: also write the image into ``coco/images/<split>/`` and ``yolo/images/<split>/``. Needs
            ``image`` or an existing ``image_file``.
        image: the image pixels (``(H, W)`` or ``(H, W, 3)``), written as PNG when ``dataset_images``; default:
            the bytes of ``image_file``.
        contrast_limits: how an image that is not 8-bit is mapped to the 8-bit image the trainers get: the limits
            ClipSAM segmented it with (the dock passes the layer's); None: the 0.5/99.5 percentiles, as ClipSAM
            does without them (:func:`~napari_clipsam.io.images.normalise_image`).
        keep_original: with ``dataset_images``, also write a non-8-bit image as it was to
            ``originals/<stem><ext>`` (outside the folders the trainers read).
        val_fraction, split_seed: the train/val split (:func:`~napari_clipsam.export.dataset_split`).
        resplit: an image exported before keeps the split it was written in unless this is True: then it goes
            where ``val_fraction`` / ``split_seed`` say and its files in the other split are removed
            (:func:`~napari_clipsam.export.done.resolve_split`; ``segment --overwrite`` sets it, the dock never).
        yolo_min_piece_area: pieces of an instance smaller than this (pixels) are left out of its YOLO polygon,
            except its largest piece.

    Derived when the request is made (not arguments): ``ids`` (present instance ids, ascending), ``class_list``,
    ``id_class`` (id -> class for every present id), ``id_verified`` (id -> bool for every present id) and
    ``engine`` (the provenance as JSON-ready data, or None).
    """

    out_dir: str | os.PathLike
    stem: str
    instances: np.ndarray = dataclasses.field(repr=False)
    instance_classes: Mapping[int, str] | None = None
    classes: Iterable[str] | None = None
    verified: bool | Mapping[int, bool] | None = None
    formats: Iterable[str] = FORMATS
    provenance: Mapping | None = dataclasses.field(default=None, repr=False)
    image_file: str | os.PathLike | None = None
    overwrite: bool = False
    coco_segmentation: str = "rle"
    coco_merge: bool = True
    dataset_images: bool = False
    image: np.ndarray | None = dataclasses.field(default=None, repr=False)
    contrast_limits: tuple[float, float] | None = None
    keep_original: bool = False
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = DEFAULT_SPLIT_SEED
    resplit: bool = False
    yolo_min_piece_area: int = YOLO_MIN_PIECE_AREA

    ids: tuple[int, ...] = dataclasses.field(init=False, repr=False)
    class_list: list[str] = dataclasses.field(init=False, repr=False)
    id_class: dict[int, str] = dataclasses.field(init=False, repr=False)
    id_verified: dict[int, bool] = dataclasses.field(init=False, repr=False)
    engine: Any = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        def put(name: str, value) -> None:  # a frozen dataclass keeps its checked, normalised values
            object.__setattr__(self, name, value)

        if not isinstance(self.out_dir, (str, os.PathLike)):
            raise ExportError(f"out_dir must be a folder path, got {type(self.out_dir).__name__}")
        put("out_dir", Path(self.out_dir))
        instances = check_instances(self.instances)
        put("instances", instances)
        put("stem", check_stem(self.stem))
        formats = check_formats(self.formats)
        put("formats", formats)
        if self.coco_segmentation not in SEGMENTATION_MODES:
            raise ExportError(
                f"coco_segmentation must be one of {SEGMENTATION_MODES}, got {self.coco_segmentation!r}")
        check_split_options(self.val_fraction, self.split_seed)
        put("val_fraction", float(self.val_fraction))
        put("split_seed", int(self.split_seed))
        area = self.yolo_min_piece_area
        if isinstance(area, bool) or not isinstance(area, (int, np.integer)) or area < 1:
            raise ExportError(f"yolo_min_piece_area must be a whole number of pixels >= 1, got {area!r}")
        put("yolo_min_piece_area", int(area))
        try:
            put("contrast_limits", check_contrast_limits(self.contrast_limits))
        except InvalidInputError as err:
            raise ExportError(str(err)) from err
        for name in ("overwrite", "coco_merge", "dataset_images", "keep_original"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ExportError(f"{name} must be True or False, got {getattr(self, name)!r}")
            put(name, bool(getattr(self, name)))
        ids = tuple(int(i) for i in np.unique(instances) if i > 0)
        put("ids", ids)
        if "tiff" in formats and ids and ids[-1] > MAX_LABEL_ID:
            raise ExportError(
                f"instance id {ids[-1]} does not fit a uint16 label TIFF (max {MAX_LABEL_ID}); "
                "relabel the instances (e.g. skimage.segmentation.relabel_sequential) or leave out 'tiff'"
            )
        class_list, id_class = resolve_classes(list(ids), self.instance_classes, self.classes)
        put("class_list", class_list)
        put("id_class", id_class)
        put("id_verified", resolve_verified(list(ids), self.verified))
        put("engine", jsonable(self.provenance, "provenance") if self.provenance is not None else None)
        if self.image_file is not None and not isinstance(self.image_file, (str, os.PathLike)):
            raise ExportError(f"image_file must be a file name, got {type(self.image_file).__name__}")
        put("image_file", None if self.image_file is None else os.fspath(self.image_file))
        if self.image is not None and self.dataset_images and {"coco", "yolo"} & set(formats) \
                and np.asarray(self.image).shape[:2] != instances.shape:
            raise ExportError(
                f"image has shape {np.asarray(self.image).shape[:2]} but instances {instances.shape}; they must match"
            )

    @property
    def classes_given(self) -> bool:
        """Whether the caller gave a class list (then an existing ``data.yaml`` must not order it differently)."""
        return self.classes is not None

    @property
    def writes_images(self) -> bool:
        """Whether the image itself goes into the dataset (``dataset_images`` with "coco" or "yolo")."""
        return self.dataset_images and bool({"coco", "yolo"} & set(self.formats))
