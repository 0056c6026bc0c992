"""Worst-first order and the review flags (pure functions), and worst first in the dock's folder review."""
import json

import numpy as np
import pytest

from napari_clipsam.review.flags import (ACCEPTED_HIGH, HOT_NO_OBJECT, OUTSIDE_HOT, REJECTED_LOW, ImageFacts,
                                         image_flags, score_bounds)
from napari_clipsam.review.order import load_scores, load_scores_file, review_order, save_scores
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
    from napari_clipsam.review.order import file_signatures

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


def test_scores_key_names_engine_settings_references_and_version(tmp_path, monkeypatch, engine):
    """A score depends on the engine's models, its config and per-call settings, the references and the files:
    each changes the kept scores' key, and the same engine with the same settings gives the same key."""
    import dataclasses

    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.review import order
    from napari_clipsam.review.order import scores_key

    files = {"a.png": [10, 1], "b.png": [12, 2]}
    base = scores_key(engine, "plate", {"prompt_threshold": 0.3}, files, tmp_path)
    assert base == scores_key(engine, "plate", {"prompt_threshold": 0.3}, dict(files), tmp_path)
    changed = [
        scores_key(engine, "plate", {"prompt_threshold": 0.4}, files, tmp_path),
        scores_key(engine, "plate", {"prompt_threshold": 0.3, "mutual_radii": (1, 3)}, files, tmp_path),
        scores_key(engine, "plate", {"prompt_threshold": 0.3, "tiling": "off"}, files, tmp_path),
        scores_key(engine, "plate", {"prompt_threshold": 0.3}, {**files, "b.png": [12, 3]}, tmp_path),
        scores_key(engine, "bottle", {"prompt_threshold": 0.3}, files, tmp_path),
    ]
    identity = dict(engine.identity)
    for field, value in (("clip_weights", "sha256:other"), ("clip_architecture", "0" * 16),
                         ("encoders", {**identity["encoders"], "backend": "openvino"})):
        monkeypatch.setattr(engine, "identity", {**identity, field: value})
        changed.append(scores_key(engine, "plate", {"prompt_threshold": 0.3}, files, tmp_path))
    monkeypatch.setattr(engine, "identity", identity)
    engine.set_normal_references([synthetic_image("metal", None, size=56, seed=1)[0]], "plate")
    try:
        changed.append(scores_key(engine, "plate", {"prompt_threshold": 0.3}, files, tmp_path))
    finally:
        engine.clear_normal_references()
    monkeypatch.setattr(order, "SCORES_VERSION", order.SCORES_VERSION + 1)
    changed.append(scores_key(engine, "plate", {"prompt_threshold": 0.3}, files, tmp_path))
    monkeypatch.setattr(order, "SCORES_VERSION", order.SCORES_VERSION - 1)
    assert len({base, *changed}) == len(changed) + 1, "some setting does not change the key"
    # what never changes a score does not change the key either
    monkeypatch.setattr(engine, "_config", dataclasses.replace(engine.config, cache_bytes=1024**2))
    assert scores_key(engine, "plate", {"prompt_threshold": 0.3}, files, tmp_path) == base
    monkeypatch.setattr(engine, "identity", {**identity, "sam_weights": "random"})
    assert scores_key(engine, "plate", {}, files, tmp_path) is None  # unidentified weights: never reused


def test_kept_scores_need_their_key_and_old_files_are_ignored(tmp_path):
    out = tmp_path / "out"
    save_scores(out, tmp_path, "plate", "mutual", {"a.png": 0.5}, key="k1")
    assert load_scores_file(out, tmp_path, "plate", key="k1")["scores"] == {"a.png": 0.5}
    assert load_scores_file(out, tmp_path, "plate", key="k2") is None
    data = json.loads((out / "clipsam_review_scores.json").read_text())
    assert data["key"] == "k1" and data["version"] == 2
    del data["key"]
    data["version"] = 1  # what napari-clipsam wrote before the key
    (out / "clipsam_review_scores.json").write_text(json.dumps(data))
    assert load_scores_file(out, tmp_path, "plate") is None and load_scores(out, tmp_path, "plate") == {}


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


def test_the_dock_scores_the_folder_then_goes_worst_first_and_reuses_them(qtbot, make_widget, monkeypatch, tmp_path):
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
    # the current image's object count follows the person's edits before Accept (the drafts' debounce refreshes)
    shown = int(table.table.item(0, 3).text())
    masks = widget.current_outputs().masks
    folder.drafts.timer.setInterval(50)  # the drafts' one-second debounce, shortened for the test
    new_id = int(np.asarray(masks.data).max()) + 1
    masks.selected_label = new_id
    masks.brush_size = 3
    masks.paint((5, 5), new_id)
    qtbot.waitUntil(lambda: table.table.item(0, 3).text() == str(shown + 1), timeout=5_000)
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
    _reopen_before_the_engine(qtbot, monkeypatch, widget, images, tmp_path / "labels")
    # File order is remembered with the dock's settings: a new dock (a new napari session) starts in file order
    table.file_order.setChecked(True)
    from napari_clipsam.widget.settings import WidgetSettings

    assert WidgetSettings.load().qa_file_order
    _, again = make_widget(viewer=viewer)
    assert again.folder.ordering.table.file_order.isChecked()  # what ReviewOrdering.open orders by


def _reopen_before_the_engine(qtbot, monkeypatch, widget, images, labels):
    """Kept scores taken before the dock has an engine (a new napari session) are checked once it has one: made
    under another key (another engine or settings), the folder is scored again; under this one, it is not."""
    folder, ordering = widget.folder, widget.folder.ordering
    path = labels / "clipsam_review_scores.json"
    kept = path.read_text()
    assert json.loads(kept)["key"]
    real = widget.run_inputs
    for key, scored_again in (("made-by-another-engine", True), (json.loads(kept)["key"], False)):
        path.write_text(json.dumps({**json.loads(kept), "key": key}))
        with monkeypatch.context() as m:
            m.setattr(widget, "run_inputs", lambda: (None, *real()[1:]))  # no engine yet when the review opens
            # worst first at once from the kept scores; the mutual maps are to be made after the first result
            assert folder.open(images, labels) and ordering.reused and ordering.needs_scoring
        # the first result's engine checks the key: stale → scored again (no longer reused), else maps only
        qtbot.waitUntil(lambda: not ordering.needs_scoring, timeout=60_000)  # the scoring started (or is done)
        assert ordering.reused is not scored_again
        if scored_again:
            ordering.stop()
        qtbot.waitUntil(lambda: not widget.busy and ordering.task is None, timeout=60_000)
        assert ordering.reused is not scored_again and not ordering.needs_scoring
        folder.close()
