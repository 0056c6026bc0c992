"""Try many kinds of bad input against the CLI and the engine and print how each is handled.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/audit_bad_inputs.py

Outcome per trial: ``clear`` (a ClipSAMUserError / ValueError with a message, or CLI exit 2 with one line),
``ok`` (accepted and handled), or ``BAD`` (another exception, a traceback, or a multi-line CLI error). Uses the
tiny random models of :mod:`napari_clipsam.testing`; nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(*args) -> tuple[int, str]:
    from napari_clipsam.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # a traceback
            return 1, f"{type(exc).__name__}: {exc}"
    return code, err.getvalue()


def main() -> int:
    import torch

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.errors import ClipSAMUserError
    from napari_clipsam.testing import tiny_config, tiny_engine

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="clipsam-audit-"))
    cfg = tiny_config(tmp / "models")
    img = tmp / "in" / "a.png"
    img.parent.mkdir()
    import imageio.v3 as iio

    iio.imwrite(img, (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    (tmp / "bad.json").write_text(json.dumps({"alpha": 7}))
    (tmp / "notjson.json").write_text("{")
    (tmp / "empty.pt").write_bytes(b"")
    base = ["segment", img, "--out", tmp / "out", "--object", "plate", "--no-progress",
            "--clip-model", cfg.clip_model, "--sam-model", cfg.sam_model, "--image-size", 56]
    cli_trials = {
        "--device gpu": [*base, "--device", "gpu"],
        "--device cuda (no GPU) / cuda:99": [*base, "--device", "cuda:99" if torch.cuda.is_available() else "cuda"],
        "--config field out of range": [*base, "--config", tmp / "bad.json"],
        "--config not JSON": [*base, "--config", tmp / "notjson.json"],
        "--config is a folder": [*base, "--config", tmp],
        "--umci empty file": [*base, "--umci", tmp / "empty.pt"],
        "--umci is a folder": [*base, "--umci", tmp],
        "--image-size 5": [*base[:-2], "--image-size", 5],
        "--formats bogus": [*base, "--formats", "bogus"],
        "--out is a file": [*base[:3], img, *base[4:]],
        "input missing": ["segment", tmp / "missing.png", "--out", tmp / "o", "--object", "x"],
        "object lone surrogate": [*base[:5], "pl\udcfate", *base[6:]],
        "--sam-model local-dir missing": [*base[:9], "--sam-model", f"local-dir:{tmp / 'nosam'}"],
        "train --dataset-root missing": ["train", "--dataset-root", tmp / "nope", "--out", tmp / "u.pt"],
        "eval --dataset-root is a file": ["eval", "--dataset-root", img],
        "weights verify unknown": ["weights", "verify", "vit_q"],
    }
    rows, bad = [], 0
    for name, args in cli_trials.items():
        code, err = cli(*args)
        good = code == 2 and err.startswith("error: ") and err.count("\n") == 1
        bad += not good
        rows.append((f"CLI {name}", "clear" if good else "BAD", f"exit {code}: {err.strip()[:110]}"))

    engine = tiny_engine(seed=0)
    image = (np.random.default_rng(1).random((40, 48, 3)) * 255).astype(np.uint8)
    result = engine.segment(image, "plate")
    api_trials = {
        "contrast_limits (1, 0)": lambda: engine.segment(image[..., 0].astype(np.float32), "x", contrast_limits=(1, 0)),
        "contrast_limits NaN": lambda: engine.segment(image.astype(np.float32), "x", contrast_limits=(math.nan, 1)),
        "contrast_limits inf": lambda: engine.segment(image.astype(np.float32), "x", contrast_limits=(0, math.inf)),
        "float64 ±1.7e308 image": lambda: engine.segment(np.linspace(-1, 1, 40 * 48).reshape(40, 48) * 1.7e308, "x"),
        "point label 0.5": lambda: engine.refine(result, points=[[5, 5]], point_labels=[0.5]),
        "points shape (2,)": lambda: engine.refine(result, points=[5, 5]),
        "points of strings": lambda: engine.refine(result, points=[["a", "b"]]),
        "boxes shape (1, 3)": lambda: engine.refine(result, boxes=[[0, 0, 5]]),
        "boxes inverted": lambda: engine.refine(result, boxes=[[9, 9, 2, 2]]),
        "segment_many batch_size=2.5": lambda: engine.segment_many([image], "x", batch_size=2.5),
        "object name lone surrogate": lambda: engine.segment(image, "\ud800"),
        "image 4-D": lambda: engine.segment(image[None], "x"),
        "image channel-first": lambda: engine.segment(np.moveaxis(image, -1, 0), "x"),
        "image of strings": lambda: engine.segment(np.full((9, 9), "a"), "x"),
        "image all NaN": lambda: engine.segment(np.full((9, 9), np.nan), "x"),
        "refine by another SAM": lambda: tiny_engine(seed=1).refine(result, points=[[5, 5]]),
        "ClipSAMConfig(prompt_threshold='0.5')": lambda: ClipSAMConfig(prompt_threshold="0.5"),
        "ClipSAMConfig(feature_layers=3)": lambda: ClipSAMConfig(feature_layers=3),
        "ClipSAMConfig(templates=('{x}',))": lambda: ClipSAMConfig(templates=("{x}",)),
        "ClipSAMConfig(device='gpu')": lambda: ClipSAMConfig(device="gpu"),
    }
    for name, fn in api_trials.items():
        try:
            fn()
            rows.append((f"API {name}", "ok", "accepted"))
        except (ClipSAMUserError, ValueError) as exc:
            rows.append((f"API {name}", "clear", f"{type(exc).__name__}: {str(exc)[:110]}"))
        except Exception as exc:  # noqa: BLE001 - the audit reports it
            bad += 1
            rows.append((f"API {name}", "BAD", f"{type(exc).__name__}: {str(exc)[:110]}"))
    for name, outcome, detail in rows:
        print(f"{outcome:5}  {name:45}  {detail}")
    print(f"{len(rows)} trials, {bad} BAD")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
