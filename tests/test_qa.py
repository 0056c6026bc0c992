"""Folder QA: walking, verdicts, the manifest (resume, CSV, atomic, corrupt, foreign), export stems, prefetch."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from pycocotools import mask as rle

from napari_clipsam.errors import Cancelled
from napari_clipsam.export import ExportError, dataset_split
from napari_clipsam.export.mvtec import read_mvtec_mask
from napari_clipsam.export.stems import export_stems
from napari_clipsam.export.tiff import read_label_tiff
from napari_clipsam.io.folders import natural_key
from napari_clipsam.review import MANIFEST_NAME, Prefetcher, QASession, Verdict
from napari_clipsam.review.manifest import read_csv

OBJECT = "metal plate"


def write_images(folder: Path, names, size=(48, 56)) -> list[Path]:
    """Small distinct RGB images (content depends on the name) at ``folder/name``."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        pixels = (rng.random((*size, 3)) * 255).astype(np.uint8)
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(path, pixels)
        else:
            iio.imwrite(path, pixels)
        paths.append(path)
    return paths


def labels(shape=(48, 56)) -> np.ndarray:
    inst = np.zeros(shape, np.int32)
    inst[5:15, 5:20] = 1
    inst[30:40, 30:50] = 4
    return inst


@pytest.fixture
def folders(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write_images(src, ["img10.png", "img2.png", "img1.png", "img3.png"])
    return src, out


def manifest_json(session: QASession) -> dict:
    return json.loads(session.manifest_path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- walking


def test_walk_clamps_at_both_ends(folders):
    s = QASession(*folders)
    assert len(s) == 4 and s.index == 0
    assert s.previous() == s.images[0] and s.index == 0
    assert s.next() == s.images[1]
    for _ in range(10):
        last = s.next()
    assert last == s.images[-1] and s.index == 3 and s.current == s.images[3]
    assert s.previous() == s.images[2]
    assert s.goto(0) == s.images[0]


def test_natural_sort_filters_and_hidden_files(tmp_path):
    write_images(tmp_path, ["b10.png", "b9.JPG", "B1.png", "a.tiff", ".hidden.png", "sub/c.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    s = QASession(tmp_path, tmp_path / "out")
    assert [p.name for p in s.images] == ["a.tiff", "B1.png", "b9.JPG", "b10.png"]
    assert natural_key("img2.png") < natural_key("img10.png") < natural_key("img11.png")
    assert natural_key("a/z.png") < natural_key("b.png")
    only_png = QASession(tmp_path, tmp_path / "out2", extensions=["png"])
    assert [p.name for p in only_png.images] == ["B1.png", "b10.png"]


def test_goto_by_path_and_bad_positions(folders):
    s = QASession(*folders)
    assert s.goto("img3.png").name == "img3.png" and s.index == 2
    assert s.goto(s.images[3]) == s.images[3]
    s.index = 1
    assert s.current.name == "img2.png"
    with pytest.raises(IndexError, match="out of range"):
        s.goto(4)
    with pytest.raises(ValueError, match="not one of the 4 images"):
        s.goto("nope.png")


def test_missing_or_empty_input_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        QASession(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "empty" / "sub", ["x.png"])
    looked_for = r"\.png, \.jpg, \.jpeg, \.bmp, \.tif, \.tiff"
    with pytest.raises(ValueError, match=r"No images found.*recursive=True.*" + looked_for):
        QASession(tmp_path / "empty", tmp_path / "out")
    assert len(QASession(tmp_path / "empty", tmp_path / "out", recursive=True)) == 1


def test_read_image_is_raw(tmp_path):
    deep = (np.arange(48 * 56, dtype=np.uint16).reshape(48, 56) * 20)
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    s = QASession(tmp_path, tmp_path / "out")
    image = s.read_image()
    assert image.dtype == np.uint16 and np.array_equal(image, deep)


# ---------------------------------------------------------------- verdicts and the manifest


def test_accept_exports_and_records(folders):
    src, out = folders
    s = QASession(src, out)
    s.goto(1)
    report = s.accept(labels(), {4: "scratch"}, classes=["defect", "scratch"], provenance={"mode": "test"},
                      edited=True)
    assert s.index == 1, "accept must not move on"
    assert report.written and all(p.exists() for p in report.written)
    assert (out / "masks" / "img2_mask.png").exists()
    assert (out / "labels" / "img2.tif").exists() and (out / "yolo" / "labels" / dataset_split("img2") / "img2.txt").exists()
    assert (out / "coco" / "annotations.json").exists()
    provenance = json.loads((out / "provenance" / "img2.json").read_text())
    assert provenance["exports"][-1]["engine"] == {"mode": "test", "edited": True}
    assert s.verdict(1) is Verdict.ACCEPTED and s.verdict("img2.png") == "accepted"
    entry = manifest_json(s)["images"]["img2.png"]
    assert entry["verdict"] == "accepted" and entry["n_instances"] == 2 and entry["edited"] is True
    assert entry["stem"] == "img2" and entry["time"].endswith("+00:00")
    assert sorted(entry["outputs"]) == sorted(p.relative_to(out).as_posix() for p in report.written)
    assert all((out / o).exists() for o in entry["outputs"])
    data = manifest_json(s)
    assert data["format"] == "napari-clipsam/qa-manifest" and data["version"] == 1
    assert data["input_dir"] == src.resolve().as_posix()


def test_accept_invalid_labels_records_nothing(folders):
    s = QASession(*folders)
    with pytest.raises(ExportError):
        s.accept(np.zeros((3, 4, 5), np.int32))
    assert s.verdict() is None and not s.manifest_path.exists()


def test_reject_and_skip_recorded_files_left(folders):
    src, out = folders
    s = QASession(src, out)
    s.accept(labels(), formats=["mvtec"])
    s.reject("glare, not a defect")
    assert (out / "masks" / "img1_mask.png").exists(), "reject leaves earlier files on disk"
    entry = manifest_json(s)["images"]["img1.png"]
    assert entry["verdict"] == "rejected" and entry["note"] == "glare, not a defect"
    # the review always keeps a label TIFF (what going back to the image shows), beside the formats asked for
    assert sorted(entry["outputs"]) == ["labels/img1.json", "labels/img1.tif", "masks/img1_mask.png",
                                        "provenance/img1.json"] and entry["n_instances"] is None
    s.next()
    s.skip()
    assert s.verdict(1) is Verdict.SKIPPED and s.verdict(2) is None
    assert s.summary() == {"accepted": 0, "rejected": 1, "skipped": 1, "undecided": 2, "total": 4}


def test_resume_in_a_new_session(folders):
    s = QASession(*folders)
    s.accept(labels())
    s.next()
    s.reject()
    s.goto(3)
    s.skip()
    again = QASession(*folders)
    assert again.first_undecided() == 2
    assert again.resume().name == "img3.png" and again.index == 2
    assert [again.verdict(i) for i in range(4)] == [Verdict.ACCEPTED, Verdict.REJECTED, None, Verdict.SKIPPED]
    again.accept(labels())
    assert again.first_undecided() is None
    assert QASession(*folders).resume() == again.images[-1]


def test_csv_mirrors_json(folders):
    s = QASession(*folders)
    s.accept(labels(), edited=True)
    s.next()
    s.reject('odd, "quoted"; note')
    rows = read_csv(s.manifest_path.with_name("clipsam_manifest.csv"))
    images = manifest_json(s)["images"]
    assert [r["image"] for r in rows] == list(images)
    for row in rows:
        entry = images[row["image"]]
        assert row["verdict"] == entry["verdict"] and row["time"] == entry["time"]
        assert row["stem"] == entry["stem"] and row["note"] == entry["note"]
        assert row["outputs"] == ";".join(entry["outputs"])
        assert row["n_instances"] == ("" if entry["n_instances"] is None else str(entry["n_instances"]))
        assert row["edited"] == str(entry["edited"]).lower()


def test_manifest_of_another_input_folder_raises(folders, tmp_path):
    src, out = folders
    QASession(src, out).skip()
    other = tmp_path / "other"
    write_images(other, ["x.png"])
    with pytest.raises(ValueError, match="another input folder.*Choose another output folder"):
        QASession(other, out)


def test_corrupt_manifest_is_moved_aside(folders, caplog):
    src, out = folders
    out.mkdir()
    garbage = b'{"format": "napari-clipsam/qa-manifest", "version": 1, "images": {'
    (out / MANIFEST_NAME).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="napari_clipsam.review.manifest"):
        s = QASession(src, out)
    moved = list(out.glob(MANIFEST_NAME + ".corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage and s.manifest_recovered == moved[0]
    assert "moved to" in caplog.text
    assert s.summary()["undecided"] == 4
    s.skip()
    assert moved[0].read_bytes() == garbage
    assert manifest_json(s)["images"]["img1.png"]["verdict"] == "skipped"


def test_manifest_with_bad_entry_is_moved_aside_too(folders):
    src, out = folders
    QASession(src, out).skip()
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["images"]["img1.png"]["verdict"] = "maybe"
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    s = QASession(src, out)
    assert s.manifest_recovered is not None and s.verdict(0) is None


def test_newer_manifest_version_is_refused_not_moved(folders):
    src, out = folders
    QASession(src, out).skip()
    data = json.loads((out / MANIFEST_NAME).read_text())
    data["version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="newer napari-clipsam"):
        QASession(src, out)
    assert not list(out.glob("*.corrupt-*"))


def test_manifest_write_is_atomic(folders, monkeypatch):
    src, out = folders
    s = QASession(src, out)
    s.accept(labels(), formats=["mvtec"])
    before = {p.name: p.read_bytes() for p in (s.manifest_path, s.manifest_csv_path)}

    def failing_replace(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ExportError, match="disk full"):
        s.reject("never saved")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (s.manifest_path, s.manifest_csv_path)} == before
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != ".clipsam.lock") == sorted(before)
    assert s.verdict() is Verdict.ACCEPTED, "the in-memory state follows the disk"
    assert QASession(src, out).verdict(0) is Verdict.ACCEPTED


# ---------------------------------------------------------------- export stems


def test_colliding_stems_are_made_unique(tmp_path):
    src = tmp_path / "in"
    write_images(src, ["a.png", "a.jpg", "sub/a.png", "sub__a.bmp", "b.png", "c.PNG", "c.png"])
    s = QASession(src, tmp_path / "out", recursive=True)
    stems = {s.key(i): s.stem(i) for i in range(len(s))}
    assert stems["b.png"] == "b"
    assert stems["a.png"] == "a_png" and stems["a.jpg"] == "a_jpg"
    assert {stems["sub/a.png"], stems["sub__a.bmp"]} == {"sub__a_png", "sub__a_bmp"}
    assert {stems["c.PNG"], stems["c.png"]} == {"c_png", "c_png_2"}
    assert len({v.casefold() for v in stems.values()}) == len(stems)
    for i in range(len(s)):
        s.goto(i)
        s.accept(labels(), formats=["mvtec"])
    assert len(list((tmp_path / "out" / "masks").glob("*_mask.png"))) == len(s)


def test_recorded_stems_are_kept_and_reserved():
    assert export_stems(["a.png"]) == {"a.png": "a"}
    # a.png was accepted as "a"; a.jpg arrives later: a.png keeps its stem
    assert export_stems(["a.jpg", "a.png"], {"a.png": "a"}) == {"a.jpg": "a_jpg", "a.png": "a"}
    # gone.png left the folder but still owns "x"
    assert export_stems(["x.png"], {"gone.png": "x"}) == {"x.png": "x_png"}
    assert export_stems(["we:ird .png"]) == {"we:ird .png": "we_ird"}


def test_recursive_session_ignores_its_output_folder(tmp_path):
    write_images(tmp_path, ["a.png", "sub/b.png"])
    s = QASession(tmp_path, tmp_path / "labels", recursive=True)
    s.accept(labels())
    assert (tmp_path / "labels" / "masks" / "a_mask.png").exists()
    assert [s2.name for s2 in QASession(tmp_path, tmp_path / "labels", recursive=True).images] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="separate output folder"):
        QASession(tmp_path, tmp_path, recursive=True)


# ---------------------------------------------------------------- with the engine


def encoder_calls(engine) -> tuple[int, int]:
    """How many images SAM's and CLIP's image encoders have run on (the caches' misses)."""
    info = engine.cache_info()
    return info.sam_embeddings.misses, info.clip_features.misses


def test_session_with_engine_end_to_end(folders, engine):
    s = QASession(*folders)
    result = engine.segment(s.read_image(), OBJECT)
    s.accept(result.instances, provenance=result.provenance)
    entry = s.entry()
    assert entry.n_instances == len(np.unique(result.instances[result.instances > 0]))
    assert all((s.output_dir / o).exists() for o in entry.outputs)
    assert {"masks", "labels", "coco", "yolo", "provenance"} <= {o.split("/")[0] for o in entry.outputs}
    # every format holds the accepted instances: read back with each format's reader / pycocotools
    out = s.output_dir
    np.testing.assert_array_equal(read_mvtec_mask(out / "masks" / "img1_mask.png"), result.mask)
    labelled, _ = read_label_tiff(out / "labels" / "img1.tif")
    pairs = np.unique(np.stack([labelled.ravel(), result.instances.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(labelled)) == len(np.unique(result.instances))  # same partition
    coco = json.loads((out / "coco" / "annotations.json").read_text(encoding="utf-8"))
    assert len(coco["annotations"]) == entry.n_instances
    for ann in coco["annotations"]:
        np.testing.assert_array_equal(rle.decode(ann["segmentation"]).astype(bool), labelled == ann["instance_id"])
    yolo_lines = (out / "yolo" / "labels" / "train" / "img1.txt").read_text(encoding="utf-8").splitlines()
    assert len(yolo_lines) >= entry.n_instances > 0


def test_prefetch_warms_the_caches(folders, engine):
    s = QASession(*folders)
    pre = Prefetcher(engine, OBJECT)
    start = encoder_calls(engine)
    pre.request(lambda: s.read_image(1), key=1)
    result = pre.result(1, timeout=120)
    warm = encoder_calls(engine)
    assert warm[0] > start[0] and warm[1] > start[1], "the prefetch ran the encoders"
    again = engine.segment(s.read_image(1), OBJECT)
    assert encoder_calls(engine) == warm, "no encoder runs for a prefetched image"
    assert np.array_equal(again.instances, result.instances)
    pre.request(lambda: s.read_image(1), key=1)  # same key, already done: nothing runs
    assert pre.result(1) is result and pre.result(2) is None


def gated_loader(image, started: threading.Event, gate: threading.Event):
    def load():
        started.set()
        assert gate.wait(30), "test gate never opened"
        return image
    return load


def test_prefetch_cancel(engine, rgb):
    pre = Prefetcher(engine, OBJECT)
    started, gate = threading.Event(), threading.Event()
    pre.request(gated_loader(rgb, started, gate), key="a")
    assert started.wait(30)
    before = encoder_calls(engine)
    pre.cancel(wait=False)
    gate.set()
    pre.cancel()  # joins
    assert pre.done("a")
    with pytest.raises(Cancelled):
        pre.result("a")
    assert encoder_calls(engine) == before, "a cancelled prefetch runs no encoder"
    pre.request(lambda: rgb, key="a")  # a cancelled job is redone on request
    assert pre.result("a", timeout=120) is not None


def test_new_request_cancels_the_previous(engine, rgb):
    other = rgb[::-1].copy()
    pre = Prefetcher(engine, OBJECT)
    started, gate = threading.Event(), threading.Event()
    before = encoder_calls(engine)
    pre.request(gated_loader(rgb, started, gate), key="a")
    assert started.wait(30)
    pre.request(lambda: other, key="b")
    assert pre.key == "b" and pre.result("a") is None
    gate.set()
    assert pre.result("b", timeout=120) is not None
    assert encoder_calls(engine) == (before[0] + 1, before[1] + 1), "only b was encoded"


def test_prefetch_errors_are_reraised(engine):
    pre = Prefetcher(engine, OBJECT)

    def broken():
        raise FileNotFoundError("image vanished")

    pre.request(broken, key=0)
    with pytest.raises(FileNotFoundError, match="vanished"):
        pre.result(0, timeout=30)
    pre.request(np.zeros((2, 2)), key=1)  # too small: the engine's ValueError
    with pytest.raises(ValueError, match="smaller than the minimum"):
        pre.result(1, timeout=30)


def test_prefetch_timeout(engine, rgb):
    pre = Prefetcher(engine, OBJECT)
    started, gate = threading.Event(), threading.Event()
    pre.request(gated_loader(rgb, started, gate), key="a")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        pre.result("a", timeout=0.05)
    assert time.monotonic() - t0 < 5
    gate.set()
    pre.cancel()
