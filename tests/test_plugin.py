"""The npe2 manifest: napari finds the plugin, its widget, sample data and pseudo-label writer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ("metal", "pcb", "gray16")


@pytest.fixture(scope="module")
def manifest():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest("napari-clipsam")


def test_manifest_valid_and_found(manifest):
    from npe2 import PluginManifest

    assert (ROOT / "napari_clipsam" / "napari.yaml").resolve() == (ROOT / "napari.yaml").resolve()
    PluginManifest._from_package_or_name("napari-clipsam")  # what `npe2 validate napari-clipsam` checks
    assert manifest.display_name == "ClipSAM"
    manifest.validate_imports()  # every python_name imports (`npe2 validate --imports`)
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["ClipSAM"]
    assert contrib.widgets[0].get_callable().__name__ == "ClipSAMWidget"
    assert tuple(s.key for s in contrib.sample_data) == SAMPLES
    (writer,) = contrib.writers
    assert writer.layer_types == ["labels"] and writer.filename_extensions == []


def test_napari_lists_the_plugin():
    from napari.components import ViewerModel
    from npe2 import PluginManager

    pm = PluginManager.instance()  # the plugin manager napari uses
    pm.discover()
    assert "napari-clipsam" in {m.name for m in pm.iter_manifests()}
    assert any(w.command == "napari-clipsam.widget" for w in pm.iter_widgets())
    samples = {(plugin, s.key) for plugin, contribs in pm.iter_sample_data() for s in contribs}
    assert {("napari-clipsam", key) for key in SAMPLES} <= samples
    assert "napari-clipsam.write_pseudo_labels" in {w.command for w in pm.iter_compatible_writers(["labels"])}
    viewer = ViewerModel()
    viewer.open_sample("napari-clipsam", "metal")
    assert [layer.name for layer in viewer.layers] == ["metal plate", "metal plate ground truth"]


@pytest.mark.parametrize("key", SAMPLES)
def test_sample_data_deterministic(manifest, key):
    sample = next(s for s in manifest.contributions.sample_data if s.key == key)
    first, second = sample.open(), sample.open()
    assert [t for _, _, t in first] == ["image", "labels"]
    for (a, meta, _), (b, _, _) in zip(first, second):
        np.testing.assert_array_equal(a, b)
    image, meta, _ = first[0]
    assert image.shape[:2] == (320, 320)
    assert image.dtype == (np.uint16 if key == "gray16" else np.uint8)
    assert first[1][0].any()  # the ground truth marks a defect


def test_writer_exports_a_labels_layer(tmp_path):
    import napari
    from napari.layers import Labels

    from napari_clipsam.export import read_label_tiff

    data = np.zeros((2, 32, 40), np.int32)
    data[0, 4:10, 5:15] = 1
    data[1, 20:30, 20:30] = 2
    layer = Labels(data, name="scan", features={"index": [1, 2], "class": ["scratch", "stain"]},
                   metadata={"clipsam_classes": ["defect", "scratch", "stain"], "clipsam": {"mode": "test"}})
    written = napari.save_layers(str(tmp_path / "dataset"), [layer], plugin="napari-clipsam")
    assert written
    labels, classes = read_label_tiff(tmp_path / "dataset/labels/scan_f001.tif")
    np.testing.assert_array_equal(labels, data[1])
    assert classes == {2: "stain"}
    prov = json.loads((tmp_path / "dataset/provenance/scan_f000.json").read_text())
    assert "test" in json.dumps(prov)
    names = json.loads((tmp_path / "dataset/coco/annotations.json").read_text())["categories"]
    assert [c["name"] for c in names] == ["defect", "scratch", "stain"]
