"""COCO per-image shards and their merge into ``coco/annotations.json``.

Exporting an image writes its own shard ``coco/shards/<stem>.json`` (the image entry and its annotations,
classes by name, no ids), so the cost of one image's export does not depend on how many images the folder
already holds. :func:`merge_coco` folds the shards into ``coco/annotations.json`` under the folder lock:

* image ids are kept by stem, new stems get ``max id + 1``; categories keep their ids, new class names are
  appended (in each shard's class-list order); annotations of a replaced image get new ids;
* a shard already merged (its SHA-256 is recorded as ``shard_sha256`` in the image entry) is skipped, so a
  merge costs one read of every shard plus one write of the file;
* images in the file without a shard (written by earlier versions, or by hand) are kept as they are.

``annotations.json`` is only ever replaced atomically, so it is a valid COCO file at every moment, also
after a crash (then it lacks the shards not merged yet; the next merge adds them). The exporter merges
after each image by default; ``segment`` merges once at the end of a run (and when interrupted).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import ExportError
from ..io.atomic import AtomicBatch
from .coco import COCO_FILE, coco_category_ids, encode_coco, load_coco, remember_coco
from .locking import folder_lock

__all__ = ["COCO_SHARD_DIR", "coco_shard_path", "encode_coco_shard", "merge_coco"]

COCO_SHARD_DIR = Path("coco") / "shards"


def coco_shard_path(out_dir: Path, stem: str) -> Path:
    """``out_dir/coco/shards/<stem>.json``."""
    return Path(out_dir) / COCO_SHARD_DIR / f"{stem}.json"


def encode_coco_shard(
    *, stem: str, file_name: str, shape: tuple[int, int], split: str | None, classes: list[str], annotations
) -> bytes:
    """The shard bytes of one image: ``{"stem", "file_name", "height", "width", ["split"], "classes",
    "annotations"}`` with annotations from :func:`.coco.coco_annotations`."""
    shard = {"stem": stem, "file_name": file_name, "height": int(shape[0]), "width": int(shape[1])}
    if split is not None:
        shard["split"] = split
    shard["classes"] = list(classes)
    shard["annotations"] = annotations
    return (json.dumps(shard, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def merge_coco(out_dir: str | os.PathLike, stems=None) -> Path | None:
    """Fold the shards (all, or those of ``stems``) into ``coco/annotations.json``; returns its path.

    Returns None when there is neither a shard nor a COCO file. Raises :class:`ExportError` naming a shard
    or COCO file that cannot be read (nothing is changed then).
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / COCO_SHARD_DIR
    path = out_dir / COCO_FILE
    with folder_lock(out_dir):
        if stems is None:
            shards = sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []
        else:
            shards = [p for p in (coco_shard_path(out_dir, s) for s in stems) if p.is_file()]
        if not shards and not path.exists():
            return None
        coco = load_coco(path)
        by_stem = {str(image.get("stem", Path(str(image.get("file_name", ""))).stem)): image
                   for image in coco["images"]}
        next_image = max((int(i["id"]) for i in coco["images"]), default=0) + 1
        next_ann = max((int(a["id"]) for a in coco["annotations"]), default=0) + 1
        replaced: set[int] = set()
        new_annotations: list[dict] = []
        changed = not path.exists()
        for shard_path in shards:
            try:
                data = shard_path.read_bytes()
            except OSError as err:
                raise ExportError(f"cannot read the COCO shard {shard_path}: {err}") from err
            digest = hashlib.sha256(data).hexdigest()
            stem = shard_path.name[: -len(".json")]
            old = by_stem.get(stem)
            if old is not None and old.get("shard_sha256") == digest:
                continue
            try:
                shard = json.loads(data.decode("utf-8"))
                category_ids = coco_category_ids(coco, list(shard["classes"]))
                entry = {"file_name": shard["file_name"], "height": shard["height"], "width": shard["width"],
                         "stem": stem}
                if "split" in shard:
                    entry["split"] = shard["split"]
                anns = [(category_ids[a["category"]], a) for a in shard["annotations"]]
            except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
                raise ExportError(
                    f"the COCO shard {shard_path} is not readable ({err}); export that image again "
                    "(with overwrite) or delete the shard"
                ) from err
            if old is not None:
                image_id = int(old["id"])
                replaced.add(image_id)
                old.clear()
            else:
                image_id, next_image = next_image, next_image + 1
                old = {}
                coco["images"].append(old)
                by_stem[stem] = old
            old.update({"id": image_id, **entry, "shard_sha256": digest})
            changed = True
            for category_id, ann in anns:
                new_annotations.append({"id": next_ann, "image_id": image_id, "category_id": category_id,
                                        **{k: v for k, v in ann.items() if k != "category"}})
                next_ann += 1
        if not changed:
            remember_coco(path, coco)  # nothing new: the file stays as it is
            return path
        if replaced:
            coco["annotations"] = [a for a in coco["annotations"] if a.get("image_id") not in replaced]
        coco["annotations"].extend(new_annotations)
        with AtomicBatch() as batch:
            batch.stage(path, encode_coco(coco))
            batch.commit()
        remember_coco(path, coco)
        return path
