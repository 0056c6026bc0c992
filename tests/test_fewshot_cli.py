"""``segment --normal DIR`` and ``eval --shots K`` end to end, with tiny checkpoints on disk and a synthetic dataset."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import run_cli, write_tiny_clip, write_tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


cli = run_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot_cli")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", ("metal", "pcb"), n_train_good=4, n_test_good=2, n_test_defect=1,
                                  image_size=64, seed=0, defects=("stain", "hole"))
    config = root / "config.json"
    config.write_text(json.dumps({"feature_layers": [1, 2, 3, 4]}))  # the tiny CLIP has 4 blocks
    args = ["--config", config, "--clip-model", f"local-dir:{clip}", "--image-size", "56", "--device", "cpu",
            "--sam-model", f"local-dir:{sam}", "--no-progress",
            "--backend", "torch"]  # the OpenVINO few-shot path: tests/test_backends_fewshot.py
    return {"root": root, "data": data, "args": args}


def test_segment_with_normal_references_records_them(setup, tmp_path):
    normal = tmp_path / "normal"
    normal.mkdir()
    for p in sorted((setup["data"] / "metal" / "train" / "good").glob("*.png"))[:3]:
        shutil.copy(p, normal / p.name)
    inputs = setup["data"] / "metal" / "test" / "stain"
    code, out, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "out", "--normal", normal,
                         "--fewshot-weight", "0.7", "--formats", "mvtec", *setup["args"])
    assert code == 0, err
    assert "few-shot: 3 normal reference(s)" in err and "weight 0.7" in err
    prov = json.loads((tmp_path / "out" / "provenance" / "000.json").read_text())["exports"][-1]["engine"]
    assert prov["fewshot"]["count"] == 3 and prov["fewshot"]["weight"] == 0.7
    assert len(prov["fewshot"]["references"]) == 3 and "few-shot (3 normal references" in prov["rough_map"]
    # the same references again: their bank is read from the disk cache, and the note says so
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "again", "--normal", normal,
                       "--fewshot-weight", "0.7", "--formats", "mvtec", *setup["args"])
    assert code == 0 and "read from the cache" in err and "cached for next time" not in err, err
    # without --normal: no references in the provenance
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "plain", "--formats", "mvtec",
                       *setup["args"])
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "provenance" / "000.json").read_text())["exports"][-1]["engine"]
    assert plain["fewshot"] is None


def test_segment_normal_errors_name_the_folder(setup, tmp_path):
    inputs = setup["data"] / "metal" / "test" / "stain"
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "o", "--normal",
                       tmp_path / "missing", *setup["args"])
    assert code == 2 and "--normal" in err and "not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "o", "--normal",
                       tmp_path / "empty", *setup["args"])
    assert code == 2 and "holds no images" in err
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "o", "--normal",
                       setup["data"] / "metal" / "train" / "good", "--fewshot-weight", "2", *setup["args"])
    assert code == 2 and "fewshot_weight" in err
    code, _, err = cli("segment", inputs, "--object", "metal", "--out", tmp_path / "o", "--fewshot-weight", "0.3",
                       "--extensions", ",", *setup["args"])  # stops at the empty --extensions, after the note
    assert code == 2 and "--fewshot-weight 0.3 has no effect without --normal" in err


@pytest.mark.slow  # several evaluations (~8 s); `segment` with references stays in the default run
def test_eval_shots_adds_mean_and_std_rows_to_the_zero_shot_table(setup, tmp_path):
    code, out, err = cli("eval", "--dataset-root", setup["data"], "--rough-only", "--shots", 1, 2, "--seeds", 2,
                         "--csv", tmp_path / "e.csv", "--json", tmp_path / "e.json", "--no-cache", *setup["args"])
    assert code == 0, err
    table = out.split("few-shot rows:")[1]
    lines = table.splitlines()
    metal = next(i for i, line in enumerate(lines) if line.startswith("metal"))
    assert lines[metal].split()[1] == "rough"  # the zero-shot row first, then the few-shot rows under it
    assert lines[metal + 1].split()[:2] == ["rough", "1-shot"] and lines[metal + 2].split()[:2] == ["rough", "2-shot"]
    assert "±" in lines[metal + 1]
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data["few_shot"]) == {"1", "2"}
    two = data["few_shot"]["2"]
    assert two["seeds"] == [0, 1] and len(two["references"]["0"]["pcb"]) == 2
    assert two["references"]["0"] != two["references"]["1"]  # each seed draws its own references
    assert 0.0 <= two["categories"]["metal"]["rough"]["pixel_auroc"] <= 1.0
    assert two["categories"]["metal"]["rough_std"]["pixel_auroc"] >= 0.0
    rows = list(csv.reader((tmp_path / "e.csv").open()))
    blank = rows.index([])
    assert rows[blank + 1][:3] == ["shots", "category", "images"]
    assert {r[0] for r in rows[blank + 2:]} == {"1", "2"}
    # asking for more shots than the category has normal training images is a clear error
    code, _, err = cli("eval", "--dataset-root", setup["data"], "--rough-only", "--shots", 9, "--no-cache",
                       *setup["args"])
    assert code == 2 and "only 4 normal training image" in err
    # the same with --ray (which runs --shots too, tests/test_ray.py), before any Ray starts
    code, _, err = cli("eval", "--dataset-root", setup["data"], "--rough-only", "--shots", 9, "--no-cache",
                       *setup["args"], "--ray")
    assert code == 2 and "only 4 normal training image" in err
