"""The dock's Export tab, driven through its public controls: the files read back, verified flags, and datasets the
trainers read."""
from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from pycocotools.coco import COCO  # noqa: E402

from dock_helpers import STRICT_NAPARI, WAIT_MS, run_and_wait  # noqa: E402
from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.export import (COCO_VERIFIED_KEY, dataset_split, read_label_tiff, read_mvtec_mask,  # noqa: E402
                                   read_yolo_labels)
from napari_clipsam.io.images import normalise_image  # noqa: E402

pytestmark = STRICT_NAPARI


@pytest.fixture
def dock(make_widget):
    return make_widget()


def coco_flags(path) -> dict[int, bool]:
    coco = COCO(str(path))
    return {a["instance_id"]: a[COCO_VERIFIED_KEY] for a in coco.loadAnns(coco.getAnnIds())}


def test_dock_export_marks_locked_objects_verified(qtbot, dock, tmp_path):
    viewer, widget = dock
    src = viewer.add_image(synthetic_image("part", "crack", size=96, seed=1)[0], name="part")
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    ids = sorted(set(np.unique(out.masks.data).tolist()) - {0})
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert f"0 verified by you, {len(ids)} pseudo-label(s)" in widget.status, widget.status
    assert coco_flags(tmp_path / "ds/coco/annotations.json") == dict.fromkeys(ids, False)
    widget.c.export.click()  # again, overwrite off: nothing written, so no objects are counted as exported
    assert " 0 file(s) written, " in widget.status and "existing file(s) kept" in widget.status, widget.status
    assert "verified by you" not in widget.status
    out.masks.selected_label = ids[0]
    widget.c.lock_object.click()
    widget.c.overwrite.setChecked(True)
    widget.c.export.click()
    assert f"1 verified by you, {len(ids) - 1} pseudo-label(s)" in widget.status, widget.status
    assert coco_flags(tmp_path / "ds/coco/annotations.json") == {i: i == ids[0] for i in ids}


# ---------------------------------------------------------------------- dock exports that train (issue 22 item 5)


def uint16_part() -> np.ndarray:
    """A 16-bit gray image whose 8-bit view is the synthetic part (values spread over 1000..60000)."""
    gray = synthetic_image("part", "crack", size=96, seed=1)[0].mean(axis=-1)
    return (1000 + gray * (59000 / 255)).astype(np.uint16)


def check_trainable(root, stem, shape) -> Path:
    """The YOLO and COCO folders read back with their libraries; returns the YOLO image's path."""
    data = yaml.safe_load((root / "yolo/data.yaml").read_text())
    split = dataset_split(stem)
    found = sorted((root / "yolo" / data[split]).glob(f"{stem}.*"))  # data.yaml's own folder for this split
    assert len(found) == 1, sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    image = found[0]
    assert iio.imread(image).dtype == np.uint8 and iio.imread(image).shape[:2] == shape
    assert read_yolo_labels(root / "yolo/labels" / split / f"{stem}.txt", shape)  # images/ -> labels/ rule
    coco = COCO(str(root / "coco/annotations.json"))
    (entry,) = coco.loadImgs(coco.getImgIds())
    assert entry["file_name"] == f"images/{split}/{image.name}" and entry["split"] == split
    assert iio.imread(root / "coco" / entry["file_name"]).shape[:2] == (entry["height"], entry["width"]) == shape
    labels = tifffile.imread(root / "labels" / f"{stem}.tif")
    assert labels.shape == shape and len(coco.getAnnIds()) == len(set(np.unique(labels).tolist()) - {0}) > 0
    return image


def test_dock_export_writes_a_trainable_dataset_for_a_layer(qtbot, dock, tmp_path):
    viewer, widget = dock
    pixels = uint16_part()
    src = viewer.add_image(pixels, name="metal plate")
    src.contrast_limits = (1000.0, 60000.0)
    run_and_wait(qtbot, widget)
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.keep_original.setChecked(True)
    widget.c.export.click()
    assert "Exported 1 image(s)" in widget.status, widget.status
    assert not list((tmp_path / "ds").rglob("* *")), "no file name with a space"
    image = check_trainable(tmp_path / "ds", "metal_plate", pixels.shape)
    # the 8-bit image is what ClipSAM segmented: the layer's contrast limits, ClipSAM's normalisation, gray
    expected = normalise_image(pixels, (1000.0, 60000.0))[0][..., 0]
    np.testing.assert_array_equal(iio.imread(image), expected)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ds/originals/metal_plate.tif"), pixels)


def test_dock_export_names_a_file_layer_after_its_file(qtbot, dock, tmp_path):
    viewer, widget = dock
    pixels = uint16_part()
    path = tmp_path / "scan 07.tif"
    tifffile.imwrite(path, pixels)
    (src,) = viewer.open(str(path), plugin="napari")
    src.name = "my renamed layer"
    run_and_wait(qtbot, widget)
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert "Exported 1 image(s)" in widget.status, widget.status
    image = check_trainable(tmp_path / "ds", "scan_07", pixels.shape)
    assert image.suffix == ".tif"  # a TIFF stays a TIFF, 8-bit now
    lo, hi = (float(v) for v in src.contrast_limits)
    np.testing.assert_array_equal(tifffile.imread(image), normalise_image(pixels, (lo, hi))[0][..., 0])
    assert not (tmp_path / "ds/originals").exists()  # not asked for


def test_dock_review_accept_exports_every_object_as_verified(qtbot, dock, tmp_path):
    viewer, widget = dock
    src_dir, out_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    iio.imwrite(src_dir / "a.png", synthetic_image("part", "crack", size=96, seed=1)[0])
    assert widget.folder.open(src_dir, out_dir)
    qtbot.waitUntil(lambda: not widget.busy and widget.outputs_for(widget.folder.layer) is not None
                    and None in widget.outputs_for(widget.folder.layer).results, timeout=WAIT_MS)
    widget.c.qa_accept.click()
    qtbot.waitUntil(lambda: (out_dir / "clipsam_manifest.json").is_file(), timeout=WAIT_MS)
    flags = coco_flags(out_dir / "coco/annotations.json")
    assert flags and set(flags.values()) == {True}
    entry = json.loads((out_dir / "clipsam_manifest.json").read_text())["images"]["a.png"]
    assert entry["verdict"] == "accepted" and entry["n_verified"] == entry["n_instances"] == len(flags)


# ---------------------------------------------------------------------- the Export tab's files read back


def test_export_round_trip(qtbot, make_widget, tmp_path, image):
    from pycocotools import mask as mask_utils

    viewer, widget = make_widget()
    src = viewer.add_image(image, name="part 1")
    run_and_wait(qtbot, widget)
    out = widget.outputs_for(src)
    widget.classes.add("scratch")
    out.masks.selected_label = 1
    widget.c.class_assign.click()
    assert widget.outputs_for(src).instance_classes()[1] == "scratch"
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert "Exported 1 image(s)" in widget.status, widget.status
    masks = out.masks.data
    png = read_mvtec_mask(tmp_path / "ds/masks/part_1_mask.png")
    assert set(np.unique(iio.imread(tmp_path / "ds/masks/part_1_mask.png"))) <= {0, 255}
    np.testing.assert_array_equal(png, masks > 0)
    labels, classes = read_label_tiff(tmp_path / "ds/labels/part_1.tif")
    np.testing.assert_array_equal(labels, masks)
    assert classes[1] == "scratch"
    coco = COCO(str(tmp_path / "ds/coco/annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(set(np.unique(masks)) - {0})
    union = np.zeros_like(masks, bool)
    for ann in anns:
        union |= coco.annToMask(ann).astype(bool)
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    np.testing.assert_array_equal(union, masks > 0)
    assert "scratch" in [c["name"] for c in coco.loadCats(coco.getCatIds())]
    assert read_yolo_labels(tmp_path / "ds/yolo/labels" / dataset_split("part_1") / "part_1.txt", masks.shape)
    prov = json.loads((tmp_path / "ds/provenance/part_1.json").read_text())
    text = json.dumps(prov)
    assert '"edited"' in text and '"prompts"' in text and "training-free" in text
    # a second export without overwrite keeps the files; an error is shown, not raised
    widget.c.export.click()
    assert "kept" in widget.status
    widget.c.export_dir.setText(str(tmp_path / "ds/masks/part_1_mask.png"))
    widget.c.export.click()
    assert "Export failed" in widget.status


def test_stack_export_per_frame_stems(qtbot, make_widget, tmp_path):
    viewer, widget = make_widget()
    stack = np.stack([synthetic_image("part", "crack", size=64, seed=s)[0] for s in range(3)])
    viewer.add_image(stack, name="run", rgb=True)
    widget.c.all_frames.setChecked(True)
    run_and_wait(qtbot, widget)
    widget.c.export_dir.setText(str(tmp_path))
    for name, box in widget.c.formats.items():
        box.setChecked(name == "mvtec")
    widget.c.export.click()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        "run_f000_mask.png", "run_f001_mask.png", "run_f002_mask.png"]
