"""Verified or pseudo, per object (issue 21 item 5): every format records the flag and reads back with its library."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from napari_clipsam.export import (COCO_VERIFIED_KEY, ExportError, ExportRequest, dataset_split, read_label_verified,
                                   read_yolo_labels, write_export)
from napari_clipsam.review import QASession
from napari_clipsam.review.manifest import read_csv
from napari_clipsam.widget.labels_export import hand_verified


def _inst() -> np.ndarray:
    inst = np.zeros((40, 50), np.int32)
    inst[2:10, 3:12] = 3
    inst[20:30, 5:15] = 7
    inst[25:35, 30:45] = 300
    return inst


def _latest_provenance(out, stem) -> dict:
    return json.loads((out / "provenance" / f"{stem}.json").read_text())["exports"][-1]


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_every_format_records_verified_per_instance(tmp_path, segmentation):
    inst = _inst()
    report = write_export(ExportRequest(out_dir=tmp_path, stem="img", instances=inst, verified={3: True, 7: False},
                                        coco_segmentation=segmentation))
    assert (report.n_verified, report.n_pseudo) == (1, 2)
    want = {3: True, 7: False, 300: False}  # 300 is not in the mapping: a pseudo-label
    # COCO: pycocotools loads the file, keeps the key, and decodes the masks as before
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a["instance_id"]: a[COCO_VERIFIED_KEY] for a in anns} == want
    assert all(type(a[COCO_VERIFIED_KEY]) is bool for a in anns)
    for a in anns:
        np.testing.assert_array_equal(coco.annToMask(a).astype(bool), inst == a["instance_id"])
        assert int(mask_utils.area(coco.annToRLE(a))) == a["area"]
    # label TIFF: the ids in the image, the flags in its JSON sidecar
    tif = tmp_path / "labels" / "img.tif"
    np.testing.assert_array_equal(tifffile.imread(tif), inst)
    sidecar = json.loads(tif.with_suffix(".json").read_text())
    assert sidecar["verified"] == {"3": True, "7": False, "300": False}
    assert read_label_verified(tif) == want
    # YOLO: the provenance names the instance of each label line, in order
    rows = read_yolo_labels(tmp_path / "yolo" / "labels" / dataset_split("img") / "img.txt", inst.shape)
    prov = _latest_provenance(tmp_path, "img")
    assert len(prov["yolo_line_ids"]) == len(rows) == 3
    assert [prov["verified"][str(i)] for i in prov["yolo_line_ids"]] == [want[i] for i in (3, 7, 300)]
    assert (prov["n_verified"], prov["n_pseudo"]) == (1, 2)


def test_default_is_pseudo_and_a_bool_sets_all(tmp_path):
    r = write_export(ExportRequest(out_dir=tmp_path / "a", stem="x", instances=_inst(), formats=["tiff"]))
    assert (r.n_verified, r.n_pseudo) == (0, 3)
    assert set(read_label_verified(tmp_path / "a" / "labels" / "x.tif").values()) == {False}
    r = write_export(ExportRequest(out_dir=tmp_path / "b", stem="x", instances=_inst(), formats=["coco"], verified=True))
    assert (r.n_verified, r.n_pseudo) == (3, 0)
    coco = json.loads((tmp_path / "b" / "coco" / "annotations.json").read_text())
    assert [a[COCO_VERIFIED_KEY] for a in coco["annotations"]] == [True] * 3


@pytest.mark.parametrize("value, words", [("yes", "verified must be True, False or a mapping"),
                                          ({"3": True}, "verified keys must be integer"),
                                          ({3: 1}, r"verified\[3\] must be True or False")])
def test_bad_verified_is_refused(tmp_path, value, words):
    with pytest.raises(ExportError, match=words):
        ExportRequest(out_dir=tmp_path, stem="x", instances=_inst(), verified=value)


def test_review_accept_verifies_every_object_and_the_manifest_counts_them(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    iio.imwrite(src / "a.png", np.zeros((40, 50), np.uint8))
    session = QASession(src, out)
    report = session.accept(_inst(), {3: "scratch"}, classes=["defect", "scratch"])
    assert (report.n_verified, report.n_pseudo) == (3, 0)
    coco = COCO(str(out / "coco" / "annotations.json"))
    assert {a[COCO_VERIFIED_KEY] for a in coco.loadAnns(coco.getAnnIds())} == {True}
    entry = json.loads((out / "clipsam_manifest.json").read_text())["images"]["a.png"]
    assert entry["n_instances"] == entry["n_verified"] == 3
    assert read_csv(out / "clipsam_manifest.csv")[0]["n_verified"] == "3"


def test_hand_verified_marks_locked_and_touched_objects():
    written = _inst()
    plane = written.copy()
    plane[2:4, 3:12] = 0          # part of object 3 erased by hand
    plane[36:39, 2:5] = 9         # object 9 painted from scratch
    edited = plane != written
    assert hand_verified(plane, written, edited, locked={300}) == {3: True, 7: False, 9: True, 300: True}
    assert hand_verified(plane) == {3: False, 7: False, 9: False, 300: False}


# ---------------------------------------------------------------- 8-bit images for the trainers (issue 22 item 5)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_16_bit_file_is_written_8_bit_as_clipsam_saw_it(tmp_path, suffix):
    from napari_clipsam.export import image_done
    from napari_clipsam.io.images import normalise_image

    pixels = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 31).astype(np.uint16)
    src = tmp_path / f"scan{suffix}"
    iio.imwrite(src, pixels)
    out = tmp_path / "out"
    write_export(ExportRequest(out_dir=out, stem="scan", instances=_inst(), formats=["coco", "yolo"],
                               image_file=src, dataset_images=True, keep_original=True))
    split = dataset_split("scan")
    for image in (out / "yolo" / "images" / split / f"scan{suffix}", out / "coco" / "images" / split / f"scan{suffix}"):
        back = iio.imread(image)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, normalise_image(pixels)[0][..., 0])  # the CLI's percentile mapping
    assert (out / "originals" / f"scan{suffix}").read_bytes() == src.read_bytes()
    # the name keeps the file's suffix, so segment's resume (which does not open the files) finds it done
    assert image_done(out, "scan", ["coco", "yolo"], split=split, image_suffix=suffix)
    # an 8-bit file is still copied byte for byte, and has no original beside it
    small = tmp_path / "small.png"
    iio.imwrite(small, (pixels // 257).astype(np.uint8))
    write_export(ExportRequest(out_dir=out, stem="small", instances=_inst(), formats=["yolo"], image_file=small,
                               dataset_images=True, keep_original=True))
    assert (out / "yolo" / "images" / dataset_split("small") / "small.png").read_bytes() == small.read_bytes()
    assert not (out / "originals" / "small.png").exists()
