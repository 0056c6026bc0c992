"""When is an image done? One definition, used by the exporter (what to write) and by ``segment`` (what to skip).

An image is done for the requested formats when every file of every format exists and matches what its
export recorded, and its provenance file exists. The per-image files of each format are
(:func:`format_files`):

=========  =====================================================================
"mvtec"    ``masks/<stem>_mask.png``
"tiff"     ``labels/<stem>.tif`` and ``labels/<stem>.json``
"coco"     ``coco/shards/<stem>.json`` (+ ``coco/images/<split>/<stem><ext>`` with dataset images)
"yolo"     ``yolo/labels/<split>/<stem>.txt`` (+ ``yolo/images/<split>/<stem><ext>``), and
           ``yolo/data.yaml`` naming the classes the labels use at the indices they use
=========  =====================================================================

Every export writes its provenance record *first* (one atomic batch, renamed in staging order), with the
SHA-256 of each per-image file it is about to put in place. So after a crash between two renames, a file
that is missing, or that still holds older content (different hash, older than the provenance file), marks
its format as unfinished and the next export writes that format again in full. A file whose content differs
but which is newer than the provenance was changed after the export (by a person): it is left alone. A file
no record mentions (made by hand, or by an earlier version) also counts as present and is never replaced
without ``overwrite``.

An image keeps the split it was written in (:func:`resolve_split`): exporting it again with another
``val_fraction`` or ``split_seed`` finds its YOLO / COCO files in their split's folders and leaves them there, so
one image never sits in both ``train`` and ``val``; with ``resplit`` (``segment --overwrite``) it moves to the split
the settings give and its files in the other split are removed.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from ..io.verified import sha256_file
from .coco import COCO_FILE, coco_file_stems
from .coco_merge import coco_shard_path
from .dataset import IMAGE_SUFFIXES, SPLITS, dataset_split
from .mvtec import mvtec_mask_path
from .provenance import provenance_path, read_provenance
from .tiff import label_tiff_paths
from .yolo import data_yaml_path, read_data_yaml, yolo_image_path, yolo_label_path

__all__ = ["format_files", "unfinished_formats", "image_done", "split_files", "resolve_split"]


def format_files(out_dir: Path, stem: str, fmt: str, split: str, image_suffix: str | None) -> list[Path]:
    """The per-image files of one format (see the module table); ``image_suffix`` None: no dataset image."""
    out_dir = Path(out_dir)
    if fmt == "mvtec":
        return [mvtec_mask_path(out_dir, stem)]
    if fmt == "tiff":
        return list(label_tiff_paths(out_dir, stem))
    if fmt == "coco":
        image = [out_dir / COCO_FILE.parent / "images" / split / f"{stem}{image_suffix}"] if image_suffix else []
        return [coco_shard_path(out_dir, stem)] + image
    if fmt == "yolo":
        image = [yolo_image_path(out_dir, stem, split, image_suffix)] if image_suffix else []
        return [yolo_label_path(out_dir, stem, split)] + image
    raise ValueError(f"unknown format {fmt!r}")


def split_files(out_dir: Path, stem: str, split: str, formats) -> list[Path]:
    """The files of ``stem`` on disk in one split's folders, for the requested formats: YOLO's label and
    image, COCO's image (the formats without splits have none)."""
    out_dir, found = Path(out_dir), []
    if "yolo" in formats:
        found.append(yolo_label_path(out_dir, stem, split))
        found += [yolo_image_path(out_dir, stem, split, suffix) for suffix in IMAGE_SUFFIXES]
    if "coco" in formats:
        found += [out_dir / COCO_FILE.parent / "images" / split / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    return [p for p in found if p.is_file()]


def resolve_split(out_dir: Path, stem: str, formats, val_fraction: float, seed: int,
                  resplit: bool) -> tuple[str, list[Path]]:
    """``(split, leaving)``: where the export of ``stem`` goes, and (only with ``resplit``) its files in the
    other split, which the export removes once the new ones are in place (see the module notes).

    The split :func:`~.dataset.dataset_split` gives, unless the image's files are already in the other split
    and not in that one: then, without ``resplit``, it stays where it was written."""
    wanted = dataset_split(stem, val_fraction, seed)
    other = next(s for s in SPLITS if s != wanted)
    there = split_files(out_dir, stem, other, formats)
    if not there:
        return wanted, []
    if resplit:
        return wanted, there
    return (wanted if split_files(out_dir, stem, wanted, formats) else other), []


def unfinished_formats(
    out_dir: Path, stem: str, formats, *, split: str, image_suffix: str | None
) -> list[str]:
    """The requested formats whose files for ``stem`` are missing or left unfinished by an interrupted export."""
    out_dir = Path(out_dir)
    prov = provenance_path(out_dir, stem)
    records = read_provenance(prov) if prov.exists() else []
    prov_mtime = prov.stat().st_mtime_ns if records else None
    recorded: dict[str, str] = {}  # relative path -> sha256 of its latest export
    yolo_classes: dict[str, int] | None = None
    for record in records:  # oldest first: later records win
        recorded.update(record.get("sha256") or {})
        if "yolo" in (record.get("formats") or []):
            yolo_classes = (record.get("class_ids") or {}).get("yolo")
    unfinished = []
    for fmt in formats:
        files = format_files(out_dir, stem, fmt, split, image_suffix)
        if fmt == "coco" and not files[0].exists() and files[0].relative_to(out_dir).as_posix() not in recorded \
                and stem in coco_file_stems(out_dir / COCO_FILE) and len(files) == 1:
            continue  # an entry written by an earlier version (no shard): present
        if not all(_present(p, out_dir, recorded, prov_mtime) for p in files):
            unfinished.append(fmt)
        elif fmt == "yolo" and not _yolo_classes_hold(out_dir, yolo_classes):
            unfinished.append(fmt)
    return unfinished


def image_done(out_dir: Path, stem: str, formats, *, split: str, image_suffix: str | None) -> bool:
    """Whether every file of every requested format and the provenance of ``stem`` are in place.

    An unreadable provenance (or ``data.yaml``) means not done: exporting the image again then says what
    is wrong with which file.
    """
    try:
        return provenance_path(out_dir, stem).is_file() and not unfinished_formats(
            out_dir, stem, formats, split=split, image_suffix=image_suffix
        )
    except ExportError:
        return False


def _present(path: Path, out_dir: Path, recorded: dict[str, str], prov_mtime: int | None) -> bool:
    if not path.is_file():
        return False
    digest = recorded.get(path.relative_to(out_dir).as_posix())
    if digest is None or prov_mtime is None:
        return True  # not ours, or no record: a file someone placed there counts as present
    if sha256_file(path) == digest:
        return True
    return path.stat().st_mtime_ns >= prov_mtime  # changed after the export: a person's edit, keep it


def _yolo_classes_hold(out_dir: Path, class_ids: dict[str, int] | None) -> bool:
    """``data.yaml`` exists and names each class of the latest YOLO export at the index its labels use."""
    path = data_yaml_path(out_dir)
    if not path.is_file():
        return False
    try:
        names = read_data_yaml(path).get("names", [])
    except ExportError:  # unreadable: the exporter will say why
        return False
    return all(0 <= i < len(names) and names[i] == name for name, i in (class_ids or {}).items())
