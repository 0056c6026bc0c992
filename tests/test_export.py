"""Pseudo-label export: every format written, read back and compared with the instance map."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml
from pycocotools.coco import COCO
from skimage import draw

import napari_clipsam
from napari_clipsam.export import (
    FORMATS,
    ExportError,
    ExportReport,
    ExportRequest,
    export_pseudo_labels,
    write_export,
    read_label_tiff,
    read_mvtec_mask,
    read_yolo_labels,
)
from napari_clipsam.export import dataset_split
from napari_clipsam.io import atomic
from napari_clipsam.export.locking import LOCK_NAME

SHAPE = (64, 80)


def blobs() -> np.ndarray:
    """(64, 80) int32 map: id 3 an ellipse, id 7 two disconnected discs, id 300 a rectangle."""
    inst = np.zeros(SHAPE, np.int32)
    rr, cc = draw.ellipse(20, 20, 10, 14, shape=SHAPE)
    inst[rr, cc] = 3
    for r, c in ((45, 60), (52, 30)):
        rr, cc = draw.disk((r, c), 7, shape=SHAPE)
        inst[rr, cc] = 7
    inst[5:15, 50:75] = 300
    return inst


CLASSES = {3: "scratch", 7: "dent"}  # id 300 gets the default class "defect"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def yolo_txt(out: Path, stem: str) -> Path:
    """Where the YOLO labels of ``stem`` go (its split is a hash of the stem)."""
    return out / "yolo" / "labels" / dataset_split(stem) / f"{stem}.txt"


def yaml_names(out: Path) -> list[str]:
    return yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"]


def yolo_classes(path: Path) -> set[int]:
    """The class indices used in a YOLO label file."""
    return {int(line.split()[0]) for line in path.read_text().splitlines()}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: relative path -> (content, mtime_ns)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in root.rglob("*") if p.is_file() and p.name != LOCK_NAME
    }


def export(out: Path, stem: str = "000", inst=None, instance_classes=CLASSES, **kw) -> ExportReport:
    """Export ``blobs()`` (or ``inst``) with the test classes."""
    return write_export(ExportRequest(out_dir=out, stem=stem, instances=blobs() if inst is None else inst,
                                      instance_classes=instance_classes, **kw))


# ---------------------------------------------------------------- formats read back


def test_layout_and_report(tmp_path):
    report = export(tmp_path, instance_classes=CLASSES, image_file="/data/000.png")
    rel = [p.relative_to(tmp_path).as_posix() for p in report.written]
    assert rel == [
        "provenance/000.json",  # first: a crash between renames leaves a record of what was being written
        "masks/000_mask.png",
        "labels/000.tif",
        "labels/000.json",
        "coco/shards/000.json",
        f"yolo/labels/{dataset_split('000')}/000.txt",
        "yolo/data.yaml",
        "coco/annotations.json",  # the shard merged in
    ]
    assert report.skipped == []
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        rel + [LOCK_NAME])


def test_mvtec_mask_is_binary_0_255(tmp_path):
    inst = blobs()
    export(tmp_path, inst=inst, formats=["mvtec"])
    png = iio.imread(tmp_path / "masks" / "000_mask.png")
    assert png.dtype == np.uint8 and png.shape == SHAPE
    assert set(np.unique(png)) == {0, 255}
    np.testing.assert_array_equal(png == 255, inst > 0)
    np.testing.assert_array_equal(read_mvtec_mask(tmp_path / "masks" / "000_mask.png"), inst > 0)


def test_label_tiff_keeps_ids_and_classes(tmp_path):
    inst = blobs()
    export(tmp_path, inst=inst, formats=["tiff"], instance_classes=CLASSES)
    raw = tifffile.imread(tmp_path / "labels" / "000.tif")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, inst)
    labels, mapping = read_label_tiff(tmp_path / "labels" / "000.tif")
    np.testing.assert_array_equal(labels, inst)
    assert mapping == {3: "scratch", 7: "dent", 300: "defect"}
    sidecar = json.loads((tmp_path / "labels" / "000.json").read_text())
    assert sidecar["classes"] == ["scratch", "dent", "defect"]


def test_tiff_rejects_ids_beyond_uint16_but_other_formats_accept_them(tmp_path):
    inst = np.zeros((8, 8), np.int64)
    inst[2:5, 2:5] = 10**9
    with pytest.raises(ExportError, match="uint16"):
        export_pseudo_labels(tmp_path, "big", inst)
    assert list(tmp_path.iterdir()) == []
    export_pseudo_labels(tmp_path, "big", inst, formats=("coco", "yolo"))
    ann = json.loads((tmp_path / "coco" / "annotations.json").read_text())["annotations"]
    assert [a["instance_id"] for a in ann] == [10**9]


def test_coco_rle_masks_are_exact(tmp_path):
    inst = blobs()
    export(tmp_path, inst=inst, formats=["coco"], instance_classes=CLASSES)
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert names == {1: "scratch", 2: "dent", 3: "defect"}
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(a["instance_id"] for a in anns) == [3, 7, 300]
    for ann in anns:
        mask = inst == ann["instance_id"]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        assert names[ann["category_id"]] == {3: "scratch", 7: "dent", 300: "defect"}[ann["instance_id"]]
        rows, cols = np.nonzero(mask)
        assert ann["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_coco_polygons_cover_each_piece(tmp_path):
    inst = blobs()
    export(tmp_path, inst=inst, formats=["coco"], coco_segmentation="polygon")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert isinstance(ann["segmentation"], list)
        assert len(ann["segmentation"]) == (2 if ann["instance_id"] == 7 else 1)
        assert all(len(poly) >= 6 for poly in ann["segmentation"])
        assert iou(coco.annToMask(ann).astype(bool), inst == ann["instance_id"]) > 0.9


def test_coco_is_shared_and_replaced_by_stem(tmp_path):
    export(tmp_path, "a", instance_classes={3: "scratch"}, formats=["coco"])
    export(tmp_path, "b", instance_classes={3: "crack"}, formats=["coco"], image_file="b.jpg")
    path = tmp_path / "coco" / "annotations.json"
    data = json.loads(path.read_text())
    assert [i["file_name"] for i in data["images"]] == ["a", "b.jpg"]
    assert len(data["annotations"]) == 6
    cats = {c["name"]: c["id"] for c in data["categories"]}
    assert cats == {"scratch": 1, "defect": 2, "crack": 3}  # existing ids kept, new class appended

    # Re-export "a" with one instance: replaced in place, "b" kept, no duplicates.
    one = np.zeros(SHAPE, np.uint8)
    one[10:20, 10:20] = 1
    report = export_pseudo_labels(tmp_path, "a", one, {1: "crack"}, formats=["coco"], overwrite=True)
    assert path in report.written
    data = json.loads(path.read_text())
    assert sorted(i["stem"] for i in data["images"]) == ["a", "b"]
    a_id = next(i["id"] for i in data["images"] if i["stem"] == "a")
    a_anns = [x for x in data["annotations"] if x["image_id"] == a_id]
    assert len(a_anns) == 1 and a_anns[0]["category_id"] == 3
    assert len(data["annotations"]) == 4
    assert len({x["id"] for x in data["annotations"]}) == 4
    assert {c["name"]: c["id"] for c in data["categories"]} == cats
    COCO(str(path))  # still loads


def test_coco_remembered_between_exports_equals_the_file_and_sees_outside_edits(tmp_path):
    from napari_clipsam.export.coco import load_coco

    path = tmp_path / "coco" / "annotations.json"
    export(tmp_path, "a", formats=["coco"])
    export(tmp_path, "b", formats=["coco"])
    export(tmp_path, "a", formats=["coco"])  # skipped: the file is unchanged and stays remembered
    remembered = load_coco(path)  # the fast path: handed over without parsing
    assert remembered == json.loads(path.read_text())
    assert load_coco(path) is not remembered  # handed over once; the next load parses the file
    # another program edits the file: the next export builds on that edit, not on the remembered dict
    export(tmp_path, "c", formats=["coco"])
    data = json.loads(path.read_text())
    data["info"]["description"] = "edited by hand"
    path.write_text(json.dumps(data))
    export(tmp_path, "d", formats=["coco"])
    data = json.loads(path.read_text())
    assert data["info"]["description"] == "edited by hand"
    assert [i["stem"] for i in data["images"]] == ["a", "b", "c", "d"]
    # a failed write leaves nothing remembered that the file does not hold
    coco = load_coco(path)
    coco["images"].append({"id": 999, "stem": "ghost"})
    assert "ghost" not in {i["stem"] for i in load_coco(path)["images"]}


def test_yolo_one_polygon_per_instance_and_relative_data_yaml(tmp_path):
    inst = blobs()
    export(tmp_path, inst=inst, formats=["yolo"], instance_classes=CLASSES)
    txt = yolo_txt(tmp_path, "000")
    lines = txt.read_text().splitlines()
    assert len(lines) == 3  # ellipse, two discs joined into one polygon, rectangle
    for line in lines:
        values = np.array(line.split()[1:], float)
        assert len(values) >= 6 and len(values) % 2 == 0
        assert values.min() > 0 and values.max() < 1
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data == {"train": "images/train", "val": "images/val", "nc": 3, "names": ["scratch", "dent", "defect"]}
    assert sorted(cls for cls, _ in read_yolo_labels(txt, SHAPE)) == [0, 1, 2]


def test_yolo_empty_image_and_growing_names(tmp_path):
    export_pseudo_labels(tmp_path, "empty", np.zeros(SHAPE, np.uint16), formats=["yolo"])
    assert (yolo_txt(tmp_path, "empty")).read_bytes() == b""
    assert yaml_names(tmp_path) == ["defect"]
    export(tmp_path, "000", formats=["yolo"], instance_classes=CLASSES)
    assert yaml_names(tmp_path) == ["defect", "scratch", "dent"]
    classes_used = yolo_classes(yolo_txt(tmp_path, "000"))
    assert classes_used == {0, 1, 2}


def test_yolo_reads_hand_written_block_names_and_drops_an_absolute_path(tmp_path):
    yaml_file = tmp_path / "yolo" / "data.yaml"
    yaml_file.parent.mkdir(parents=True)
    yaml_file.write_text(f"path: {tmp_path / 'yolo'}\ntrain: images\nval: images\nnames:\n  0: dent\n  1: other\n"
                         "download: none\n")
    export(tmp_path, formats=["yolo"], instance_classes=CLASSES)
    data = yaml.safe_load(yaml_file.read_text())
    assert data["names"] == ["dent", "other", "scratch", "defect"] and data["nc"] == 4
    assert "path" not in data and data["train"] == "images/train" and data["download"] == "none"
    classes_used = yolo_classes(yolo_txt(tmp_path, "000"))
    assert classes_used == {0, 2, 3}


def test_read_yolo_labels_rejects_malformed_lines(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("0 0.1 0.1 0.2 0.2\n")
    with pytest.raises(ValueError, match="x.txt:1"):
        read_yolo_labels(path, SHAPE)


def test_provenance_record(tmp_path):
    settings = {"threshold": np.float32(0.5), "prompts": ("a", "b"), "sizes": np.array([1, 2]), "path": Path("m.pt")}
    export(tmp_path, provenance=settings, image_file="/data/000.png")
    prov = json.loads((tmp_path / "provenance" / "000.json").read_text())
    assert prov["stem"] == "000" and prov["image_file"] == "/data/000.png"
    (record,) = prov["exports"]
    assert record["package_version"] == napari_clipsam.__version__
    assert record["engine"] == {"threshold": 0.5, "prompts": ["a", "b"], "sizes": [1, 2], "path": "m.pt"}
    assert record["formats"] == list(FORMATS)
    assert record["instance_classes"] == {"3": "scratch", "7": "dent", "300": "defect"}
    assert record["class_ids"] == {"yolo": {"scratch": 0, "dent": 1, "defect": 2}}  # COCO ids: in the COCO file
    files = [f for f in record["files"] if f not in ("provenance/000.json", "yolo/data.yaml")]
    assert sorted(record["sha256"]) == sorted(files)  # every per-image file, with its hash
    assert datetime.fromisoformat(record["exported_at"]).utcoffset().total_seconds() == 0


def test_provenance_history_keeps_only_records_still_describing_files(tmp_path):
    export(tmp_path, formats=["mvtec"])
    export(tmp_path, formats=["yolo"])
    export(tmp_path, formats=["mvtec"], overwrite=True)
    records = json.loads((tmp_path / "provenance" / "000.json").read_text())["exports"]
    assert [r["formats"] for r in records] == [["yolo"], ["mvtec"]]


# ---------------------------------------------------------------- overwrite rules


def test_existing_files_are_not_overwritten_by_default(tmp_path):
    export(tmp_path)
    before = snapshot(tmp_path)
    other = np.zeros(SHAPE, np.int32)
    other[30:40, 30:40] = 1
    report = export_pseudo_labels(tmp_path, "000", other)
    assert report.written == []
    assert sorted(p.relative_to(tmp_path).as_posix() for p in report.skipped) == sorted(
        ["masks/000_mask.png", "labels/000.tif", "labels/000.json", "coco/shards/000.json",
         f"yolo/labels/{dataset_split('000')}/000.txt"]
    )
    assert snapshot(tmp_path) == before  # content and mtime unchanged


def test_overwrite_replaces(tmp_path):
    export(tmp_path)
    other = np.zeros(SHAPE, np.int32)
    other[30:40, 30:40] = 1
    report = export_pseudo_labels(tmp_path, "000", other, overwrite=True)
    assert report.skipped == []
    np.testing.assert_array_equal(read_mvtec_mask(tmp_path / "masks" / "000_mask.png"), other > 0)
    np.testing.assert_array_equal(read_label_tiff(tmp_path / "labels" / "000.tif")[0], other)
    assert len(json.loads((tmp_path / "coco" / "annotations.json").read_text())["annotations"]) == 1
    assert len((yolo_txt(tmp_path, "000")).read_text().splitlines()) == 1


def test_new_format_is_added_next_to_skipped_ones(tmp_path):
    export(tmp_path, formats=["mvtec"])
    report = export(tmp_path, formats=["mvtec", "tiff"])
    assert [p.name for p in report.skipped] == ["000_mask.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in report.written] == [
        "provenance/000.json", "labels/000.tif", "labels/000.json"]


# ---------------------------------------------------------------- bad input writes nothing


@pytest.mark.parametrize(
    "stem, inst, kwargs, match",
    [
        ("000", np.zeros((4, 4, 3), np.int32), {}, "2-D"),
        ("000", np.zeros((4, 4), np.float32), {}, "integer"),
        ("000", -np.ones((4, 4), np.int32), {}, "negative"),
        ("a/b", np.zeros((4, 4), np.int32), {}, "file name"),
        ("..", np.zeros((4, 4), np.int32), {}, "stem"),
        ("000", np.zeros((4, 4), np.int32), {"formats": ["png"]}, "unknown"),
        ("000", np.zeros((4, 4), np.int32), {"classes": "defect"}, "list"),
        ("000", np.zeros((4, 4), np.int32), {"coco_segmentation": "mask"}, "coco_segmentation"),
        ("000", np.zeros((4, 4), np.int32), {"provenance": {"model": object()}}, "provenance"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, stem, inst, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_pseudo_labels(tmp_path / "out", stem, inst, **kwargs)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_bool_mask_is_one_instance(tmp_path):
    mask = blobs() > 0
    export_pseudo_labels(tmp_path, "b", mask, formats=["tiff"])
    labels, mapping = read_label_tiff(tmp_path / "labels" / "b.tif")
    np.testing.assert_array_equal(labels, mask.astype(np.uint16))
    assert mapping == {1: "defect"}


# ---------------------------------------------------------------- failures keep the previous files


def test_unserialisable_provenance_keeps_previous_files(tmp_path):
    export(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ExportError, match=r"provenance\['models'\]\[1\].*SetLike"):
        export(tmp_path, overwrite=True, provenance={"models": ["ok", SetLike()]})
    assert snapshot(tmp_path) == before


class SetLike:
    """An object JSON cannot hold."""


def test_failed_replace_rolls_back_everything(tmp_path, monkeypatch):
    export(tmp_path, formats=["mvtec", "tiff", "coco"])
    before = snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "000.json" and Path(dst).parent.name == "shards":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    other = np.zeros(SHAPE, np.int32)
    other[0:5, 0:5] = 1
    with pytest.raises(ExportError, match=r"shards/000\.json.*No space left"):
        export_pseudo_labels(tmp_path, "000", other, formats=FORMATS, overwrite=True)
    monkeypatch.undo()
    # Mask and TIFF had already been replaced: restored. YOLO files were new: removed. No temp files.
    assert snapshot(tmp_path) == before  # contents and mtimes: the old files themselves are back
    assert not (tmp_path / "yolo").exists()
    assert not [p for p in tmp_path.rglob(".*") if p.name != LOCK_NAME]


def test_failed_write_leaves_no_temp_files(tmp_path, monkeypatch):
    export(tmp_path, formats=["mvtec"])
    before = snapshot(tmp_path)

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(ExportError, match="provenance/000.json.*Input/output error"):
        export(tmp_path, formats=["mvtec", "tiff"], overwrite=True)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob(".*") if p.name != LOCK_NAME]
    assert not (tmp_path / "labels").exists()
