"""The dock's Export tab, driven through its public controls: verified flags, and datasets the trainers read."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from pycocotools.coco import COCO  # noqa: E402

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.export import COCO_VERIFIED_KEY, dataset_split, read_yolo_labels  # noqa: E402
from napari_clipsam.io.images import normalise_image  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

WAIT_MS = 20_000


@pytest.fixture
def dock(make_napari_viewer, shared_engine):
    viewer = make_napari_viewer()
    widget = ClipSAMWidget(viewer, engine=shared_engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.c.prompt_threshold.setValue(0.3)  # the tiny random CLIP's rough map peaks around 0.6
    widget.c.object_name.setText("machined part")
    return viewer, widget


def run(qtbot, widget):
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "Done" in widget.status, widget.status


def coco_flags(path) -> dict[int, bool]:
    coco = COCO(str(path))
    return {a["instance_id"]: a[COCO_VERIFIED_KEY] for a in coco.loadAnns(coco.getAnnIds())}


def test_dock_export_marks_locked_objects_verified(qtbot, dock, tmp_path):
    viewer, widget = dock
    src = viewer.add_image(synthetic_image("part", "crack", size=96, seed=1)[0], name="part")
    run(qtbot, widget)
    out = widget.outputs_for(src)
    ids = sorted(set(np.unique(out.masks.data).tolist()) - {0})
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert f"0 verified by you, {len(ids)} pseudo-label(s)" in widget.status, widget.status
    assert coco_flags(tmp_path / "ds/coco/annotations.json") == dict.fromkeys(ids, False)
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
    run(qtbot, widget)
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
    run(qtbot, widget)
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert "Exported 1 image(s)" in widget.status, widget.status
    image = check_trainable(tmp_path / "ds", "scan_07", pixels.shape)
    assert image.suffix == ".tif"  # a TIFF stays a TIFF, 8-bit now
    lo, hi = (float(v) for v in src.contrast_limits)
    np.testing.assert_array_equal(tifffile.imread(image), normalise_image(pixels, (lo, hi))[0][..., 0])
    assert not (tmp_path / "ds/originals").exists()  # not asked for


def test_dock_review_accept_exports_every_object_as_verified(qtbot, dock, tmp_path):
    import json

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
