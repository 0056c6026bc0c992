"""Worst-first order and the review flags (pure functions), and worst first in the dock's folder review."""
import json

import numpy as np
import pytest

from napari_clipsam.review.flags import (ACCEPTED_HIGH, HOT_NO_OBJECT, OUTSIDE_HOT, REJECTED_LOW, ImageFacts,
                                         image_flags, score_bounds)
from napari_clipsam.review.order import load_scores, review_order, save_scores
from test_plugin_flows import run_flow, tiny_weights  # noqa: F401  (the fixture)


def test_order_is_by_score_then_position_and_unscored_last():
    assert review_order(5, {0: 0.2, 1: 0.9, 2: 0.2, 4: float("nan")}) == [1, 0, 2, 3, 4]
    assert review_order(5, {0: 0.2, 1: 0.9}, worst_first=False) == [0, 1, 2, 3, 4]


def test_scores_file_round_trip_and_other_object(tmp_path):
    save_scores(tmp_path / "out", tmp_path, "plate", "mutual", {"a.png": 0.5, "b.png": 0.7})
    assert load_scores(tmp_path / "out", tmp_path, "plate") == {"a.png": 0.5, "b.png": 0.7}
    assert load_scores(tmp_path / "out", tmp_path, "bottle") == {}
    (tmp_path / "out" / "clipsam_review_scores.json").write_text("{broken")
    assert load_scores(tmp_path / "out", tmp_path, "plate") == {}


def test_kept_scores_are_stale_once_a_file_changes(tmp_path):
    import os

    from napari_clipsam.review import QASession
    from napari_clipsam.review.order import file_signatures, load_scores_file

    images = _synthetic_folder(tmp_path / "images", n=2, size=32)
    session = QASession(images, tmp_path / "out")
    before = file_signatures(session)
    save_scores(tmp_path / "out", images, "plate", "per-image", {k: 0.5 for k in before},
                extra={"files": before, "thresholds": [0.5, 0.5, 0.5]})
    kept = load_scores_file(tmp_path / "out", images, "plate")
    assert kept["files"] == before and kept["thresholds"] == [0.5, 0.5, 0.5] and kept["format"].endswith("scores")
    path = session.images[0]
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert file_signatures(session) != before


def test_flags():
    bounds = score_bounds([0.1, 0.2, 0.3, 0.8, 0.9])
    assert image_flags(ImageFacts(0.9, 0, True, 0), "accepted", 0, bounds) == [HOT_NO_OBJECT, ACCEPTED_HIGH]
    assert image_flags(ImageFacts(0.1, 2, True, 1), "rejected", None, bounds) == [OUTSIDE_HOT, REJECTED_LOW]
    assert image_flags(ImageFacts(0.5, 1, True, 0), "accepted", 1, bounds) == []
    assert score_bounds([0.1, np.nan, 0.2]) is None


def _synthetic_folder(folder, n=6, size=64):
    """n synthetic metal plates, half with a defect, under random names (file order says nothing)."""
    from PIL import Image

    from napari_clipsam.data.synthetic import synthetic_image

    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(n):
        image, _ = synthetic_image("metal", "scratch" if i % 2 else "good", size=size, seed=20 + i)
        Image.fromarray(image).save(folder / f"{rng.integers(10**6):06d}.png")
    return folder


@pytest.mark.slow
def test_folder_review_goes_worst_first_in_real_order(tiny_weights, tmp_path):  # noqa: F811
    """Through the manifest in a fresh process (about 50 s on 2 shared cores: napari, torch, a scoring, runs)."""
    images = _synthetic_folder(tmp_path / "images")
    clip_dir, sam_dir = tiny_weights
    out = run_flow("review_order.py", clip_dir, sam_dir, images, tmp_path / "labels", tmp_path=tmp_path)
    assert "reopened: kept scores" in out
    kept = json.loads((tmp_path / "labels" / "clipsam_review_scores.json").read_text())
    assert kept["mode"] == "mutual" and len(kept["scores"]) == 6 and set(kept["files"]) == set(kept["scores"])


def test_the_dock_scores_the_folder_then_goes_worst_first_and_reuses_them(qtbot, make_widget, tmp_path):
    images = _synthetic_folder(tmp_path / "images", n=5, size=48)
    viewer, widget = make_widget()
    folder = widget.folder
    ordering, table = folder.ordering, folder.ordering.table
    assert folder.open(images, tmp_path / "labels")
    keys = [folder.session.key(i) for i in range(5)]
    assert folder.session.key() == keys[0]  # shown at once, in file order
    qtbot.waitUntil(lambda: ordering.scored and not widget.busy, timeout=60_000)
    scores = ordering.order.scores
    worst = sorted(keys, key=lambda k: (-scores[k], keys.index(k)))
    assert folder.session.key() == worst[0]  # the shown image was untouched: the review moved to the worst
    assert [table.table.item(r, 0).text() for r in range(5)] == worst
    from qtpy.QtWidgets import QTabWidget

    from napari_clipsam.widget.controls import DOCK_WIDTH

    tabs = widget.findChild(QTabWidget)
    assert tabs.widget(tabs.count() - 1).minimumSizeHint().width() <= DOCK_WIDTH  # the table keeps the dock narrow
    assert folder.reject() and folder.session.key() == worst[1]  # Accept/Reject/Next follow the order
    table.file_order.setChecked(True)
    assert ordering.order.order == list(range(5)) and folder.session.key() == worst[1]
    assert folder.session.verdict(worst[0]).value == "rejected"
    table.file_order.setChecked(False)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    folder.close()
    assert folder.open(images, tmp_path / "labels") and ordering.reused and ordering.task is None
    assert folder.session.key() == worst[1]  # resumed worst first at once, from the kept scores
    # the mutual maps are made again in the background (features from the disk cache), the order stays
    qtbot.waitUntil(lambda: ordering.scored and ordering.task is None and not ordering.needs_scoring
                    and not widget.busy, timeout=60_000)
    assert folder.session.key() == worst[1] and [table.table.item(r, 0).text() for r in range(5)] == worst
    shown = widget.outputs_for(folder.layer).results[None]
    assert shown.provenance["mode"] == "mutual", shown.provenance["mode"]
    folder.close()
