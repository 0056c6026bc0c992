"""The HTML report rendered by a real browser: headless Chromium (Debian's ``chromium``) takes a screenshot of the
page that ``napari-clipsam report`` wrote for a small segmented folder, and the screenshot must show a page
(text, tables, the embedded histogram and thumbnails), not a blank or broken one.

Marked ``browser`` (left out of the default run, which does not need a browser): ``python -m pytest -q -m browser``.
Set ``NAPARI_CLIPSAM_SCREENSHOT_DIR`` to keep the screenshot for looking at.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_clipsam.data import make_synthetic_dataset
from napari_clipsam.testing import write_tiny_clip, write_tiny_sam

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HISTOGRAM_BLUE = (0x4A, 0x7B, 0xD0)  # napari_clipsam/report/render.py's histogram bars

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                          "chromium); this test renders the HTML report in it")]


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "napari_clipsam", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def screenshot(page: Path, png: Path, profile: Path, size=(1200, 1400)) -> np.ndarray:
    """Chromium's headless screenshot of ``page`` as an (H, W, 3) uint8 array (no network, no GPU, a private
    profile)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
                           f"--window-size={size[0]},{size[1]}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB"))


def drawn(rgb: np.ndarray) -> bool:
    """Whether a screenshot shows a drawn page: varied pixels and many distinct colours."""
    return rgb.std() > 15 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_browser")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", ("metal",), n_train_good=0, n_test_good=2, n_test_defect=1,
                                  image_size=64, seed=0)
    (root / "in").mkdir()
    for i, src in enumerate(sorted((data / "metal" / "test").glob("*/*.png"))[:5]):
        shutil.copy(src, root / "in" / f"img{i}.png")
    env = {**os.environ, "NAPARI_CLIPSAM_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    done = _cli("segment", root / "in", "--object", "metal", "--out", root / "out", "--clip-model",
                f"local-dir:{clip}", "--image-size", "56", "--device", "cpu", "--backend", "torch", "--sam-model",
                f"local-dir:{sam}", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    done = _cli("report", root / "out", "--out", root / "report.html", env=env)
    assert done.returncode == 0, done.stderr
    return root / "report.html"


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    rgb = screenshot(report, tmp_path / "report.png", tmp_path / "profile")
    keep = os.environ.get("NAPARI_CLIPSAM_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", Path(keep) / "report.png")
    assert rgb.shape[:2] == (1400, 1200)
    assert drawn(rgb), "the report's screenshot is blank"
    top = rgb[:120]  # the title: dark text on white
    assert (top.min(axis=-1) < 60).sum() > 500 and (top.min(axis=-1) > 240).mean() > 0.5
    # the embedded histogram (a data-URI PNG) was decoded and drawn, offline
    blue = (np.abs(rgb.astype(int) - HISTOGRAM_BLUE).sum(axis=-1) < 20).sum()
    assert blue > 2000, f"the score histogram is not drawn ({blue} px of its colour)"
    # the thumbnails: grey textured metal somewhere below the summary
    grey = (rgb.std(axis=-1) < 8) & (rgb.mean(axis=-1) > 90) & (rgb.mean(axis=-1) < 200)
    assert grey[600:].sum() > 5000, "no thumbnail is drawn"


def test_the_blank_check_fails_on_a_blank_page(tmp_path):
    """The check above can fail: an empty page's screenshot is not 'drawn'."""
    page = tmp_path / "empty.html"
    page.write_text("<!doctype html><html><body></body></html>", encoding="utf-8")
    assert not drawn(screenshot(page, tmp_path / "empty.png", tmp_path / "profile"))
