"""The ``napari-clipsam`` command line, end to end, with tiny checkpoints written to disk (the same loading code as
real weights) and a tiny synthetic dataset. Subcommands run in-process through ``main``; one test runs the
installed console script."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from napari_clipsam._version import __version__
from napari_clipsam.export import dataset_split
from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import TINY_CLIP_CFG, run_cli, write_tiny_clip, write_tiny_sam
from napari_clipsam.weights.registry import SAM_CHECKPOINTS
from napari_clipsam.weights.umci_checkpoint import read_umci

TIMES: dict[str, list[float]] = {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args) -> tuple[int, str, str]:
    """Run ``napari-clipsam ARGS`` in-process; returns (exit code, stdout, stderr)."""
    t0 = time.perf_counter()
    code, out, err = run_cli(*args)
    name = " ".join(str(a) for a in args[:2]) if args and args[0] == "weights" else str(args[0] if args else "-")
    if not name.startswith("-"):
        TIMES.setdefault(name, []).append(time.perf_counter() - t0)
    return code, out, err


@pytest.fixture(scope="module", autouse=True)
def _report_times(request):
    """Print the in-process run time of every subcommand after this module's tests."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not TIMES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("CLI run times (in-process): " + "; ".join(
            f"{k} {len(v)}x mean {sum(v) / len(v):.2f} s max {max(v):.2f} s" for k, v in sorted(TIMES.items())))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny CLIP/SAM folders, a second CLIP (other weights), a synthetic dataset and a UMCI trained by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_CLIPSAM_CACHE", str(root / "cache"))
        clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
        other_clip = write_tiny_clip(root / "clip_other", seed=1)
        data = make_synthetic_dataset(root / "data", ("metal", "fabric"), n_train_good=0, n_test_good=3,
                                      n_test_defect=1, image_size=64, seed=0)
        s = {"root": root, "clip": clip, "sam": sam, "other_clip": other_clip, "data": data}
        s["clip_args"] = ["--clip-model", f"local-dir:{clip}", "--image-size", "56", "--device", "cpu",
                          "--backend", "torch"]  # OpenVINO's CLI path: tests/test_backends.py
        s["engine_args"] = [*s["clip_args"], "--sam-model", f"local-dir:{sam}"]
        s["umci"] = root / "umci.pt"
        s["train"] = cli("train", "--dataset-root", data, "--feature-layers", 1, 2, 3, 4, "--epochs", 2,
                         "--batch-size", 4, "--out", s["umci"], *s["clip_args"])
    return s


# ------------------------------------------------------------------------------------------------ basics
def test_version_help_and_usage_errors():
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"napari-clipsam {__version__}"
    code, out, _ = cli("--help")
    assert code == 0
    for sub in ("segment", "train", "eval", "weights", "bench"):
        assert sub in out
    code, out, _ = cli("bench", "--help")
    assert code == 0 and "--random-weights" in out
    code, _, err = cli()
    assert code == 2 and "required" in err
    code, _, err = cli("segment", "x.png")  # --object and --out are required
    assert code == 2 and "--object" in err


def test_console_script_and_module_entry_points():
    script = Path(sys.executable).with_name("napari-clipsam")
    assert script.is_file(), f"console script not installed at {script} (pip install -e .)"
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.strip() == f"napari-clipsam {__version__}"
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "segment" in helped.stdout and "weights" in helped.stdout
    module = subprocess.run([sys.executable, "-m", "napari_clipsam", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert module.returncode == 0 and module.stdout.strip() == f"napari-clipsam {__version__}"


# ------------------------------------------------------------------------------------------------ train
def test_train_writes_a_checkpoint_every_epoch(setup):
    code, out, err = setup["train"]
    assert code == 0, err
    assert "2 epoch(s) on 14 images" in out and "checkpoint" in out
    assert "epoch 2/2" in err and "loss=" in err  # tqdm bar with the running loss
    ckpt = read_umci(setup["umci"])
    assert ckpt["epochs"] == 2 and len(ckpt["epoch_losses"]) == 2 and ckpt["image_size"] == 56
    assert ckpt["hparams"]["layers"] == [1, 2, 3, 4] and ckpt["clip_model"].startswith("local-dir:config-")
    assert ckpt["training_data"]["categories"] == ["fabric", "metal"]


def test_train_resume_continues_and_matches_an_uninterrupted_run(setup, tmp_path):
    base = ["--dataset-root", setup["data"], "--feature-layers", 1, 2, 3, 4, "--batch-size", 4, "--seed", 7,
            "--no-progress", *setup["clip_args"]]
    assert cli("train", *base, "--epochs", 3, "--out", tmp_path / "full.pt")[0] == 0
    assert cli("train", *base, "--epochs", 1, "--out", tmp_path / "part.pt")[0] == 0
    # an existing checkpoint is never replaced silently
    code, _, err = cli("train", *base, "--epochs", 3, "--out", tmp_path / "part.pt")
    assert code == 2 and "already exists" in err and "--resume" in err and "Traceback" not in err
    code, _, err = cli("train", *base, "--epochs", 0, "--lr", "-1", "--out", tmp_path / "zero.pt")
    assert code == 2 and "--epochs 0 (must be at least 1); --lr -1 (must be greater than 0)" in err, err
    assert "--batch-size" not in err and not (tmp_path / "zero.pt").exists()
    code, out, err = cli("train", *base, "--epochs", 3, "--out", tmp_path / "part.pt", "--resume")
    assert code == 0, err
    assert "resumed after epoch 1" in out
    full, part = read_umci(tmp_path / "full.pt"), read_umci(tmp_path / "part.pt")
    assert part["training_state"]["epoch"] == 3 and part["epoch_losses"] == full["epoch_losses"]
    assert full["state_dict"].keys() == part["state_dict"].keys()
    assert all(torch.equal(full["state_dict"][k], part["state_dict"][k]) for k in full["state_dict"])
    # nothing left to do: said so, the checkpoint is kept
    code, out, err = cli("train", *base, "--epochs", 2, "--out", tmp_path / "part.pt", "--resume")
    assert code == 0 and "nothing new written" in out and "nothing to do" in err
    assert read_umci(tmp_path / "part.pt")["epochs"] == 3
    # --overwrite starts over
    code, out, _ = cli("train", *base, "--epochs", 1, "--out", tmp_path / "part.pt", "--overwrite")
    assert code == 0 and read_umci(tmp_path / "part.pt")["epochs"] == 1


def test_train_refuses_a_checkpoint_of_another_clip(setup, tmp_path):
    path = tmp_path / "umci.pt"
    shutil.copy(setup["umci"], path)
    code, _, err = cli("train", "--dataset-root", setup["data"], "--epochs", 3, "--out", path, "--resume",
                       "--clip-model", f"local-dir:{setup['other_clip']}", "--device", "cpu", "--backend", "torch",
                       "--no-progress")
    assert code == 2 and "does not fit this engine" in err and "trained on CLIP" in err
    assert "Traceback" not in err
    assert read_umci(path)["epochs"] == 2  # untouched


def test_bad_inputs_exit_2_with_a_message_naming_the_problem(setup, tmp_path):
    missing = tmp_path / "no_such_dataset"
    code, _, err = cli("train", "--dataset-root", missing, "--out", tmp_path / "u.pt", *setup["clip_args"])
    assert code == 2 and str(missing) in err and "does not exist" in err and "Traceback" not in err
    code, _, err = cli("train", "--dataset-root", setup["data"], "--out", tmp_path / "u.pt", "--resume",
                       *setup["clip_args"])
    assert code == 2 and "Nothing to resume" in err
    code, _, err = cli("eval", "--dataset-root", setup["data"], "--categories", "bottle", *setup["engine_args"])
    assert code == 2 and "'bottle' not found" in err
    absent = tmp_path / "absent.pt"
    code, _, err = cli("eval", "--dataset-root", setup["data"], "--umci", absent, *setup["engine_args"])
    assert code == 2 and str(absent) in err and "does not exist" in err
    no_clip = tmp_path / "no_clip"
    code, _, err = cli("segment", setup["data"] / "metal" / "test" / "good", "--object", "metal", "--out",
                       tmp_path / "o", "--clip-model", f"local-dir:{no_clip}", "--device", "cpu")
    assert code == 2 and str(no_clip) in err and "open_clip_config.json" in err
    code, _, err = cli("segment", tmp_path / "nothing_here.png", "--object", "metal", "--out", tmp_path / "o",
                       *setup["engine_args"])
    assert code == 2 and "nothing_here.png does not exist" in err
    code, _, err = cli("segment", setup["data"], "--object", "metal", "--out", tmp_path / "o", "--formats", "png",
                       *setup["engine_args"])
    assert code == 2 and "Unknown export format(s) png" in err
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"mask_treshold": 0.9}))
    code, _, err = cli("segment", setup["data"] / "metal" / "test" / "good", "--object", "metal", "--out",
                       tmp_path / "o", "--config", bad_config, *setup["engine_args"])
    assert code == 2 and "unknown ClipSAMConfig field 'mask_treshold'. Did you mean 'mask_threshold'?" in err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


# ------------------------------------------------------------------------------------------------ eval
def _in_unit_or_missing(v) -> bool:
    return v is None or v == "" or (isinstance(v, float) and (math.isnan(v) or 0.0 <= v <= 1.0))


def test_eval_prints_a_table_and_writes_csv_and_json(setup, tmp_path):
    csv_path, json_path = tmp_path / "res" / "eval.csv", tmp_path / "res" / "eval.json"
    code, out, err = cli("eval", "--dataset-root", setup["data"], "--umci", setup["umci"], "--limit", 4,
                         "--csv", csv_path, "--json", json_path, *setup["engine_args"])
    assert code == 0, err
    assert "rough map: UMCI (trained)" in out and "pAUROC" in out and "PRO-pub" in out
    assert "final" in out and "mean" in out
    assert "img" in err  # progress bar
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["category"] for r in rows] == ["fabric", "metal", "mean"]
    assert rows[0]["images"] == "4" and rows[-1]["images"] == "8"
    metrics = [k for k in rows[0] if k.startswith(("rough_", "final_"))]
    assert len(metrics) == 16
    for r in rows:
        for k in metrics:
            v = float(r[k])
            assert math.isnan(v) or 0.0 <= v <= 1.0, (k, v)
    data = json.loads(json_path.read_text())  # strict JSON: undefined metrics are null
    assert set(data) == {"categories", "mean", "settings", "engine"}
    assert data["engine"]["mode"] == "umci" and data["settings"]["limit"] == 4
    for cat in (*data["categories"].values(), data["mean"]):
        for m in ("rough", "final"):
            assert len(cat[m]) == 8 and all(_in_unit_or_missing(v) for v in cat[m].values())
    assert data["categories"]["fabric"]["rough"]["pixel_auroc"] == pytest.approx(float(rows[0]["rough_pixel_auroc"]))
    # a second run takes every map from the on-disk map cache and gives exactly the same figures
    again_json = tmp_path / "res" / "again.json"
    code, out, err = cli("eval", "--dataset-root", setup["data"], "--umci", setup["umci"], "--limit", 4,
                         "--json", again_json, *setup["engine_args"])
    assert code == 0 and "8 from the map cache" in out, err
    again = json.loads(again_json.read_text())
    assert again["categories"] == data["categories"] and again["settings"]["cached_images"] == 8


def test_eval_rough_only(setup, tmp_path):
    code, out, err = cli("eval", "--dataset-root", setup["data"], "--umci", setup["umci"], "--rough-only",
                         "--categories", "metal", "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv",
                         "--no-progress", *setup["engine_args"])
    assert code == 0, err
    assert "rough" in out and "final" not in out.split("rough map:")[1]
    data = json.loads((tmp_path / "r.json").read_text())
    assert list(data["categories"]) == ["metal"] and data["mean"]["final"] is None
    assert data["categories"]["metal"]["images"] == 7
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert rows[0]["final_pixel_auroc"] == "" and rows[0]["rough_pixel_auroc"] != ""


# ------------------------------------------------------------------------------------------------ segment
def _images(setup, folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((setup["data"] / "metal" / "test").glob("*/*.png"))[:n]
    paths = []
    for i, src in enumerate(sources):
        paths.append(folder / f"img{i}.png")
        shutil.copy(src, paths[-1])
    return paths


def test_segment_folder_resume_overwrite_and_a_corrupt_image(setup, tmp_path):
    images = _images(setup, tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"this is not a png")
    out_dir = tmp_path / "out"
    args = ("segment", tmp_path / "in", "--object", "metal", "--out", out_dir, "--umci", setup["umci"],
            *setup["engine_args"])
    code, out, err = cli(*args)
    assert code == 1, err  # one image failed
    assert "3 done, 0 skipped" in out and "1 failed" in out and "broken.png" in out
    assert "pseudo-label(s) (unreviewed), 0 verified by a person" in out  # segment's labels are all pseudo
    assert "failed: " in err and "broken.png" in err and "Traceback" not in err
    assert "img" in err  # tqdm bar
    for p in images:
        stem = p.stem
        assert (out_dir / "masks" / f"{stem}_mask.png").is_file()
        assert (out_dir / "labels" / f"{stem}.tif").is_file() and (out_dir / "labels" / f"{stem}.json").is_file()
        assert (out_dir / "yolo" / "labels" / dataset_split(stem) / f"{stem}.txt").is_file()
        # a dataset the trainers read as it is: the image beside its labels, COCO file_name pointing at it
        assert (out_dir / "yolo" / "images" / dataset_split(stem) / p.name).read_bytes() == p.read_bytes()
        assert (out_dir / "coco" / "images" / dataset_split(stem) / p.name).read_bytes() == p.read_bytes()
        prov = json.loads((out_dir / "provenance" / f"{stem}.json").read_text())
        assert prov["exports"][-1]["engine"]["mode"] == "umci"
        assert prov["exports"][-1]["engine"]["object_name"] == "metal"
    coco = json.loads((out_dir / "coco" / "annotations.json").read_text())
    assert sorted(im["stem"] for im in coco["images"]) == ["img0", "img1", "img2"]
    assert not (out_dir / "masks" / "broken_mask.png").exists()
    mask = out_dir / "masks" / "img0_mask.png"
    before = mask.stat()

    # rerun: everything done is skipped (the broken image is tried again and fails again)
    code, out, _ = cli(*args, "--no-progress")
    assert code == 1 and "0 done, 3 skipped" in out and "1 failed" in out
    assert mask.stat().st_ino == before.st_ino and mask.stat().st_mtime_ns == before.st_mtime_ns

    # a missing output is redone, the others stay skipped
    (out_dir / "yolo" / "labels" / dataset_split("img1") / "img1.txt").unlink()
    code, out, _ = cli("segment", *images, "--object", "metal", "--out", out_dir, "--umci", setup["umci"],
                       "--formats", "mvtec,tiff,coco,yolo", "--no-progress", *setup["engine_args"])
    assert code == 0 and "1 done, 2 skipped" in out and (out_dir / "yolo" / "labels" / dataset_split("img1") / "img1.txt").is_file()

    # skipping images labelled for another object is said, with what to do
    code, out, err = cli("segment", *images, "--object", "bracket", "--out", out_dir, "--umci", setup["umci"],
                         "--no-progress", *setup["engine_args"])
    assert code == 0 and "0 done, 3 skipped" in out
    assert "3 skipped image(s) were labelled for another object (metal), not 'bracket'; add --overwrite" in err

    # --overwrite rewrites them
    code, out, _ = cli("segment", *images, "--object", "metal", "--out", out_dir, "--umci", setup["umci"],
                       "--overwrite", "--no-progress", *setup["engine_args"])
    assert code == 0 and "3 done, 0 skipped" in out
    assert mask.stat().st_ino != before.st_ino
    assert iio.imread(mask).shape == iio.imread(images[0]).shape[:2]


def test_segment_glob_formats_and_clip_weights_file(setup, tmp_path):
    """A named open_clip architecture with a local weights file (--clip-model NAME --clip-weights FILE),
    a glob input and a subset of formats; without --umci the training-free fallback is announced."""
    import open_clip

    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    (cfg_dir / "clipsam-tiny-cli.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_dir / "clipsam-tiny-cli.json")
    weights = setup["clip"] / "open_clip_pytorch_model.bin"
    _images(setup, tmp_path / "in" / "sub", n=2)
    out_dir = tmp_path / "out"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"mask_threshold": 0.9, "alpha": 0.25}))
    code, out, err = cli("segment", str(tmp_path / "in" / "**" / "*.png"), "--object", "metal plate", "--out",
                         out_dir, "--formats", "mvtec", "coco", "--clip-model", "clipsam-tiny-cli", "--clip-weights",
                         weights, "--image-size", 56, "--sam-model", f"local-dir:{setup['sam']}", "--device", "cpu",
                         "--config", config, "--backend", "torch", "--no-progress")
    assert code == 0, err
    assert "2 done" in out and "training-free" in err
    assert sorted(p.name for p in out_dir.iterdir() if p.name != ".clipsam.lock") == ["coco", "masks", "provenance"]
    prov = json.loads((out_dir / "provenance" / "sub__img0.json").read_text())["exports"][-1]
    assert prov["formats"] == ["mvtec", "coco"]
    engine = prov["engine"]
    assert engine["mode"] == "training-free" and engine["clip_model"] == "clipsam-tiny-cli"
    assert engine["thresholds"]["mask_threshold"] == 0.9 and engine["thresholds"]["alpha"] == 0.25
    import hashlib

    assert engine["clip_weights"] == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()


def test_segment_input_names_are_stable_and_distinct(tmp_path):
    from napari_clipsam.cli.segment_inputs import collect_images, stems_for

    for folder in ("a", "a/sub", "b"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "x.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    exts = [".png"]
    by_folder = stems_for(collect_images([str(tmp_path / "a")], exts, recursive=True))
    by_glob = stems_for(collect_images([str(tmp_path / "a" / "**" / "*.png")], exts, recursive=False))
    assert by_folder == by_glob
    assert sorted(by_folder.values()) == ["sub__x", "x"]
    assert list(stems_for(collect_images([str(tmp_path / "a")], exts, recursive=False)).values()) == ["x"]
    # the same file name in two input folders: two different stems, so no output overwrites another
    two = stems_for(collect_images([str(tmp_path / "a"), str(tmp_path / "b" / "x.png")], exts, recursive=False))
    assert len(two) == 2 and len(set(two.values())) == 2
    with pytest.raises(FileNotFoundError, match="No image file matches"):
        collect_images([str(tmp_path / "*.tif")], exts, recursive=False)
    with pytest.raises(ValueError, match="add --recursive"):
        collect_images([str(tmp_path)], exts, recursive=False)


# ------------------------------------------------------------------------------------------------ weights
def test_weights_list_and_verify(tmp_path):
    from napari_clipsam.weights.registry import cache_dir

    code, out, _ = cli("weights", "list")
    assert str(cache_dir()) in out
    assert code == 0
    for name, spec in SAM_CHECKPOINTS.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert "absent" in line and spec.filename in line
    assert next(ln for ln in out.splitlines() if ln.startswith("clip")).count("absent") == 1
    code, out, _ = cli("weights", "verify")
    assert code == 0 and "No SAM file" in out

    bogus = b"not the real SAM weights"
    target = cache_dir() / "sam"
    target.mkdir(parents=True)
    (target / SAM_CHECKPOINTS["vit_b"].filename).write_bytes(bogus)
    code, out, _ = cli("weights", "list")
    assert "wrong size" in next(ln for ln in out.splitlines() if ln.startswith("vit_b"))
    code, out, err = cli("weights", "verify")
    assert code == 1 and "vit_b: FAILED" in err and "SHA-256" in err and SAM_CHECKPOINTS["vit_b"].sha256 in err
    copied = tmp_path / "copied.pth"
    copied.write_bytes(bogus)
    code, out, err = cli("weights", "verify", "vit_h", "--file", copied)
    assert code == 1 and "vit_h: FAILED" in err and str(copied) in err and "not the official SAM vit_h file" in err
    assert "Delete it" not in err and "left as it is" in err and copied.read_bytes() == bogus  # the person's file
    code, _, err = cli("weights", "verify", "vit_x")
    assert code == 2 and "Unknown SAM weights vit_x" in err
    code, _, err = cli("weights", "verify", "clip")
    assert code == 2 and "checks SAM files" in err and "each time it is loaded" in err
    code, _, err = cli("weights", "verify", "clip", "--traceback")  # after a nested subcommand too
    assert code == 2 and "Traceback (most recent call last)" in err and "error: `weights verify`" in err
    code, _, err = cli("weights", "verify", "vit_b", "--file", tmp_path / "missing.pth")
    assert code == 2 and "missing.pth does not exist" in err

    # CLIP weights fetched by open_clip into the Hugging Face cache layout count as present
    snap = cache_dir() / "clip" / "models--timm--vit_large_patch14_clip_336.openai" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    code, out, _ = cli("weights", "list")
    clip_line = next(ln for ln in out.splitlines() if ln.startswith("clip"))
    assert "present" in clip_line and str(snap / "open_clip_pytorch_model.bin") in clip_line


def test_weights_download_failures_leave_nothing_behind(tmp_path):
    from napari_clipsam.weights.registry import cache_dir

    folder = cache_dir() / "sam"
    missing = tmp_path / "mirror" / "sam_vit_b_01ec64.pth"
    code, _, err = cli("weights", "download", "vit_b", "--url", missing.as_uri(), "--no-progress")
    assert code == 2 and "Could not download SAM vit_b" in err and "Traceback" not in err
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"x" * 1000)
    code, _, err = cli("weights", "download", "vit_b", "--url", wrong.as_uri(), "--no-progress")
    assert code == 2 and "SHA-256" in err and "discarded" in err
    assert not folder.exists() or [p for p in folder.iterdir() if p.suffix != ".lock"] == []  # no partial file
    code, _, err = cli("weights", "download", "vit_b", "vit_h", "--url", wrong.as_uri())
    assert code == 2 and "exactly one" in err


def test_globs_leave_out_the_output_folder(tmp_path):
    from napari_clipsam.cli.segment_inputs import collect_images

    (tmp_path / "out" / "masks").mkdir(parents=True)
    for p in (tmp_path / "a.png", tmp_path / "out" / "masks" / "a_mask.png"):
        iio.imwrite(p, np.zeros((8, 8), np.uint8))
    found = collect_images([str(tmp_path / "**" / "*.png")], [".png"], False, exclude=(tmp_path / "out").resolve())
    assert [p.name for p in found] == ["a.png"]
