"""YOLO segmentation labels: ``yolo/labels/<split>/<stem>.txt`` plus the dataset file ``yolo/data.yaml``.

Layout (Ultralytics): ``yolo/images/{train,val}/<stem>.<ext>`` (written when the export includes the images),
``yolo/labels/{train,val}/<stem>.txt`` and ``yolo/data.yaml`` with ``train: images/train``,
``val: images/val``, ``nc`` and ``names``, and no ``path`` key, so Ultralytics takes the folder holding
``data.yaml`` as the dataset root and the folder can be moved. The split is :func:`.dataset.dataset_split`.

One line per instance: ``class_idx x1 y1 x2 y2 ...`` with at least 3 vertices. The polygon goes through
the centres of the instance's boundary pixels; pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``
in continuous coordinates, so its centre is written ``x = (col + 0.5) / W``, ``y = (row + 0.5) / H``.
Ultralytics' rasteriser (truncate to whole pixels, fill including the edges) gives the instance back
exactly, except what a polygon cannot hold (see :mod:`.outline`): holes come back filled, pieces are
joined by thin cuts whose pixels are drawn, and pieces below ``min_piece_area`` pixels are dropped;
the export summary counts each. An image without instances gets an empty file (a valid "no objects" label).

Class indices are positions in ``names``, which only ever grows, so earlier labels stay valid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ..errors import ExportError
from .coco import iter_instance_crops
from .outline import OutlineStats, instance_outline

__all__ = [
    "YOLO_DIR",
    "YOLO_MIN_PIECE_AREA",
    "yolo_label_path",
    "yolo_image_path",
    "data_yaml_path",
    "encode_yolo_labels",
    "read_data_yaml",
    "read_data_yaml_names",
    "check_class_order",
    "encode_data_yaml",
    "read_yolo_labels",
]

YOLO_DIR = "yolo"
YOLO_MIN_PIECE_AREA = 4
"""Default minimum piece area (pixels): smaller pieces of an instance are dropped from its YOLO polygon
(the instance's largest piece is always kept). Each dropped piece would cost a cut to a speck that
Ultralytics' augmentation (boxes under 2 px are removed) would not learn from anyway."""


def yolo_label_path(out_dir: Path, stem: str, split: str) -> Path:
    """``out_dir/yolo/labels/<split>/<stem>.txt``."""
    return Path(out_dir) / YOLO_DIR / "labels" / split / f"{stem}.txt"


def yolo_image_path(out_dir: Path, stem: str, split: str, suffix: str) -> Path:
    """``out_dir/yolo/images/<split>/<stem><suffix>``."""
    return Path(out_dir) / YOLO_DIR / "images" / split / f"{stem}{suffix}"


def data_yaml_path(out_dir: Path) -> Path:
    """``out_dir/yolo/data.yaml``."""
    return Path(out_dir) / YOLO_DIR / "data.yaml"


def encode_yolo_labels(
    instances: np.ndarray,
    instance_classes: dict[int, str],
    class_index: dict[str, int],
    min_piece_area: int = YOLO_MIN_PIECE_AREA,
) -> tuple[bytes, OutlineStats]:
    """The label file bytes for an ``(H, W)`` instance map, one line per instance, and what was lost.

    Returns ``(bytes, stats)``; the bytes are empty when there are no instances.
    """
    height, width = instances.shape
    scale = np.array([height, width], dtype=float)
    lines = []
    total = OutlineStats()
    for instance_id, offset, crop in iter_instance_crops(instances):
        idx = class_index[instance_classes[instance_id]]
        vertices, stats = instance_outline(crop, min_piece_area, offset)
        total.add(stats)
        yx = (vertices + 0.5) / scale  # pixel centres, strictly inside (0, 1)
        coords = " ".join(f"{x:.6f} {y:.6f}" for y, x in yx)
        lines.append(f"{idx} {coords}\n")
    return "".join(lines).encode("ascii"), total


def read_data_yaml(path: Path) -> dict:
    """The content of a ``data.yaml`` (empty dict when the file does not exist), ``names`` as a list.

    ``names`` may be a list or a ``{index: name}`` mapping with indices 0..n-1 (both are Ultralytics forms).
    Raises :class:`ExportError` for a file that is not such a YAML mapping.
    """
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ExportError(f"cannot read {path}: {err}; fix it or move it away") from err
    if not isinstance(data, dict) or "names" not in data:
        raise ExportError(f"cannot find a 'names' list in {path}; fix it or move it away")
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ExportError(f"{path}: 'names' must map the indices 0..{len(names) - 1}, got keys {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise ExportError(f"{path}: 'names' must be a list of class names, got {type(names).__name__}")
    data["names"] = [str(n) for n in names]
    return data


def check_class_order(path: Path, names: list[str], classes: list[str]) -> None:
    """Refuse a class list that orders classes already numbered in ``data.yaml`` differently.

    YOLO class ids are positions in ``names`` and only ever grow: labels written earlier use them, so a
    writer whose class list says otherwise gets a clear error instead of silently meaning another class.
    """
    known = [c for c in classes if c in names]
    if known != sorted(known, key=names.index):
        numbered = ", ".join(f"{names.index(c)}={c}" for c in sorted(known, key=names.index))
        raise ExportError(
            f"{path} already numbers the classes {numbered}, but the class list given orders them "
            f"{', '.join(known)}. YOLO class ids cannot change once labels use them: give the classes in the "
            "file's order (new classes are appended), or export into a new folder"
        )


def read_data_yaml_names(path: Path) -> list[str]:
    """The ``names`` of a ``data.yaml`` (empty list when the file does not exist)."""
    return read_data_yaml(path).get("names", [])


def encode_data_yaml(names: list[str], old: dict | None = None) -> bytes:
    """``data.yaml`` bytes (PyYAML): relative ``train``/``val``, ``nc``, ``names``; other keys of ``old`` kept.

    An absolute ``path`` (written by earlier versions) is dropped so the folder holding the file is the
    dataset root.
    """
    from .._version import __version__

    data = {k: v for k, v in (old or {}).items() if k not in ("names", "nc")}
    if isinstance(data.get("path"), str) and Path(data["path"]).is_absolute():
        del data["path"]
    data["train"] = "images/train"
    data["val"] = "images/val"
    data["nc"] = len(names)
    data["names"] = list(names)
    header = (
        f"# YOLO segmentation dataset written by napari-clipsam {__version__}.\n"
        "# Images: images/{train,val}/<stem>.<ext>; labels: labels/{train,val}/<stem>.txt.\n"
    )
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)
    return (header + body).encode("utf-8")


def read_yolo_labels(path: str | Path, shape: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """Read a YOLO segmentation label file for an image of ``shape = (H, W)``.

    Returns one ``(class_idx, vertices)`` per line, ``vertices`` an ``(N, 2)`` float array of
    ``(row, col)`` in pixel-centre coordinates (``row = y * H - 0.5``). For files written here these are
    the boundary pixels' indices: fill the polygon including its edges to get the mask back.
    """
    height, width = shape
    polygons = []
    for number, line in enumerate(Path(path).read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 7 or len(fields) % 2 == 0:
            raise ValueError(f"{path}:{number}: expected 'class x1 y1 x2 y2 x3 y3 ...', got {len(fields)} fields")
        xy = np.asarray(fields[1:], dtype=float).reshape(-1, 2)
        vertices = np.stack([xy[:, 1] * height - 0.5, xy[:, 0] * width - 0.5], axis=1)
        polygons.append((int(fields[0]), vertices))
    return polygons
