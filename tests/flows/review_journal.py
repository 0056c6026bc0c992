"""The review's crash journal across a real kill (run by tests/test_review_journal.py), in fresh processes.

``edit``: open the review, paint a new object and add a prompt point through the layers' public API, wait until
the layers are still, write what they hold to EXPECTED, print "[flow] edited" and keep napari running until the
test kills it (SIGKILL). ``reopen``: open the same review in a new process, check that the draft is offered,
press Restore draft, compare the layers with EXPECTED (exact pixels and prompts), then Accept (the draft goes).

Usage: python review_journal.py MODE CLIP_DIR SAM_DIR IMAGES_DIR LABELS_DIR EXPECTED
"""
import sys
import time
from pathlib import Path

import napari
import numpy as np
from _flow import say, wait
from qtpy.QtWidgets import QApplication

mode, clip_dir, sam_dir, images, labels, expected = sys.argv[1:7]
viewer = napari.Viewer(show=True)
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
c, folder = widget.c, widget.folder
c.clip_weights.setText(clip_dir)
c.sam_weights.setText(sam_dir)
c.clip_weights.editingFinished.emit()
c.object_name.setText("machined part")
c.qa_input.setText(images)
c.qa_output.setText(labels)
c.qa_open.click()
wait(lambda: not widget.busy and widget.current_outputs() is not None and widget.current_outputs().results,
     what="the run")


def state():
    out = widget.current_outputs()
    return out.masks.data.copy(), np.asarray(out.prompts.data).copy(), list(map(str, out.prompts.features["label"]))


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


if mode == "edit":
    out = widget.current_outputs()
    out.masks.selected_label = 41
    out.masks.brush_size = 7
    out.masks.paint((12, 12), 41)
    out.masks.paint((14, 16), 41)
    out.prompts.add([[40.0, 44.0]])  # a positive prompt: the dock refines after a short pause
    last, still = state(), time.monotonic()
    while time.monotonic() - still < 1.5:  # until the refine is in and nothing moved for 1.5 s
        spin(0.1)
        now = state()
        if not (np.array_equal(now[0], last[0]) and np.array_equal(now[1], last[1])):
            last, still = now, time.monotonic()
    assert (last[0] == 41).sum() > 0, "the paint stroke is not in the masks"
    np.savez(expected, masks=last[0], points=last[1], labels=np.array(last[2]))
    say(f"edited: {(last[0] == 41).sum()} px of object 41, {len(last[1])} points")
    spin(120)  # the test kills us before this ends
    say("not killed")
else:
    want = np.load(expected)
    drafts = folder.drafts
    wait(lambda: not drafts.bar.isHidden(), timeout=10, what="the draft offer")
    say(f"offered: {drafts.notice.text()}")
    assert "Restore" in widget.status, widget.status
    drafts.restore_button.click()
    masks, points, point_labels = state()
    assert np.array_equal(masks, want["masks"]), f"{(masks != want['masks']).sum()} pixels differ"
    assert np.array_equal(points, want["points"]) and point_labels == list(want["labels"]), (points, want["points"])
    assert drafts.bar.isHidden()
    say(f"restored exactly: {(masks == 41).sum()} px of object 41, {len(points)} points")
    draft_file = Path(labels, ".clipsam-drafts", "a.npz")
    assert draft_file.exists()
    c.qa_accept.click()
    assert not draft_file.exists(), "Accept left the draft behind"
    say("accepted: draft deleted")
    wait(lambda: not widget.busy, what="the last run")
    viewer.close()
    say("ok")
