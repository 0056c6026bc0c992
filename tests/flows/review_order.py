"""Worst first in a folder review through the real widget, in one fresh process (run by tests/test_review_order.py).

Viewer first, widget from the npe2 manifest, local tiny weights through the dock's settings. Open a synthetic
folder; reject the first image (file order) before anything is scored; wait for the background scoring; the
review then shows the highest-scored undecided image and the table lists the folder worst first. A correction
and the verdict survive *File order* (file order restored, the current image stays) and going back; Alt+N and a
table click move; Close and reopen reuse the kept scores and resume worst first at once (the mutual maps made again in the
background, from the feature cache).

Usage: python review_order.py CLIP_DIR SAM_DIR IMAGES_DIR LABELS_DIR [SCREENSHOT.png]
"""
import sys
import time

import napari
from _flow import say, wait
from napari.utils.key_bindings import KeyBinding
from qtpy.QtWidgets import QApplication


def settle(widget):
    wait(lambda: not widget.busy, what="the run")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)


clip_dir, sam_dir, images, labels = sys.argv[1:5]
shot = sys.argv[5] if len(sys.argv) > 5 else None
viewer = napari.Viewer(show=True)
dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
c, folder = widget.c, widget.folder
c.clip_weights.setText(clip_dir)
c.sam_weights.setText(sam_dir)
c.clip_weights.editingFinished.emit()
c.object_name.setText("metal plate")
c.qa_input.setText(images)
c.qa_output.setText(labels)
c.qa_open.click()
ordering, table = folder.ordering, folder.ordering.table
session = folder.session
keys = [session.key(i) for i in range(len(session))]
assert session.key() == keys[0], "the review did not start in file order"
assert KeyBinding.from_str("Alt-N") in viewer.keymap
assert "Alt+N" in table.next_flagged.text()

# 1. a verdict before anything is scored (ClipSAM is still running on the first image)
c.qa_reject.click()
assert session.verdict(0).value == "rejected"
settle(widget)
say(f"rejected {keys[0]} before scoring; now on {session.key()}")

# 2. the scores arrive: worst first, on the highest-scored undecided image
wait(lambda: ordering.scored, timeout=120, what="the folder scores")
settle(widget)
scores = ordering.order.scores
assert set(scores) == set(keys), scores
undecided = [k for k in keys if k != keys[0]]
best = max(undecided, key=lambda k: (scores[k], -keys.index(k)))
assert session.key() == best, (session.key(), best, scores)
assert widget.current_outputs() is not None and widget.current_outputs().results, "nothing shown after the move"
shown = [table.table.item(r, 0).text() for r in range(table.table.rowCount())]
assert shown == sorted(keys, key=lambda k: (-scores[k], keys.index(k))), (shown, scores)
assert session.verdict(0).value == "rejected", "the verdict was lost by reordering"
row0 = shown.index(keys[0])
assert table.table.item(row0, 2).text() == "rejected"
assert not table.scoring_row.isVisible() and "mutual scoring over 6 images" in table.note.text(), table.note.text()
say(f"scored; worst first, now on {best} ({scores[best]:.3f}): {widget.status}")
if shot:  # the Review tab with its table, for a person to look at
    from qtpy.QtWidgets import QTabWidget

    tabs = widget.findChild(QTabWidget)
    tabs.setCurrentIndex(tabs.count() - 1)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    viewer.screenshot(shot.replace(".png", "_window.png"), canvas_only=False)
    widget.setFixedWidth(320)  # the dock at its widest size hint
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    widget.grab().save(shot)
    widget.setMinimumWidth(0)
    widget.setMaximumWidth(16777215)
    tabs.setCurrentIndex(0)
    say(f"screenshot {shot}")

# 3. a correction, then File order: order restored, current image kept, the correction kept as a draft
masks = widget.current_outputs().masks
masks.selected_label = 77
masks.brush_size = 3
masks.paint((5, 5), 77)
wait(lambda: folder.drafts.saved is not None, timeout=10, what="the draft")
table.file_order.setChecked(True)
assert ordering.order.order == list(range(len(keys))) and session.key() == best
here = keys.index(best)
away, back = (c.qa_next, c.qa_previous) if here < len(keys) - 1 else (c.qa_previous, c.qa_next)
away.click()
settle(widget)
assert session.key() == keys[here + 1 if away is c.qa_next else here - 1], session.key()  # the file-order neighbour
back.click()
settle(widget)
assert session.key() == best, session.key()
assert folder.drafts.offered is not None, "the correction was not offered back"
assert folder.drafts.restore() and (widget.current_outputs().masks.data == 77).any()
assert session.verdict(0).value == "rejected"
say("File order: file order restored, the verdict and the correction kept")

# 4. back to worst first; Alt+N and a table click move along it
table.file_order.setChecked(False)
assert ordering.order.order[0] == keys.index(shown[0])
before = session.index
folder.next_flagged()
settle(widget)
assert session.index != before, (session.key(), widget.status)
table.click_row(table.table.rowCount() - 1)
settle(widget)
assert session.key() == shown[-1], session.key()
say(f"Alt+N and a table click: on {session.key()}")

# 5. close and reopen: worst first at once from the kept scores, at the first undecided image; the mutual maps
# are made again in the background and the untouched image is re-shown with its mutual result, in place
c.qa_close.click()
settle(widget)
c.qa_open.click()
session = folder.session
assert ordering.reused and ordering.task is None and ordering.needs_scoring
first = next(k for k in shown if session.verdict(k) is None)
assert session.key() == first, (session.key(), first)
wait(lambda: ordering.task is None and not ordering.needs_scoring, timeout=120, what="the mutual maps")
settle(widget)
assert session.key() == first, "the reopened review moved although it was in its order"
mode = widget.current_outputs().results[None].provenance["mode"]
if first == best:  # its correction from step 3 is offered back as a draft: never replaced by a re-segmentation
    assert folder.drafts.offered is not None and mode != "mutual", (mode, folder.drafts.offered)
    assert folder.drafts.restore() and (widget.current_outputs().masks.data == 77).any()
else:
    assert mode == "mutual", mode
say(f"reopened: kept scores, on {first}, {mode} result")
c.qa_close.click()
settle(widget)
viewer.close()
say("ok")
