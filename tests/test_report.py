"""``napari-clipsam report``: a labels folder written by the CLI's ``segment`` rendered to one offline HTML page."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import write_tiny_clip, write_tiny_sam


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stems: list[str] = []
        self.srcs: list[str] = []
        self.rows: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-stem" in attrs:
            self.stems.append(attrs["data-stem"])
            self.rows.append(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if tag in ("link", "script") and key in attrs:
                self.srcs.append(attrs[key])


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "napari_clipsam", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", ("metal",), n_train_good=0, n_test_good=2, n_test_defect=2,
                                  image_size=64, seed=0)
    (root / "in").mkdir()
    for i, src in enumerate(sorted((data / "metal" / "test").glob("*/*.png"))[:4]):
        shutil.copy(src, root / "in" / f"img{i}.png")
    env = {**os.environ, "NAPARI_CLIPSAM_CACHE": str(root / "cache")}
    done = _cli("segment", root / "in", "--object", "metal", "--out", root / "out", "--clip-model",
                f"local-dir:{clip}", "--image-size", "56", "--device", "cpu", "--backend", "torch", "--sam-model",
                f"local-dir:{sam}", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    return root, env


def _set_scores(out: Path, scores: dict[str, float]) -> None:
    for stem, score in scores.items():
        path = out / "provenance" / f"{stem}.json"
        prov = json.loads(path.read_text())
        prov["exports"][-1]["image_score"] = score
        path.write_text(json.dumps(prov))


def test_report_lists_every_image_once_worst_first_all_embedded(labels):
    root, env = labels
    out = root / "out"
    scores = {"img0": 0.2, "img1": 0.9, "img2": 0.5, "img3": 0.7}
    _set_scores(out, scores)
    (out / "clipsam_manifest.json").write_text(json.dumps({
        "format": "napari-clipsam/qa-manifest", "version": 1, "input_dir": str(root / "in"),
        "images": {"img1.png": {"verdict": "rejected", "stem": "img1"}}}))
    try:
        done = _cli("report", out, "--out", root / "r.html", env=env)
    finally:
        (out / "clipsam_manifest.json").unlink()
    assert done.returncode == 0, done.stderr
    html = (root / "r.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    assert sorted(page.stems) == sorted(scores) and len(page.stems) == len(set(page.stems))
    assert page.stems == sorted(scores, key=scores.get, reverse=True)  # highest score first
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)  # nothing external
    assert len(page.srcs) == 2 * len(scores) + 1  # thumbnail + overlay per image, and the histogram
    assert page.rows[0]["class"] == "rejected" and page.rows[1]["class"] == "unreviewed"
    assert "0.9000" in html


def test_report_refuses_a_folder_that_is_not_a_labels_folder(labels, tmp_path):
    _, env = labels
    (tmp_path / "some.png").write_bytes(b"x")
    done = _cli("report", tmp_path, "--out", tmp_path / "r.html", env=env)
    assert done.returncode == 2
    assert "not a labels folder" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.html").exists()
    root, _ = labels
    done = _cli("report", root / "out", "--out", tmp_path, env=env)  # --out a folder: name the file to write
    assert done.returncode == 2 and "is a folder; give the HTML file to write" in done.stderr


def test_report_reads_a_coco_only_export_and_says_when_it_has_no_masks_to_read(tmp_path):
    """A folder exported as COCO only still shows each image's objects and overlay (pycocotools decodes them);
    a YOLO-only folder says that its masks cannot be read instead of reporting "no objects"."""
    import numpy as np

    from napari_clipsam.export import export_pseudo_labels
    from napari_clipsam.report import collect_rows, render_report

    instances = np.zeros((48, 64), np.int32)
    instances[5:15, 5:20] = 1
    instances[30:40, 40:60] = 2
    image = np.full((48, 64, 3), 128, np.uint8)
    for fmt in ("coco", "yolo"):
        export_pseudo_labels(tmp_path / fmt, "plate", instances, formats=[fmt], dataset_images=True, image=image,
                             provenance={"image_score": 0.7})
    (row,) = collect_rows(tmp_path / "coco")
    assert row.n_objects == 2 and row.overlay and not row.problem
    (row,) = collect_rows(tmp_path / "yolo")
    assert row.n_objects is None and "no masks" in row.problem
    page = render_report(tmp_path / "yolo")
    assert "have no masks the report can read" in page and "no objects" not in page
