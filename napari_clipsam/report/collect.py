"""Gather one row per image of a labels folder: score, verdict, objects, classes, thumbnails."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np

from ..errors import ExportError, InvalidInputError
from ..export.provenance import PROVENANCE_DIR, read_provenance
from ..review.manifest import MANIFEST_NAME

__all__ = ["ImageRow", "collect_rows", "score_of", "THUMB_PX"]

THUMB_PX = 192
UNREVIEWED = "unreviewed"
_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230]], dtype=np.float32)


@dataclasses.dataclass
class ImageRow:
    stem: str
    image_file: str | None
    score: float | None
    verdict: str
    n_objects: int | None  # None: no export the report reads holds the masks
    classes: dict[str, int]
    thumbnail: str | None  # data URI
    overlay: str | None  # data URI
    problem: str = ""


def score_of(record: dict) -> float | None:
    """The image score of a provenance record: ``image_score`` preferred, else ``score`` (top level or engine)."""
    for where in (record, record.get("engine") or {}):
        if not isinstance(where, dict):
            continue
        for key in ("image_score", "score"):
            value = where.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
    return None


def _data_uri(rgb: np.ndarray) -> str:
    import imageio.v3 as iio

    buf = io.BytesIO()
    iio.imwrite(buf, rgb, extension=".png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _shrink(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(a.shape[:2]) / THUMB_PX))
    return a[::step, ::step]


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3].astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    if image.dtype != np.uint8 and (hi > 255 or lo < 0):
        image = (image - lo) / max(hi - lo, 1e-9) * 255
    return np.clip(image, 0, 255).astype(np.uint8)


def _read_instances(folder: Path, stem: str, coco: dict) -> np.ndarray | None:
    """The image's instance map from the first export that holds one: the label TIFF, the MVTec mask (its pieces
    numbered), else the COCO annotations (``coco``: :func:`_coco_index`); None when no export the report reads has
    it (e.g. YOLO only)."""
    tif, png = folder / "labels" / f"{stem}.tif", folder / "masks" / f"{stem}_mask.png"
    if tif.is_file():
        import tifffile

        return np.asarray(tifffile.imread(tif))
    if png.is_file():
        import imageio.v3 as iio
        from skimage.measure import label

        mask = np.asarray(iio.imread(png))
        return label(mask.reshape(mask.shape[:2]) > 0)
    if stem in coco:
        try:
            return _coco_instances(*coco[stem])
        except (KeyError, TypeError, ValueError):  # an annotation edited into something pycocotools cannot draw
            return None
    return None


def _coco_index(folder: Path) -> dict[str, tuple[dict, list[dict]]]:
    """stem → (COCO image entry, its annotations) of the folder's COCO file (empty without one, or when the
    exporter's own reader refuses it as damaged)."""
    from ..export.coco import COCO_FILE, coco_image_stem, load_coco

    try:
        coco = load_coco(folder / COCO_FILE)
    except ExportError:
        return {}
    anns: dict = {}
    for ann in coco["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    return {coco_image_stem(im): (im, anns.get(im["id"], [])) for im in coco["images"]}


def _coco_instances(image: dict, anns: list[dict]) -> np.ndarray:
    """An (H, W) instance map drawn from COCO annotations by pycocotools (ids: each one's ``instance_id``)."""
    from pycocotools import mask as mask_utils

    h, w = int(image["height"]), int(image["width"])
    out = np.zeros((h, w), np.int32)
    for k, ann in enumerate(anns, start=1):
        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        out[(mask_utils.decode(rle) > 0) & (out == 0)] = int(ann.get("instance_id", k))
    return out


def _find_image(folder: Path, stem: str, image_file: str | None) -> Path | None:
    if image_file and Path(image_file).is_file():
        return Path(image_file)
    for sub in ("coco/images", "yolo/images"):
        for path in sorted((folder / sub).glob(f"*/{stem}.*")):
            return path
    return None


def _verdicts(folder: Path) -> dict[str, str]:
    """stem -> verdict from the review manifest (empty when there is none or it cannot be read)."""
    path = folder / MANIFEST_NAME
    try:
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
        return {e["stem"]: str(e["verdict"]) for e in images.values() if isinstance(e, dict) and "stem" in e}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _row(folder: Path, prov: Path, verdicts: dict[str, str], coco: dict) -> ImageRow:
    stem = prov.stem
    records = read_provenance(prov)
    record = records[-1] if records else {}
    image_file = record.get("image_file")
    instances = _read_instances(folder, stem, coco)
    ids = [int(i) for i in np.unique(instances) if i > 0] if instances is not None else []
    names = record.get("instance_classes") or {}
    classes: dict[str, int] = {}
    for i in ids:
        name = str(names.get(str(i), "defect"))
        classes[name] = classes.get(name, 0) + 1
    row = ImageRow(stem, image_file, score_of(record), verdicts.get(stem, UNREVIEWED),
                   None if instances is None else len(ids), classes, None, None)
    source = _find_image(folder, stem, image_file)
    try:
        if source is not None:
            import imageio.v3 as iio

            rgb = _rgb(iio.imread(source))
            row.thumbnail = _data_uri(_shrink(rgb))
            if instances is not None and instances.shape[:2] == rgb.shape[:2]:
                over = rgb.astype(np.float32)
                for k, i in enumerate(ids):
                    sel = instances == i
                    over[sel] = 0.45 * over[sel] + 0.55 * _COLOURS[k % len(_COLOURS)]
                row.overlay = _data_uri(_shrink(over.astype(np.uint8)))
            elif instances is not None:
                row.problem = f"mask shape {instances.shape[:2]} differs from the image's {rgb.shape[:2]}"
        else:
            row.problem = "image file not found"
        if instances is None:
            row.problem = ("no masks to show: the report reads the label TIFF, MVTec or COCO export, and this "
                           "image has none of them (export one of those formats too)")
        if source is None and instances is not None:
            row.overlay = _data_uri(_shrink(_rgb((instances > 0).astype(np.uint8) * 255)))
    except (OSError, ValueError) as err:
        row.problem = f"cannot read {source}: {err}"
    return row


def collect_rows(folder: str | Path) -> list[ImageRow]:
    """The folder's images, worst first (highest score first; images without a score last, by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder; give the --out folder of `napari-clipsam segment`.")
    provs = sorted((folder / PROVENANCE_DIR).glob("*.json"))
    if not provs:
        raise InvalidInputError(
            f"{folder} is not a labels folder: it has no {PROVENANCE_DIR}/<image>.json files; give the --out folder "
            "written by `napari-clipsam segment` or the folder review.")
    verdicts = _verdicts(folder)
    coco = _coco_index(folder)
    rows = [_row(folder, p, verdicts, coco) for p in provs]
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0), r.stem))
    return rows
