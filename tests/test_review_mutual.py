"""The folder review shows mutual-scoring results: the image shown before the folder was scored is re-shown with
its scored result when untouched, and a person's edit made meanwhile is never replaced."""
import numpy as np

from test_review_order import _synthetic_folder


def _first_result(qtbot, widget, folder):
    qtbot.waitUntil(lambda: not widget.busy and folder.layer is not None
                    and widget.outputs_for(folder.layer) is not None
                    and None in widget.outputs_for(folder.layer).results, timeout=60_000)
    return widget.outputs_for(folder.layer)


def test_the_untouched_first_image_is_reshown_with_its_mutual_result(qtbot, make_widget, tmp_path):
    viewer, widget = make_widget()
    folder = widget.folder
    assert folder.open(_synthetic_folder(tmp_path / "images", n=5, size=48), tmp_path / "labels")
    first = folder.session.key()
    folder.ordering.table.file_order.setChecked(True)  # stay on this image when the scores arrive
    outputs = _first_result(qtbot, widget, folder)
    assert outputs.results[None].provenance["mode"] != "mutual"  # shown before the folder was scored
    qtbot.waitUntil(lambda: folder.ordering.scored and not widget.busy, timeout=60_000)
    assert folder.session.key() == first
    shown = widget.outputs_for(folder.layer).results[None]
    assert shown.provenance["mode"] == "mutual" and shown.image_score is not None
    assert shown.provenance["folder"]["size"] == 5
    assert "mutual-scoring result" in folder.ordering.table.note.text() and "mutual" in widget.status
    assert folder.drafts.untouched()  # the new result is the baseline: no draft, nothing to restore
    folder.close()


def test_an_edit_made_while_the_folder_is_scored_is_kept(qtbot, make_widget, tmp_path):
    viewer, widget = make_widget()
    folder = widget.folder
    assert folder.open(_synthetic_folder(tmp_path / "images", n=5, size=48), tmp_path / "labels")
    first = folder.session.key()
    outputs = _first_result(qtbot, widget, folder)
    before = outputs.results[None]
    outputs.masks.selected_label = 77
    outputs.masks.brush_size = 3
    outputs.masks.paint((5, 5), 77)  # before the scores arrive (they are handled in this thread, later)
    assert not folder.drafts.untouched()
    qtbot.waitUntil(lambda: folder.ordering.scored and not widget.busy, timeout=60_000)
    qtbot.waitUntil(lambda: folder.drafts.saved is not None, timeout=10_000)
    assert folder.session.key() == first  # neither moved worst first nor re-segmented
    after = widget.outputs_for(folder.layer)
    assert after.results[None] is before and (np.asarray(after.masks.data) == 77).any()
    folder.close()
