"""COCO instance segmentation: one shared ``coco/annotations.json`` for all images of a folder.

Each export adds the image entry and one annotation per instance id, or replaces the entry (and its
annotations) when an image with the same stem is already there; the other images are kept.
Categories come from the class list with ids 1..K; once in the file a category keeps its id and new
classes are appended.

Coordinates: the library works in pixel indices ``(row, col)``; COCO works in continuous ``(x, y)``
where pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``. So a bbox is
``[col_min, row_min, n_cols, n_rows]`` and a polygon vertex at pixel-centre position ``(row, col)``
is written as ``(x, y) = (col + 0.5, row + 0.5)``.

Segmentation: ``"rle"`` (default) is exact. ``"polygon"`` writes the outer outline of every 4-connected
piece (vertices on the pixel edges), except for an instance with a hole, which is written as RLE because
a COCO polygon cannot hold a hole (``polygon_holes_as_rle`` in the export summary counts them).

With the images written into the dataset, ``file_name`` is the image's path relative to the ``coco``
folder (``images/train/000.png``) and each image entry has a ``split`` (see :mod:`.dataset`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage
from skimage import measure

from ..errors import ExportError

__all__ = [
    "COCO_FILE",
    "SEGMENTATION_MODES",
    "iter_instance_crops",
    "mask_polygons",
    "has_hole",
    "load_coco",
    "find_coco_image",
    "coco_file_stems",
    "coco_category_ids",
    "coco_annotations",
    "encode_coco",
    "remember_coco",
]

COCO_FILE = Path("coco") / "annotations.json"
SEGMENTATION_MODES = ("rle", "polygon")
# Outlines are simplified (Douglas-Peucker) by at most this many pixels. 0.25 keeps every corner
# (a cut corner is 0.5 px off the traced outline) while dropping about 2/3 of the vertices.
POLYGON_TOLERANCE = 0.25


def iter_instance_crops(instances: np.ndarray) -> Iterator[tuple[int, tuple[int, int], np.ndarray]]:
    """Yield ``(id, (row0, col0), crop)`` per instance id of an ``(H, W)`` map, ids ascending.

    ``crop`` is the bool mask of that id inside its tight bounding box, whose top-left pixel is
    ``(row0, col0)``. Working on crops keeps many small instances on a large image cheap.
    """
    # Relabel to 1..n first: regionprops allocates a slot per label value up to the largest id.
    ids = np.unique(instances)
    ids = np.concatenate([[0], ids[ids > 0]])
    dense = np.searchsorted(ids, instances)
    for region in measure.regionprops(dense):
        row0, col0 = region.bbox[:2]
        yield int(ids[region.label]), (int(row0), int(col0)), region.image


def mask_polygons(crop: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """Outline every 4-connected piece of a bool mask as one polygon.

    Args:
        crop: ``(h, w)`` bool mask.
        offset: ``(row0, col0)`` added to the vertices (the crop's position in the image).

    Returns:
        One ``(N, 2)`` float array of ``(row, col)`` vertices per piece (N >= 3, not closed: the
        last vertex is not repeated), in pixel-centre coordinates. Vertices lie half-way between
        inside and outside pixels, so filling the polygon (e.g. ``skimage.draw.polygon``) gives
        back the piece. Holes are not represented (COCO polygons and YOLO cannot hold them):
        each polygon is the outer outline of its piece.
    """
    polygons = []
    pieces = measure.label(crop, connectivity=1)
    for piece in measure.regionprops(pieces):
        r0, c0 = piece.bbox[:2]
        # Pad so outlines close at the crop border; -1 undoes the padding.
        contours = measure.find_contours(np.pad(piece.image, 1).astype(np.float32), 0.5)
        outer = max(contours, key=_enclosed_area)
        simple = measure.approximate_polygon(outer, POLYGON_TOLERANCE)[:-1]
        vertices = simple if len(simple) >= 3 else outer[:-1]
        polygons.append(vertices + np.array([offset[0] + r0 - 1, offset[1] + c0 - 1], dtype=float))
    return polygons


def has_hole(crop: np.ndarray) -> bool:
    """Whether a bool mask encloses background that its 4-connected pieces' outer outlines would cover.

    Background counts as enclosed when it is not 8-connected to the outside (the complement of
    4-connected pieces), so pixels touching only diagonally enclose nothing.
    """
    return bool((ndimage.binary_fill_holes(crop, structure=np.ones((3, 3), bool)) != crop).any())


def _enclosed_area(contour: np.ndarray) -> float:
    """Area enclosed by a closed ``(N, 2)`` contour (shoelace formula, absolute value)."""
    r, c = contour[:, 0], contour[:, 1]
    return abs(float(np.dot(r, np.roll(c, 1)) - np.dot(c, np.roll(r, 1)))) / 2


_PARSED: dict[Path, tuple[tuple[int, int, int], dict]] = {}
"""COCO dicts this process wrote last, by file, with the file's (mtime, size, inode) when written: exporting
many images into one folder then does not parse the growing ``annotations.json`` again for every image."""
_PARSED_LOCK = threading.Lock()


def _file_state(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size, st.st_ino


def remember_coco(path: Path, coco: dict) -> None:
    """Record that ``path`` now holds exactly ``coco`` (called after it was written or found unchanged)."""
    with _PARSED_LOCK:
        _PARSED[Path(path).resolve()] = (_file_state(path), coco)
        while len(_PARSED) > 4:
            _PARSED.pop(next(iter(_PARSED)))


def load_coco(path: Path) -> dict:
    """The COCO dict in ``path``, or a new empty one when the file does not exist.

    The dict is the caller's to change: one remembered by :func:`remember_coco` is handed over (and
    forgotten) when the file is still as it was written, so an edit that never reaches the file cannot leak
    into a later load. Raises :class:`ExportError` when the file exists but is not a readable COCO JSON, so
    that a damaged file is never silently replaced.
    """
    if path.exists():
        with _PARSED_LOCK:
            state, remembered = _PARSED.pop(path.resolve(), (None, None))
        if remembered is not None and state == _file_state(path):
            return remembered
    if not path.exists():
        from .._version import __version__

        return {
            "info": {
                "description": "ClipSAM pseudo-labels exported by napari-clipsam",
                "version": __version__,
                "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": [],
        }
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read the existing COCO file {path}: {err}; fix it or move it away") from err
    if not isinstance(coco, dict) or not all(
        isinstance(coco.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise ExportError(
            f"{path} is not a COCO instance file (needs 'images', 'annotations' and 'categories' lists); "
            "fix it or move it away"
        )
    _check_ids(coco, path)
    _check_links(coco, path)
    return coco


def _check_ids(coco: dict, path: Path) -> None:
    """Every image, annotation and category of a COCO file must be an object with an integer ``id`` (the
    exporter computes new ids from them); ExportError naming the first entry that is not."""
    for key in ("images", "annotations", "categories"):
        for i, entry in enumerate(coco[key]):
            ok = isinstance(entry, dict) and isinstance(entry.get("id"), int) and not isinstance(entry["id"], bool)
            if ok and key == "categories":
                ok = isinstance(entry.get("name"), str)
            if not ok:
                need = "an integer 'id'" + (" and a 'name'" if key == "categories" else "")
                raise ExportError(f"{path}: {key}[{i}] lacks {need} (got {str(entry)[:80]}); every COCO entry needs "
                                  "one. Fix the file or move it away (a new one is then started).")


def _check_links(coco: dict, path: Path) -> None:
    """Ids must be unique per list and every annotation must point at an image and a category of the file:
    pycocotools indexes by id, so a repeated image id drops an image and mixes its annotations with another's,
    and a merge would keep or replace the wrong entries. ExportError naming the entries (nothing is changed)."""
    fix = " Fix the file (or move it away: a new one is then started); nothing was changed."
    for key in ("images", "annotations", "categories"):
        seen: dict[int, int] = {}
        clashes = []
        for i, entry in enumerate(coco[key]):
            first = seen.setdefault(entry["id"], i)
            if first != i:
                clashes.append(f"{_entry(coco, key, first)} and {_entry(coco, key, i)} both have id {entry['id']}")
        if clashes:
            move = " (and move its annotations with it)" if key != "annotations" else ""
            raise ExportError(f"{path}: {_listed(clashes)}; each {key[:-1]} needs an id of its own. Give the later "
                              f"one an unused id{move}, or delete the duplicate.{fix}")
    for field, key in (("image_id", "images"), ("category_id", "categories")):
        known = {entry["id"] for entry in coco[key]}
        stray = [f"annotations[{i}] (id {a['id']}) has {field} {a[field]!r}, which no entry of '{key}' has"
                 if field in a else f"annotations[{i}] (id {a['id']}) has no {field}"
                 for i, a in enumerate(coco["annotations"])
                 if not isinstance(a.get(field), int) or isinstance(a[field], bool) or a[field] not in known]
        if stray:
            raise ExportError(f"{path}: {_listed(stray)}; every annotation's {field} must be the id of one of the "
                              f"file's {key}. Delete those annotations or correct their {field}.{fix}")


def _entry(coco: dict, key: str, i: int) -> str:
    """``images[3] ('img3.png')``: an entry by its place in the file, with its file or class name when it has one."""
    name = coco[key][i].get({"images": "file_name", "categories": "name"}.get(key, ""))
    return f"{key}[{i}]" + (f" ({name!r})" if isinstance(name, str) else "")


def _listed(items: list[str], most: int = 3) -> str:
    """The first ``most`` items joined by "; ", and how many more there are."""
    more = f" (and {len(items) - most} more)" if len(items) > most else ""
    return "; ".join(items[:most]) + more


_STEMS: dict[Path, tuple[tuple[int, int, int], frozenset]] = {}


def coco_file_stems(path: Path) -> frozenset:
    """The image stems of a COCO file (empty when it does not exist), remembered while the file is unchanged."""
    path = Path(path)
    if not path.exists():
        return frozenset()
    key, state = path.resolve(), _file_state(path)
    with _PARSED_LOCK:
        cached = _STEMS.get(key)
    if cached is not None and cached[0] == state:
        return cached[1]
    coco = load_coco(path)
    stems = frozenset(coco_image_stem(i) for i in coco["images"])
    remember_coco(path, coco)
    with _PARSED_LOCK:
        _STEMS[key] = (state, stems)
        while len(_STEMS) > 4:
            _STEMS.pop(next(iter(_STEMS)))
    return stems


def coco_image_stem(image: dict) -> str:
    """The stem an image entry was exported for: its ``"stem"`` key, else its file name's stem."""
    return str(image.get("stem", Path(str(image.get("file_name", ""))).stem))


def find_coco_image(coco: dict, stem: str) -> dict | None:
    """The image entry exported for ``stem`` (see :func:`coco_image_stem`)."""
    for image in coco["images"]:
        if coco_image_stem(image) == stem:
            return image
    return None


def coco_category_ids(coco: dict, classes: list[str]) -> dict[str, int]:
    """Map every class name to its category id, appending categories for new names (in place).

    Existing categories keep their ids; new ones get ``max id + 1`` onwards in ``classes`` order.
    Returns ``{name: id}`` for all categories in the file.
    """
    ids = {}
    for category in sorted(coco["categories"], key=lambda c: c["id"]):
        ids.setdefault(str(category["name"]), int(category["id"]))
    next_id = max(ids.values(), default=0) + 1
    for name in classes:
        if name not in ids:
            coco["categories"].append({"id": next_id, "name": name, "supercategory": "defect"})
            ids[name] = next_id
            next_id += 1
    return ids


def coco_annotations(
    instances: np.ndarray, instance_classes: dict[int, str], segmentation: str = "rle"
) -> tuple[list[dict], int]:
    """The COCO annotations of an ``(H, W)`` instance map, without ids, and how many holes forced RLE.

    Args:
        instances: ``(H, W)`` integer instance map, 0 = background.
        instance_classes: class name of every id present in ``instances``.
        segmentation: ``"rle"`` (exact; compressed RLE with ``counts`` as str) or ``"polygon"``
            (outer outlines of every piece, see :func:`mask_polygons`; RLE for an instance with a hole).

    Returns ``(annotations, holes_as_rle)``. Each annotation has ``category`` (the class name; the merge
    turns it into ``category_id``), ``segmentation``, ``area`` (number of pixels), ``bbox``
    ``[x, y, w, h]``, ``iscrowd`` 0 and ``instance_id`` (the id in the map).
    """
    height, width = instances.shape
    annotations, holes_as_rle = [], 0
    for instance_id, (row0, col0), crop in iter_instance_crops(instances):
        h, w = crop.shape
        as_rle = segmentation == "rle" or has_hole(crop)
        holes_as_rle += as_rle and segmentation != "rle"
        if as_rle:
            full = np.zeros((height, width), dtype=np.uint8, order="F")
            full[row0 : row0 + h, col0 : col0 + w] = crop
            rle = mask_utils.encode(full)
            segm = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        else:
            segm = [
                np.round(np.stack([poly[:, 1] + 0.5, poly[:, 0] + 0.5], axis=1), 2).ravel().tolist()
                for poly in mask_polygons(crop, (row0, col0))
            ]
        annotations.append(
            {
                "category": instance_classes[instance_id],
                "segmentation": segm,
                "area": int(crop.sum()),
                "bbox": [col0, row0, w, h],
                "iscrowd": 0,
                "instance_id": instance_id,
            }
        )
    return annotations, holes_as_rle


def encode_coco(coco: dict) -> bytes:
    """UTF-8 JSON bytes of a COCO dict (compact: the file holds every image of the folder)."""
    return json.dumps(coco, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
