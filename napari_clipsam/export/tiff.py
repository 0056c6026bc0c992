"""Instance label TIFFs: ``labels/<stem>.tif`` plus the class sidecar ``labels/<stem>.json``.

The TIFF holds the ``(H, W)`` instance map as uint16 (0 = background, ids kept as given, zlib
compressed), so it opens as a Labels layer in napari or Fiji. The JSON sidecar maps each id to its
class name::

    {"stem": "000", "image_file": "000.png", "classes": ["defect", "scratch"],
     "instances": {"1": "defect", "4": "scratch"}, "verified": {"1": true, "4": false}}

``verified`` says per id whether a person verified the instance or it is ClipSAM's unreviewed output.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import tifffile

__all__ = [
    "LABEL_DIR",
    "MAX_LABEL_ID",
    "label_tiff_paths",
    "encode_label_tiff",
    "encode_label_classes",
    "read_label_tiff",
    "read_label_verified",
]

LABEL_DIR = "labels"
MAX_LABEL_ID = np.iinfo(np.uint16).max


def label_tiff_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    """``(out_dir/labels/<stem>.tif, out_dir/labels/<stem>.json)``."""
    base = Path(out_dir) / LABEL_DIR
    return base / f"{stem}.tif", base / f"{stem}.json"


def encode_label_tiff(instances: np.ndarray) -> bytes:
    """TIFF bytes of an ``(H, W)`` instance map stored as uint16; ids must be in 0..65535."""
    if instances.size and int(instances.max()) > MAX_LABEL_ID:
        raise ValueError(f"instance ids go up to {int(instances.max())}; a uint16 TIFF holds at most {MAX_LABEL_ID}")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, instances.astype(np.uint16), compression="zlib")
    return buffer.getvalue()


def encode_label_classes(
    stem: str, instance_classes: dict[int, str], classes: list[str], image_file: str | None,
    verified: dict[int, bool] | None = None,
) -> bytes:
    """The sidecar JSON bytes: stem, image file, class list, ``{"<id>": class name}`` and, when given,
    ``"verified": {"<id>": bool}`` (whether a person verified the instance, see :mod:`.verified`)."""
    sidecar = {
        "stem": stem,
        "image_file": image_file,
        "classes": list(classes),
        "instances": {str(i): name for i, name in sorted(instance_classes.items())},
    }
    if verified is not None:
        sidecar["verified"] = {str(i): bool(flag) for i, flag in sorted(verified.items())}
    return (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def read_label_tiff(path: str | Path) -> tuple[np.ndarray, dict[int, str]]:
    """Read a label TIFF and its sidecar: ``((H, W) uint16 array, {instance id: class name})``.

    The mapping is empty when the sidecar ``<stem>.json`` next to the TIFF is missing.
    """
    path = Path(path)
    labels = tifffile.imread(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return labels, {}
    mapping = json.loads(sidecar.read_text(encoding="utf-8")).get("instances", {})
    return labels, {int(i): str(name) for i, name in mapping.items()}


def read_label_verified(path: str | Path) -> dict[int, bool]:
    """``{instance id: verified}`` from the sidecar of a label TIFF (empty when it has none: an older export)."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.exists():
        return {}
    table = json.loads(sidecar.read_text(encoding="utf-8")).get("verified", {})
    return {int(i): bool(flag) for i, flag in table.items()}
