"""ExportRequest: a frozen, keyword-only value whose fields are checked when it is made (nothing written)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_clipsam.export import ExportError, ExportRequest, export_pseudo_labels, write_export


def _inst() -> np.ndarray:
    inst = np.zeros((16, 20), np.int32)
    inst[2:6, 3:9] = 4
    return inst


def test_request_is_frozen_keyword_only_and_derives_classes(tmp_path):
    req = ExportRequest(out_dir=tmp_path, stem="a", instances=_inst(), instance_classes={4: "dent"})
    assert req.formats == ("mvtec", "tiff", "coco", "yolo") and req.ids == (4,)
    assert req.class_list == ["dent"] and req.id_class == {4: "dent"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.stem = "b"
    with pytest.raises(TypeError):
        ExportRequest(tmp_path, "a", _inst())  # keyword fields only
    assert "instances" not in repr(req)  # the arrays stay out of the repr


@pytest.mark.parametrize("field, value, words", [
    ("stem", "a/b", "cannot be a file name"),
    ("formats", ["png"], "unknown export format"),
    ("coco_segmentation", "mask", "coco_segmentation must be one of"),
    ("val_fraction", 1.5, "val_fraction must be in [0, 1]"),
    ("split_seed", 0.5, "split_seed must be an integer"),
    ("yolo_min_piece_area", 0, "yolo_min_piece_area must be a whole number"),
    ("overwrite", "yes", "overwrite must be True or False"),
    ("image_file", 3, "image_file must be a file name"),
    ("out_dir", None, "out_dir must be a folder path"),
    ("instances", np.zeros((2, 3, 4), np.int32), "instances must be a 2-D"),
])
def test_bad_fields_are_refused_when_the_request_is_made(tmp_path, field, value, words):
    fields = {"out_dir": tmp_path / "out", "stem": "a", "instances": _inst(), field: value}
    with pytest.raises(ExportError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ExportRequest(**fields)
    assert not (tmp_path / "out").exists()


def test_write_export_and_the_shorthand_write_the_same_files(tmp_path):
    a = write_export(ExportRequest(out_dir=tmp_path / "a", stem="x", instances=_inst(), formats=["tiff", "yolo"]))
    b = export_pseudo_labels(tmp_path / "b", "x", _inst(), formats=["tiff", "yolo"])
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in a.written)
    assert names == sorted(p.relative_to(tmp_path / "b").as_posix() for p in b.written)
    for name in names:
        if not name.startswith("provenance/"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(ExportError, match="takes an ExportRequest"):
        write_export({"stem": "x"})
