"""``segment FOLDER``'s mode: folder mutual scoring by default for 5+ images, ``--no-mutual`` and small runs per
image, the mode in the summary and the provenance, resume keeping earlier outputs; tiny models on disk."""
from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from napari_clipsam.cli.segment_groups import folder_groups
from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import run_cli, write_tiny_clip, write_tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_mutual")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", ("metal",), n_train_good=0, n_test_good=4, n_test_defect=1,
                                  image_size=64, seed=0, defects=("stain", "hole"))
    images = root / "in"
    images.mkdir()
    for i, p in enumerate(sorted((data / "metal" / "test").glob("*/*.png"))):
        shutil.copy(p, images / f"img{i}.png")
    args = ["--clip-model", f"local-dir:{clip}", "--image-size", "56", "--device", "cpu", "--backend", "torch",
            "--sam-model", f"local-dir:{sam}", "--no-progress", "--formats", "mvtec"]
    return {"root": root, "images": images, "args": args}


def _prov(out, stem):
    return json.loads((out / "provenance" / f"{stem}.json").read_text())["exports"][-1]["engine"]


def test_default_is_mutual_for_five_images_and_no_mutual_is_per_image(setup, tmp_path):
    n = len(list(setup["images"].iterdir()))
    assert n == 6
    out = tmp_path / "mutual"
    code, stdout, err = run_cli("segment", setup["images"], "--object", "metal", "--out", out, *setup["args"])
    assert code == 0, err
    assert "mode: mutual (6 images" in stdout
    # no UMCI: the note says what makes the rough map here (the mutual map), not "the training-free fallback"
    assert "rough map is folder mutual scoring's" in err and "training-free fallback" not in err
    prov = _prov(out, "img0")
    assert prov["mode"] == "mutual" and prov["folder"]["size"] == 6 and 0.0 <= prov["image_score"] <= 1.0
    assert prov["scoring"]["mode"] == "mutual" and prov["scoring"]["group"]["size"] == 6
    # the summary lists the highest image scores first, as their provenance files have them
    scores = {f"img{i}": _prov(out, f"img{i}")["image_score"] for i in range(n)}
    listed = next(line for line in stdout.splitlines() if "highest image scores" in line).split(": ", 1)[1]
    assert [part.split()[0] for part in listed.split(", ")] == sorted(scores, key=lambda k: -scores[k])
    assert f"napari-clipsam report {out}" in stdout

    # the exported masks are the engine's folder masks
    from napari_clipsam.cli import build_parser
    from napari_clipsam.cli.common import build_engine, engine_config
    from napari_clipsam.io.images import read_image

    a = build_parser().parse_args(["segment", "x", "--object", "metal", "--out", "o", *map(str, setup["args"])])
    engine = build_engine(engine_config(a), progress=False)
    files = [setup["images"] / f"img{i}.png" for i in range(n)]
    results = engine.segment_folder([read_image(f) for f in files], "metal")
    for f, r in zip(files, results):
        assert np.array_equal(iio.imread(out / "masks" / f"{f.stem}_mask.png") > 0, r.instances > 0)

    # resume: an image whose outputs are gone is scored against the whole folder again, the others are kept
    mask = out / "masks" / "img3_mask.png"
    before = mask.read_bytes()
    kept = (out / "masks" / "img0_mask.png").stat().st_mtime_ns
    mask.unlink()
    (out / "provenance" / "img3.json").unlink()
    code, stdout, err = run_cli("segment", setup["images"], "--object", "metal", "--out", out, *setup["args"])
    assert code == 0 and "1 done, 5 skipped" in stdout, err
    assert mask.read_bytes() == before and (out / "masks" / "img0_mask.png").stat().st_mtime_ns == kept
    # ... and the summary still ranks the whole folder: the skipped images by the scores their provenance keeps
    listed = next(line for line in stdout.splitlines() if "highest image scores" in line).split(": ", 1)[1]
    assert [part.split()[0] for part in listed.split(", ")] == sorted(scores, key=lambda k: -scores[k])

    per = tmp_path / "per"
    code, stdout, err = run_cli("segment", setup["images"], "--object", "metal", "--out", per, "--no-mutual",
                                *setup["args"])
    assert code == 0, err
    assert "mode: per-image (--no-mutual)" in stdout
    assert "the rough map is the training-free fallback" in err
    prov = _prov(per, "img0")
    assert prov["mode"] == "training-free" and prov["scoring"] == {"mode": "per-image", "why": "--no-mutual"}


def test_fewer_than_five_images_are_segmented_alone_with_a_note(setup, tmp_path):
    files = sorted(setup["images"].iterdir())[:4]
    code, stdout, err = run_cli("segment", *files, "--object", "metal", "--out", tmp_path / "o", *setup["args"])
    assert code == 0, err
    assert "mode: per-image (mutual scoring needs at least 5 images of one object, this run has 4" in err
    assert _prov(tmp_path / "o", "img0")["scoring"]["mode"] == "per-image"


def test_groups_are_interleaved_balanced_and_large_enough():
    for n in range(5, 120):
        for size in (10, 17, 50):
            groups = folder_groups(list(range(n)), size)
            assert sorted(i for g in groups for i in g) == list(range(n))
            assert all(5 <= len(g) <= size for g in groups) or (len(groups) == 1 and len(groups[0]) == n)
            assert max(map(len, groups)) - min(map(len, groups)) <= 1
    assert folder_groups(list(range(11)), 10) == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9]]
    code, _, err = run_cli("segment", "x.png", "--object", "m", "--out", "o", "--mutual-group-size", "9")
    assert code == 2 and "--mutual-group-size must be at least 10" in err
