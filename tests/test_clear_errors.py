"""Issue 18 items 5 and 6: hand-edited COCO files that would mix images are refused (through the real command
line), and the last unclear errors are clear ones: complex images, rough maps of the wrong shape, UMCI arguments,
a review manifest that is a folder, and an export interrupted by Ctrl+C leaves no hidden temporary file."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_clipsam.clip.umci import UMCI
from napari_clipsam.errors import InvalidInputError, PathKindError
from napari_clipsam.io.images import normalise_image
from napari_clipsam.testing import run_cli, tiny_engine, write_tiny_clip, write_tiny_sam

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
RNG = np.random.default_rng(18)


# ------------------------------------------------------------------------------- COCO files edited by hand
@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A folder labelled by ``segment --formats coco`` (3 images, at least one annotation), and its command."""
    root = tmp_path_factory.mktemp("coco_edits")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    images = root / "in"
    images.mkdir()
    for i in range(3):
        image = np.full((48, 48, 3), 90, np.uint8)
        image[10 + 8 * i:22 + 8 * i, 12:30] = 250  # a bright defect, somewhere else in each image
        iio.imwrite(images / f"img{i}.png", image)
    args = ["segment", str(images), "--object", "metal", "--formats", "coco", "--no-progress",
            "--clip-model", f"local-dir:{clip}", "--image-size", "56", "--device", "cpu", "--backend", "torch",
            "--sam-model", f"local-dir:{sam}", "--config", str(root / "config.json")]
    (root / "config.json").write_text(json.dumps({"prompt_threshold": 0.0, "mask_threshold": 0.0}))
    out = root / "out"
    code, _, err = run_cli(*args, "--out", out)
    assert code == 0, err
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 3 and len(coco["annotations"]) >= 2
    return {"out": out, "args": args}


def _duplicate_image_id(coco):
    coco["images"][2]["id"] = coco["images"][0]["id"]
    names = [re.escape(repr(coco["images"][i]["file_name"])) for i in (0, 2)]
    return rf"images\[0\] \({names[0]}\) and images\[2\] \({names[1]}\) both have id {coco['images'][0]['id']}"


def _duplicate_annotation_id(coco):
    coco["annotations"][1]["id"] = coco["annotations"][0]["id"]
    return rf"annotations\[0\] and annotations\[1\] both have id {coco['annotations'][0]['id']}"


def _annotation_of_no_image(coco):
    coco["annotations"][0]["image_id"] = 999
    return rf"annotations\[0\] \(id {coco['annotations'][0]['id']}\) has image_id 999, which no entry of 'images' has"


@pytest.mark.parametrize("edit", [_duplicate_image_id, _duplicate_annotation_id, _annotation_of_no_image])
def test_a_coco_file_edited_into_clashing_ids_is_refused_by_segment(labelled, tmp_path, edit):
    out = tmp_path / "out"
    shutil.copytree(labelled["out"], out)
    path = out / "coco" / "annotations.json"
    coco = json.loads(path.read_text())
    named = edit(coco)
    path.write_text(json.dumps(coco, indent=1))
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "napari_clipsam", *labelled["args"], "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in lines[0] and "nothing was changed" in lines[0]
    assert re.search(named, lines[0]), lines[0]
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------ complex images
def test_complex_images_are_refused_with_what_to_do():
    image = (RNG.random((16, 16)) + 1j * RNG.random((16, 16))).astype(np.complex64)
    with pytest.raises(InvalidInputError, match=r"complex values \(dtype complex64\).*np\.abs\(image\)"):
        normalise_image(image)
    normalise_image(np.abs(image))  # what the message says to do works


# --------------------------------------------------------------------------------- rough map of a wrong shape
def test_a_rough_map_of_the_wrong_shape_is_named():
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.mmr.merge import fuse_maps

    engine = tiny_engine(seed=0)
    image = (RNG.random((48, 56, 3)) * 255).astype(np.uint8)
    result = engine.segment(image, "plate")
    for rough in (np.zeros((24, 28), np.float32), np.zeros((48, 56, 3), np.float32)):
        named = re.escape(f"rough_map has shape {rough.shape}")
        with pytest.raises(InvalidInputError, match=named + r".*\(48, 56\)"):
            engine.refine(dataclasses.replace(result, rough_map=rough), points=[[10, 10]])
        with pytest.raises(InvalidInputError, match=named):
            engine.refine(dataclasses.replace(result, rough_map=rough))
    with pytest.raises(InvalidInputError, match=r"component maps have shape \(2, 8, 8\).*\(K, 16, 16\)"):
        fuse_maps(np.zeros((16, 16)), np.zeros((2, 8, 8), np.float32), ClipSAMConfig())
    with pytest.raises(InvalidInputError, match=r"rough map has shape \(16, 16\).*\(8, 8\)"):
        fuse_maps(np.zeros((16, 16)), np.zeros((0, 16, 16), np.float32), ClipSAMConfig(), np.ones((8, 8), bool))
    assert engine.refine(result, points=[[10, 10]]).rough_map.shape == (48, 56)  # the right shape still works


# --------------------------------------------------------------------------------------- UMCI arguments
@pytest.mark.parametrize("changes,accepted", [
    ({"heads": 0}, "heads must be a whole number from 1"),
    ({"heads": 2.5}, "heads must be a whole number from 1"),
    ({"dim": 0}, "dim must be a whole number from 1"),
    ({"layers": ()}, "layers must be a non-empty list"),
    ({"layers": (1, 1)}, "distinct CLIP block numbers"),
    ({"kernels": (0,)}, "pooling sizes from 1"),
    ({"temperature": 0.0}, "temperature must be a finite number above 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number above 0"),
])
def test_umci_refuses_arguments_it_cannot_be_built_with(changes, accepted):
    args = {"in_dim": 64, "dim": 32, "layers": (1, 2), "heads": 4, "kernels": (2, 4), "temperature": 0.01, **changes}
    name, value = next(iter(changes.items()))
    with pytest.raises(InvalidInputError, match=re.escape(f"UMCI({name}={value!r}) is not accepted: ") + ".*"
                       + re.escape(accepted)):
        UMCI(**args)
    fixed = {"heads": 8, "dim": 32, "layers": [1, 2], "kernels": (), "temperature": 1.0}[name]
    assert UMCI(**{**args, name: fixed}).num_parameters() > 0


# ---------------------------------------------------------------------------- a manifest that is a folder
def test_a_review_manifest_that_is_a_folder_is_named(tmp_path):
    from napari_clipsam.review.manifest import MANIFEST_NAME
    from napari_clipsam.review.session import QASession

    images, out = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    iio.imwrite(images / "a.png", np.full((16, 16), 90, np.uint8))
    (out / MANIFEST_NAME).mkdir(parents=True)
    with pytest.raises(PathKindError, match=rf"manifest {out / MANIFEST_NAME} is a folder.*Rename or move that "
                                            "folder away.*choose another output folder"):
        QASession(images, out)
    (out / MANIFEST_NAME).rmdir()
    QASession(images, out)  # the review opens once the folder is moved away


# ------------------------------------------------------------------------ Ctrl+C in the middle of an export
def test_ctrl_c_while_an_export_is_written_leaves_no_hidden_file(tmp_path):
    """A real SIGINT, delivered while a staged file is being flushed to disk (the slow part of an export, where
    ``segment``'s Ctrl+C lands most often), removes the temporary files: nothing waits for the next run. Run in a
    fresh process, as a user's Ctrl+C meets it (no signal handler left by another test's library)."""
    from napari_clipsam.export import export_pseudo_labels

    inst = np.zeros((16, 16), np.int32)
    inst[2:6, 2:6] = 1
    export_pseudo_labels(tmp_path, "a", inst, formats=["mvtec", "tiff", "coco"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = f"""
import signal, numpy as np
from napari_clipsam.export import export_pseudo_labels
from napari_clipsam.io import atomic
real_sync, calls = atomic._sync, []
def sync_then_ctrl_c(f):  # fault injection: Ctrl+C once the second file of the batch is on disk, still hidden
    calls.append(f.name)
    real_sync(f)
    if len(calls) == 2:
        signal.raise_signal(signal.SIGINT)
atomic._sync = sync_then_ctrl_c
inst = np.zeros((16, 16), np.int32)
inst[2:6, 2:6] = 2
try:
    export_pseudo_labels({str(tmp_path)!r}, "a", inst, formats=["mvtec", "tiff", "coco"], overwrite=True)
except KeyboardInterrupt:
    print("interrupted after", len(calls))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "interrupted after 2" in run.stdout, run.stdout + run.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing half-written, and no hidden .tmp left next to the outputs
