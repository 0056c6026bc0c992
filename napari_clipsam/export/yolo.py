"""YOLO segmentation labels: ``yolo/labels/<stem>.txt`` plus the dataset file ``yolo/data.yaml``.

One line per polygon piece: ``class_idx x1 y1 x2 y2 ...`` with at least 3 vertices, an instance made
of several disconnected pieces giving several lines. ``x`` and ``y`` are normalised to [0, 1] by the
image width and height in continuous coordinates, where pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``: a vertex at pixel-centre position ``(row, col)`` is written as
``x = (col + 0.5) / W``, ``y = (row + 0.5) / H``. An image without instances gets an empty file (a
valid "no objects" label).

``data.yaml`` is written by hand (no YAML dependency) in the Ultralytics layout (``path``,
``train: images``, ``val: images``, ``nc``, ``names``); the images themselves are not copied: put
them in ``yolo/images/<stem>.<ext>``. Class indices are the positions in ``names``, which only ever
grows, so the labels of images exported earlier stay valid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import ExportError
from .coco import iter_instance_crops, mask_polygons

__all__ = [
    "YOLO_DIR",
    "yolo_label_path",
    "data_yaml_path",
    "encode_yolo_labels",
    "read_data_yaml_names",
    "encode_data_yaml",
    "read_yolo_labels",
]

YOLO_DIR = "yolo"


def yolo_label_path(out_dir: Path, stem: str) -> Path:
    """``out_dir/yolo/labels/<stem>.txt``."""
    return Path(out_dir) / YOLO_DIR / "labels" / f"{stem}.txt"


def data_yaml_path(out_dir: Path) -> Path:
    """``out_dir/yolo/data.yaml``."""
    return Path(out_dir) / YOLO_DIR / "data.yaml"


def encode_yolo_labels(instances: np.ndarray, instance_classes: dict[int, str], class_index: dict[str, int]) -> bytes:
    """The label file bytes for an ``(H, W)`` instance map (one line per piece; empty when no instances)."""
    height, width = instances.shape
    scale = np.array([height, width], dtype=float)
    lines = []
    for instance_id, offset, crop in iter_instance_crops(instances):
        idx = class_index[instance_classes[instance_id]]
        for poly in mask_polygons(crop, offset):
            yx = np.clip((poly + 0.5) / scale, 0.0, 1.0)
            coords = " ".join(f"{x:.6f} {y:.6f}" for y, x in yx)
            lines.append(f"{idx} {coords}\n")
    return "".join(lines).encode("ascii")


def read_data_yaml_names(path: Path) -> list[str]:
    """The ``names`` of a ``data.yaml`` (empty list when the file does not exist).

    Reads the flow form this module writes (``names: ["a", "b"]``) and the block forms
    ``- a`` / ``0: a`` found in hand-written files. Raises :class:`ExportError` otherwise.
    """
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(f"cannot read {path}: {err}; fix it or move it away") from err
    for i, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        rest = line[len("names:") :].strip()
        if rest:
            try:
                names = json.loads(rest)
            except json.JSONDecodeError:  # unquoted flow list: [a, b]
                names = [n.strip().strip("'\"") for n in rest.strip("[]").split(",") if n.strip()]
            if isinstance(names, list):
                return [str(n) for n in names]
            break
        names = []
        for item in lines[i + 1 :]:
            if not item.startswith((" ", "\t", "-")) or not item.strip():
                break
            item = item.strip()
            value = item[1:] if item.startswith("-") else item.partition(":")[2]
            names.append(value.strip().strip("'\""))
        return names
    raise ExportError(f"cannot find a 'names' list in {path}; fix it or move it away")


def encode_data_yaml(yolo_dir: Path, names: list[str]) -> bytes:
    """``data.yaml`` bytes; strings are JSON-quoted, which YAML reads as double-quoted scalars."""
    from .. import __version__

    text = (
        f"# YOLO segmentation dataset written by napari-clipsam {__version__}.\n"
        "# Put each image next to its label: images/<stem>.<ext> for labels/<stem>.txt.\n"
        f"path: {json.dumps(str(Path(yolo_dir).resolve()), ensure_ascii=False)}\n"
        "train: images\n"
        "val: images\n"
        f"nc: {len(names)}\n"
        f"names: {json.dumps(list(names), ensure_ascii=False)}\n"
    )
    return text.encode("utf-8")


def read_yolo_labels(path: str | Path, shape: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """Read a YOLO segmentation label file for an image of ``shape = (H, W)``.

    Returns one ``(class_idx, vertices)`` per line, ``vertices`` an ``(N, 2)`` float array of
    ``(row, col)`` in pixel-centre coordinates (``row = y * H - 0.5``), ready for
    ``skimage.draw.polygon(vertices[:, 0], vertices[:, 1], shape)``.
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
