"""Issue 22 item 6: multi-frame TIFFs per frame, the split line without failed images, threshold flags,
``--config`` inline JSON and the nearest-name hint, plain ``--help`` text, the CLIP size on the engine line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import run_cli, write_tiny_clip, write_tiny_sam

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_gaps")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", ("metal",), n_train_good=0, n_test_good=2, n_test_defect=1,
                                  image_size=64, seed=0, defects=("stain",))
    args = ["--clip-model", f"local-dir:{clip}", "--device", "cpu", "--backend", "torch",
            "--sam-model", f"local-dir:{sam}", "--no-progress"]
    return {"root": root, "data": data, "args": args}


@pytest.mark.slow  # about 40 s: the tiny CLIP at the preset's 336 px
def test_multi_frame_tiff_per_frame_split_without_failures_flags_and_engine_line(setup, tmp_path):
    import imageio.v3 as iio

    inp = tmp_path / "in"
    inp.mkdir()
    frames = [iio.imread(p) for p in sorted((setup["data"] / "metal" / "test").glob("*/*.png"))[:3]]
    tifffile.imwrite(inp / "stack.tif", np.stack(frames))
    (inp / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code, stdout, err = run_cli("segment", inp, "--object", "metal", "--out", out, "--tau-prompt", "0.3",
                                "--tau-mask", "0.6", "--alpha", "0.25", "--config", '{"mutual_radii": [1]}',
                                *setup["args"])
    assert code == 1, err  # the broken image
    assert "4 images (3 of them frames of 1 multi-frame file(s)): 3 done" in stdout
    import re

    train, val = map(int, re.search(r"split: (\d+) train, (\d+) val", stdout).groups())
    assert train + val == 3  # the three frames, not the failed image
    for f in range(3):
        assert (out / "masks" / f"stack_f{f:03d}_mask.png").is_file()
        prov = json.loads((out / "provenance" / f"stack_f{f:03d}.json").read_text())["exports"][-1]["engine"]
        assert prov["frame"] == f
        t = prov["thresholds"]
        assert (t["prompt_threshold"], t["mask_threshold"], t["alpha"]) == (0.3, 0.6, 0.25)
    # the tiny CLIP is made for 56 px and runs at the preset's 336: the engine line says both
    assert "at 336 px (its native size 56 px" in err


def test_config_errors_and_plain_help(setup, tmp_path):
    code, _, err = run_cli("segment", setup["data"], "--object", "metal", "--out", tmp_path / "o",
                           "--config", '{"prompt_treshold": 0.2}', *setup["args"])
    assert code == 2 and "Did you mean 'prompt_threshold'?" in err and "known fields" not in err
    code, _, err = run_cli("segment", setup["data"], "--object", "metal", "--out", tmp_path / "o",
                           "--config", "{not json", *setup["args"])
    assert code == 2 and "--config JSON is not valid JSON" in err
    for sub in (["weights"], ["weights", "download"], ["segment"], ["eval"], ["train"]):
        code, out, _ = run_cli(*sub, "--help")
        assert code == 0 and "``" not in out, sub


def test_a_changed_split_keeps_written_images_where_they_are_and_overwrite_moves_them(setup, tmp_path):
    """`segment` again with another --val-fraction on a folder it wrote: no image ends up in both YOLO splits
    (a note says which stayed); --overwrite re-splits, leaving no copy in the old split; the split line counts
    what is on disk."""
    import re

    inp = tmp_path / "in"
    inp.mkdir()
    for p in sorted((setup["data"] / "metal" / "test").glob("*/*.png")):
        shutil.copy(p, inp / f"{p.parent.name}_{p.name}")
    out = tmp_path / "out"
    fast = [*setup["args"], "--image-size", "56", "--no-mutual", "--formats", "yolo", "coco"]

    def on_disk(split):
        return sorted(p.stem for p in (out / "yolo" / "labels" / split).glob("*.txt"))

    def split_line(stdout):
        return tuple(map(int, re.search(r"split: (\d+) train, (\d+) val", stdout).groups()))

    code, stdout, err = run_cli("segment", inp, "--object", "metal", "--out", out, "--val-fraction", "0", *fast)
    assert code == 0, err
    assert len(on_disk("train")) == 3 and on_disk("val") == [] and split_line(stdout) == (3, 0)
    # ClipSAM's own warning (the tiny CLIP's 4 blocks: feature layers fitted) is a note, not Python's source dump
    assert "note: The engine's config was changed to fit its models: feature_layers" in err
    assert "UserWarning" not in err and "engine = cls(" not in err
    code, stdout, err = run_cli("segment", inp, "--object", "metal", "--out", out, "--val-fraction", "1", *fast)
    assert code == 0, err
    assert "3 image(s) keep the train/val split they were written in" in err and "--overwrite" in err
    assert len(on_disk("train")) == 3 and on_disk("val") == [] and split_line(stdout) == (3, 0)
    code, stdout, err = run_cli("segment", inp, "--object", "metal", "--out", out, "--val-fraction", "1",
                                "--overwrite", *fast)
    assert code == 0, err
    assert on_disk("train") == [] and len(on_disk("val")) == 3 and split_line(stdout) == (0, 3)
    assert not any((out / "yolo" / "images" / "train").glob("*")) and not any((out / "coco" / "images" /
                                                                                "train").glob("*"))
