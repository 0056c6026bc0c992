"""The folder review's crash journal: drafts on disk (Qt-free) and a real SIGKILL of napari mid-correction."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_clipsam.review.journal import Draft, DraftJournal
from test_plugin_flows import FLOWS, run_flow, tiny_weights  # noqa: F401  (the fixture)


def _draft():
    masks = np.zeros((8, 9), np.int32)
    masks[2:4, 3:6] = 5
    return Draft(masks, {5: "scratch"}, np.array([[1.0, 2.0], [3.5, 4.0]]), ["positive", "negative"],
                 ["user", "clip"], [np.array([[0, 0], [0, 3], [2, 3], [2, 0]], float)], {5})


def test_a_draft_round_trips_and_is_not_offered_for_a_changed_image(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    journal = DraftJournal(tmp_path / "out")
    assert journal.load("a", image) is None
    journal.save("a", image, _draft())
    back = journal.load("a", image)
    assert back is not None and back.same_as(_draft()) and back.classes == {5: "scratch"}
    assert not any(p.name.endswith(".tmp") for p in journal.folder.iterdir())
    image.write_bytes(b"another image")
    assert journal.load("a", image) is None  # the image changed: its old draft is not offered
    assert journal.discard("a") and not journal.discard("a")


def test_an_unreadable_draft_is_ignored(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    journal = DraftJournal(tmp_path / "out")
    journal.folder.mkdir(parents=True)
    journal.path("a").write_bytes(b"cut short")
    assert journal.load("a", image) is None


@pytest.mark.slow
def test_corrections_survive_a_kill_9_of_napari(tiny_weights, tmp_path):  # noqa: F811
    from PIL import Image

    from napari_clipsam.data.synthetic import synthetic_image

    images = tmp_path / "images"
    images.mkdir()
    for name, seed in (("a", 1), ("b", 2)):  # gray images (see issue 18 for RGB → gray)
        Image.fromarray(synthetic_image("part", "crack", size=64, seed=seed)[0][..., 0]).save(images / f"{name}.png")
    clip_dir, sam_dir = tiny_weights
    labels, expected = tmp_path / "labels", tmp_path / "expected.npz"
    args = [str(x) for x in (clip_dir, sam_dir, images, labels, expected)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", NAPARI_CLIPSAM_CONFIG_DIR=str(tmp_path / "config"),
               NAPARI_CLIPSAM_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.Popen([sys.executable, str(FLOWS / "review_journal.py"), "edit", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "[flow] edited" in line:
                break
        assert any("[flow] edited" in x for x in seen), "".join(seen)[-4000:]
        time.sleep(2.0)  # the person stops for two seconds, then napari dies
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (labels / ".clipsam-drafts" / "a.npz").exists(), "no draft on disk after the kill"
    out = run_flow("review_journal.py", "reopen", *args, tmp_path=tmp_path)
    assert "restored exactly" in out and "draft deleted" in out


def test_a_draft_is_written_after_an_edit_offered_on_reopening_and_declined(qtbot, make_widget, tmp_path):
    import imageio.v3 as iio

    from napari_clipsam.data.synthetic import synthetic_image

    for i in range(2):
        iio.imwrite(tmp_path / f"{i}.png", synthetic_image("metal", "stain", size=48, seed=i)[0][..., 0])
    viewer, widget = make_widget()
    folder, draft_file = widget.folder, tmp_path / "labels" / ".clipsam-drafts" / "0.npz"
    assert folder.open(tmp_path, tmp_path / "labels")
    qtbot.waitUntil(lambda: not widget.busy and folder.drafts.outputs is not None, timeout=60_000)
    fresh = widget.current_outputs().masks.data.copy()
    assert not draft_file.exists()  # ClipSAM's own result is no draft
    masks = widget.current_outputs().masks
    masks.selected_label = 30
    masks.brush_size = 5
    masks.paint((10, 10), 30)
    painted = masks.data.copy()
    start = time.monotonic()
    qtbot.waitUntil(draft_file.exists, timeout=5000)
    assert time.monotonic() - start < 2.5  # saved about a second after the edit
    folder.next_image()  # moving on without a verdict keeps the draft
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert draft_file.exists()
    assert folder.open(tmp_path, tmp_path / "labels")  # as after a crash: the review opens on image 0 again
    qtbot.waitUntil(lambda: not widget.busy and folder.drafts.offered is not None, timeout=60_000)
    assert not folder.drafts.bar.isHidden() and "draft" in widget.status
    assert np.array_equal(folder.drafts.offered.masks, painted)
    folder.drafts.discard_button.click()  # declined: the draft goes, the fresh result stays
    assert not draft_file.exists() and folder.drafts.bar.isHidden()
    assert np.array_equal(widget.current_outputs().masks.data, fresh)
    masks = widget.current_outputs().masks
    masks.paint((20, 20), 7)
    qtbot.waitUntil(draft_file.exists, timeout=5000)
    assert folder.skip() and not draft_file.exists()  # a verdict deletes the draft
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)  # no Run left in flight when the widget goes
