"""Bad settings, arguments and files give one clear error naming what was wrong (issue 9, "clear errors"):
ClipSAMConfig refuses bad fields at construction, the CLI prints user errors as one line with exit code 2 before
loading any model while bugs keep their traceback (exit 1), and damaged or misplaced files name themselves."""
from __future__ import annotations

import dataclasses

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_clipsam.testing import run_cli
from napari_clipsam.cli.common import run_guarded
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.errors import (ClipSAMUserError, ConfigError, ExportError, InputFileError, PathKindError,
                                   WeightsUnavailableError)
from napari_clipsam.export import MAX_STEM_BYTES, export_pseudo_labels, safe_stem

# ------------------------------------------------------------------------------------------ ClipSAMConfig
BAD_FIELDS = [
    # types
    ("prompt_threshold", "0.5", "a number from 0 to 1"),
    ("feature_layers", 3, "a list of whole numbers"),
    ("feature_layers", "6,12", "a list of whole numbers"),
    ("max_components", 1.5, "a whole number from 1"),
    ("negative_points", "no", "True or False"),
    ("image_size", True, "a whole number"),
    ("levels", "box", "distinct levels"),
    ("decoder_batch_size", 2.5, "None (automatic)"),
    ("umci_weights", 3, "None, a non-empty file path"),
    # ranges
    ("alpha", 7, "from 0 to 1"),
    ("alpha", math.nan, "from 0 to 1"),
    ("box_growth", math.inf, "from 0 to 10"),
    ("temperature", 0, "above 0"),
    ("umci_heads", 0, "from 1 to 64"),
    ("opening_size", 10000, "from 0 to 99"),
    ("image_size", 8, "from 14 to 2048"),
    ("cache_bytes", -1, "from 0"),
    ("feature_layers", (6, 6), "without repeats"),
    ("levels", ("box", "mask"), "'point', 'box', 'box+point'"),
    ("sam_model", "vit_x", "'vit_b', 'vit_l', 'vit_h'"),
    ("dtype", "float16", "'float32' or 'bfloat16'"),
    # templates and states with bad {} fields
    ("templates", ("a photo of a {} {x}.",), "exactly one '{}'"),
    ("templates", ("a photo of a {0}.",), "exactly one '{}'"),
    ("templates", ("a photo of a {",), "exactly one '{}'"),
    ("templates", ("a photo.",), "exactly one '{}'"),
    ("templates", (), "a non-empty list"),
    ("abnormal_states", ("damaged {}", "{} {}"), "exactly one '{}'"),
    # devices
    ("device", "gpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("device", "cuda:x", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
]


@pytest.mark.parametrize("field,value,accepted", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_config_refuses_bad_fields_at_construction(field, value, accepted):
    with pytest.raises(ConfigError) as info:
        ClipSAMConfig(**{field: value})
    msg = str(info.value)
    if field in ("templates", "abnormal_states") and value:  # names the entry: ClipSAMConfig.templates[0] = '...'
        i = next(i for i, v in enumerate(value) if v.count("{") != 1 or "{}" not in v or v.count("}") != 1)
        assert f"ClipSAMConfig.{field}[{i}] = {value[i]!r}" in msg and accepted in msg
    else:
        assert f"ClipSAMConfig.{field} = {value!r}" in msg and accepted in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, ClipSAMUserError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_config_refuses_cuda_without_a_gpu():
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="no CUDA GPU.*'cpu' or 'auto'"):
            ClipSAMConfig(device=device)


def test_config_accepts_and_normalises_harmless_spellings():
    cfg = ClipSAMConfig(feature_layers=[1, 2], alpha=1, prompt_threshold=np.float32(0.25), max_components=np.int64(3),
                        umci_weights=Path("a/b.pt"), templates=["a {{braced}} photo of a {}."], device="cpu")
    assert cfg.feature_layers == (1, 2) and cfg.alpha == 1.0 and isinstance(cfg.alpha, float)
    assert cfg.max_components == 3 and type(cfg.max_components) is int and cfg.umci_weights == "a/b.pt"
    assert cfg.templates == ("a {{braced}} photo of a {}.",)
    assert cfg.replace(alpha=0.25).alpha == 0.25
    with pytest.raises(ConfigError, match="alpha"):
        cfg.replace(alpha=2)
    with pytest.raises(dataclasses.FrozenInstanceError):  # settings change only by a new, checked config
        cfg.alpha = 3
    with pytest.raises(ConfigError, match="Unknown ClipSAMConfig fields \\['alfa'\\]"):
        ClipSAMConfig.from_dict({"alfa": 1})
    assert ClipSAMConfig.from_dict(ClipSAMConfig().to_dict()) == ClipSAMConfig()


# ------------------------------------------------------------------------------------------ CLI
cli = run_cli


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if any model is loaded: user errors must be reported before that."""
    from napari_clipsam.weights import loaders

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the user error was reported")

    monkeypatch.setattr(loaders, "load_clip", forbidden)
    monkeypatch.setattr(loaders, "load_sam", forbidden)


def test_cli_user_errors_are_one_line_exit_2_before_any_model(tmp_path, no_model_loading):
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    import imageio.v3 as iio

    iio.imwrite(img, np.zeros((16, 16), np.uint8))
    cfg_dir = tmp_path / "cfg.json"
    cfg_dir.mkdir()
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"alpha": 7}))
    template = tmp_path / "tpl.json"
    template.write_text(json.dumps({"templates": ["a photo of {x}"]}))
    seg = ["segment", img, "--out", tmp_path / "out", "--object"]
    bad_sam = tmp_path / "badsam"
    bad_sam.mkdir()
    (bad_sam / "sam_config.json").write_text("{")
    (bad_sam / "sam.pth").write_bytes(b"x")
    cases = {
        "device": ([*seg, "plate", "--device", "gpu"], "ClipSAMConfig.device = 'gpu'"),
        "config field": ([*seg, "plate", "--config", bad_json], "ClipSAMConfig.alpha = 7"),
        "template": ([*seg, "plate", "--config", template], "ClipSAMConfig.templates"),
        "config is a folder": ([*seg, "plate", "--config", cfg_dir], "is a folder"),
        "image size": ([*seg, "plate", "--image-size", "5"], "ClipSAMConfig.image_size = 5"),
        "surrogate": ([*seg, "pl\udcfate"], "object_name"),
        "missing input": (["segment", tmp_path / "nope.png", "--out", tmp_path / "o", "--object", "x"],
                          "does not exist"),
        "umci folder": ([*seg, "plate", "--umci", tmp_path], "is a folder"),
        "local SAM missing": ([*seg, "plate", "--sam-model", f"local-dir:{tmp_path / 'nosam'}"], "does not exist"),
        "local SAM bad config": ([*seg, "plate", "--sam-model", f"local-dir:{bad_sam}"], "is not valid JSON"),
        "SAM checkpoint folder": ([*seg, "plate", "--sam-checkpoint", tmp_path], "is a folder, not a file"),
        "out under a file": (["segment", img, "--out", img / "labels", "--object", "x"],
                             f"{img} is a file, not a folder"),
    }
    for name, (args, expected) in cases.items():
        code, out, err = cli(*args)
        assert code == 2, (name, code, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, (name, err)
        assert "Traceback" not in err
    for where in (["--traceback", *seg], [*seg[:-1], "--traceback", "--object"]):  # before or after the command
        code, _, err = cli(*where, "plate", "--umci", tmp_path)
        assert code == 2 and "Traceback (most recent call last)" in err, err
        assert err.rstrip().splitlines()[-1].startswith("error: ") and "is a folder" in err


def test_internal_errors_keep_their_traceback_and_exit_1():
    """A ValueError/OSError from a bug is not a user error: run_guarded lets it through (the console script then
    prints the traceback and exits 1); a ClipSAMUserError becomes exit code 2."""
    class Args:
        traceback = False

    def buggy(args):
        return {}["missing"]  # KeyError from a bug

    def buggy_value(args):
        return int("not a number")  # a plain ValueError from a bug is not bad input

    with pytest.raises(KeyError):
        run_guarded(buggy, Args())
    with pytest.raises(ValueError):
        run_guarded(buggy_value, Args())

    def user(args):
        raise InputFileError("x.csv is not UTF-8 text")

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_guarded(user, Args()) == 2
    assert err.getvalue() == "error: x.csv is not UTF-8 text\n"

    def listing(args):  # a message that lists several things keeps its lines (and their indent)
        raise InputFileError("2 files are missing:\n- a.pt\n  place it at /x/a.pt\n\n- b.pt   (twice   spaced)")

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_guarded(listing, Args()) == 2
    assert err.getvalue() == "error: 2 files are missing:\n- a.pt\n  place it at /x/a.pt\n- b.pt (twice spaced)\n"


# ------------------------------------------------------------------------------------------ files
def test_umci_checkpoint_missing_keys_or_empty(tmp_path):
    from napari_clipsam.weights.umci_checkpoint import FORMAT, read_umci

    path = tmp_path / "u.pt"
    torch.save({"format": FORMAT, "state_dict": {}, "hparams": {"in_dim": 1}}, path)
    with pytest.raises(WeightsUnavailableError) as info:
        read_umci(path)
    msg = str(info.value)
    assert str(path) in msg and "clip_model" in msg and "hparams.layers" in msg and "train" in msg
    path.write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match="empty.*train a new one"):
        read_umci(path)
    import pickle

    for content in (b"category,image_auroc\nmetal,0.5\n" * 20, pickle.dumps({"a": print})):  # a CSV, a pickle
        path.write_bytes(content)
        with pytest.raises(WeightsUnavailableError, match="could not be read as a PyTorch checkpoint") as info:
            read_umci(path)
        msg = str(info.value)  # one short line: not torch's advice to unpickle unsafely, nor the file quoted
        assert "\n" not in msg and len(msg) < 400 and "weights_only" not in msg and "\x1b" not in msg, msg


@pytest.mark.parametrize("cfg_text,sam_bytes,expected", [
    ("", b"x", "sam_config.json is empty"),
    ("{not json", b"x", "sam_config.json is not valid JSON"),
    ("[1, 2]", b"x", "must hold a JSON object"),
    ('{"encoder_depth": "2"}', b"x", "encoder_depth = '2' is not valid"),
    ('{"encoder_depht": 2}', b"x", "unknown SAM config keys \\['encoder_depht'\\]"),
    ("{}", b"", "sam.pth is empty"),
    ("{}", b"not a checkpoint", "sam.pth could not be loaded"),
])
def test_local_dir_sam_files_name_the_problem(tmp_path, cfg_text, sam_bytes, expected):
    from napari_clipsam.weights.loaders import load_sam

    folder = tmp_path / "sam"
    folder.mkdir()
    (folder / "sam_config.json").write_text(cfg_text)
    (folder / "sam.pth").write_bytes(sam_bytes)
    with pytest.raises(WeightsUnavailableError, match=expected):
        load_sam(ClipSAMConfig(sam_model=f"local-dir:{folder}", device="cpu"))


def test_folders_where_files_are_expected(tmp_path):
    from napari_clipsam.io.images import read_image
    from napari_clipsam.weights.loaders import load_sam

    with pytest.raises(PathKindError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(WeightsUnavailableError, match="is a folder, not a file"):
        load_sam(ClipSAMConfig(sam_model="vit_b", sam_weights=str(tmp_path), device="cpu"))
    (tmp_path / "sam").mkdir()
    (tmp_path / "sam" / "sam.pth").mkdir()
    (tmp_path / "sam" / "sam_config.json").write_text("{}")
    with pytest.raises(WeightsUnavailableError, match="lacks the file sam.pth"):
        load_sam(ClipSAMConfig(sam_model=f"local-dir:{tmp_path / 'sam'}", device="cpu"))


def _visa(root: Path, encoding: str) -> Path:
    """A two-image VisA layout whose split_csv/1cls.csv is saved in ``encoding``."""
    import imageio.v3 as iio

    rows = ["object,split,label,image,mask"]
    for label, name in (("normal", "good"), ("anomaly", "bad")):
        image = Path("plate") / "Data" / "Images" / f"{name}.png"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / image, np.full((16, 16), 90, np.uint8))
        mask = ""
        if label == "anomaly":
            mask = Path("plate") / "Data" / "Masks" / f"{name}.png"
            (root / mask).parent.mkdir(parents=True, exist_ok=True)
            m = np.zeros((16, 16), np.uint8)
            m[4:8, 4:8] = 255
            iio.imwrite(root / mask, m)
        rows.append(f"plate,test,{label},{image.as_posix()},{Path(mask).as_posix() if mask else ''}")
    csv = root / "split_csv" / "1cls.csv"
    csv.parent.mkdir(parents=True)
    csv.write_bytes("\r\n".join(rows).encode(encoding))
    return csv


def test_visa_csv_in_utf16_is_read_and_other_encodings_are_named(tmp_path):
    from napari_clipsam.data.readers import VisADataset

    names = [s.image_path.name for s in VisADataset(_visa(tmp_path / "a", "utf-8").parents[1]).samples]
    assert names == ["good.png", "bad.png"]
    for encoding in ("utf-16", "utf-8-sig"):  # "Unicode text" and "CSV UTF-8" of spreadsheet programs
        root = _visa(tmp_path / encoding, encoding).parents[1]
        assert [s.image_path.name for s in VisADataset(root).samples] == names
    csv = _visa(tmp_path / "c", "utf-8")
    csv.write_bytes(csv.read_bytes().replace(b"plate,test,normal", b"pl\xe2te,test,normal", 1))  # a latin-1 byte
    with pytest.raises(InputFileError, match=r"1cls.csv is not UTF-8 text.*save it as a UTF-8 CSV"):
        VisADataset(tmp_path / "c")


def test_long_stems_are_shortened_or_refused(tmp_path):
    long_key = "/".join(["a-rather-long-folder-name"] * 12) + "/image.png"
    stem = safe_stem("__".join(Path(long_key).with_suffix("").parts))
    assert len(stem.encode()) <= MAX_STEM_BYTES and stem == safe_stem("__".join(Path(long_key).with_suffix("").parts))
    inst = np.zeros((8, 8), np.int32)
    inst[2:5, 2:5] = 1
    export_pseudo_labels(tmp_path, stem, inst, formats=["mvtec", "tiff", "coco", "yolo"])  # writes fine
    with pytest.raises(ExportError, match="bytes long; file systems allow 255 bytes"):
        export_pseudo_labels(tmp_path, "x" * 250, inst, formats=["mvtec"])
    assert [p.name for p in (tmp_path / "masks").iterdir()] == [f"{stem}_mask.png"]  # nothing else written


def test_coco_entries_without_id_are_named(tmp_path):
    inst = np.zeros((8, 8), np.int32)
    inst[2:5, 2:5] = 1
    export_pseudo_labels(tmp_path, "a", inst, formats=["coco"])
    path = tmp_path / "coco" / "annotations.json"
    coco = json.loads(path.read_text())
    del coco["annotations"][0]["id"]
    path.write_text(json.dumps(coco))
    before = path.read_bytes()
    with pytest.raises(ExportError, match=r"annotations\[0\] lacks an integer 'id'.*Fix the file or move it away"):
        export_pseudo_labels(tmp_path, "b", inst, formats=["coco"])
    assert path.read_bytes() == before


def test_failed_rollback_is_logged_and_reported(tmp_path, monkeypatch, caplog):
    """When undoing a half-done export fails too, the user is told which file is not restored (and where its
    old content is), and the failure is logged with its traceback instead of being passed over."""
    from napari_clipsam.io import atomic

    (tmp_path / "a.txt").write_text("old a")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "b.txt" or (Path(dst).name == "a.txt" and ".bak" in Path(src).name):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with caplog.at_level(logging.ERROR, logger="napari_clipsam.io.atomic"), \
            pytest.raises(ExportError) as info, atomic.AtomicBatch() as batch:
        batch.stage(tmp_path / "a.txt", b"new a")
        batch.stage(tmp_path / "b.txt", b"new b")
        batch.commit()
    msg = str(info.value)
    assert "could not write" in msg and "b.txt" in msg and "could NOT be restored" in msg and "a.txt" in msg
    backup = [p for p in tmp_path.iterdir() if p.name.startswith(".a.txt") and p.name.endswith(".bak")]
    assert len(backup) == 1 and backup[0].read_text() == "old a" and str(backup[0]) in msg
    record = next(r for r in caplog.records if "rollback failed" in r.getMessage())
    assert record.exc_info is not None
