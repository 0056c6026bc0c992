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
    qtbot.wait(1500)  # past the draft timer: the re-show wrote the layers, the person did not
    assert folder.drafts.journal.stems() == [], "a draft was saved for an image nobody touched"
    folder.next_image()  # moved on: the table's note no longer says what the first image shows
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    note = folder.ordering.table.note.text()
    assert "mutual-scoring result" not in note and "scored by mutual scoring" in note, note
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


def test_a_changed_threshold_a_rerun_and_a_revisit_keep_the_folder_map(qtbot, make_widget, tmp_path):
    """Once the folder is scored, every Run of a review image uses its mutual map: Run again, a changed τ (MMR
    again on that map, the same masks as the engine's folder run at that τ) and an image visited again."""
    viewer, widget = make_widget()
    folder = widget.folder
    assert folder.open(_synthetic_folder(tmp_path / "images", n=5, size=48), tmp_path / "labels")
    folder.ordering.table.file_order.setChecked(True)
    _first_result(qtbot, widget, folder)
    qtbot.waitUntil(lambda: folder.ordering.scored and not widget.busy, timeout=60_000)
    scored = widget.outputs_for(folder.layer).results[None]
    assert scored.provenance["mode"] == "mutual"

    def run_and_get():  # the Run button, as a person presses it (the dock's picker holds napari's layer proxy)
        widget.c.run.click()
        assert widget.busy
        qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
        return widget.outputs_for(folder.layer).results[None]

    again = run_and_get()
    assert again.provenance["mode"] == "mutual"
    np.testing.assert_array_equal(again.rough_map, scored.rough_map)
    widget.c.prompt_threshold.setValue(0.2)
    low = run_and_get()
    assert low.provenance["mode"] == "mutual" and low.provenance["thresholds"]["prompt_threshold"] == 0.2
    np.testing.assert_array_equal(low.rough_map, scored.rough_map)
    want = widget.engine.segment_folder([folder.session.read_image(i) for i in range(5)], widget.object_name,
                                        settings={"prompt_threshold": 0.2, "mask_threshold": widget.thresholds[1],
                                                  "alpha": widget.thresholds[2]})[folder.session.index]
    np.testing.assert_array_equal(np.asarray(widget.outputs_for(folder.layer).masks.data) > 0, want.instances > 0)
    here = folder.session.index
    folder.next_image()
    qtbot.waitUntil(lambda: not widget.busy and None in widget.outputs_for(folder.layer).results, timeout=60_000)
    assert widget.outputs_for(folder.layer).results[None].provenance["mode"] == "mutual"
    folder.goto(here)
    qtbot.waitUntil(lambda: not widget.busy and None in widget.outputs_for(folder.layer).results, timeout=60_000)
    back = widget.outputs_for(folder.layer).results[None]
    assert back.provenance["mode"] == "mutual" and back.provenance["thresholds"]["prompt_threshold"] == 0.2
    np.testing.assert_array_equal(back.rough_map, scored.rough_map)
    folder.close()


def test_the_first_image_runs_through_clip_once_for_its_run_and_the_scoring(qtbot, make_widget, tmp_path):
    """The review's first image is segmented before the folder is scored; its Run keeps the patch tokens the
    scoring needs, so CLIP's tower runs once per image in all (it ran twice for the first before)."""
    from napari_clipsam.testing import tiny_engine
    from napari_clipsam.widget.workers import threshold_settings

    engine = tiny_engine(seed=0)  # its own caches and counts: nothing another test segmented is in them
    viewer, widget = make_widget(engine=engine)
    folder = widget.folder
    assert folder.open(_synthetic_folder(tmp_path / "images", n=5, size=48), tmp_path / "labels")
    folder.ordering.table.file_order.setChecked(True)
    outputs = _first_result(qtbot, widget, folder)
    assert outputs.results[None].provenance["mode"] != "mutual"
    assert engine.cache_info().clip_features.misses == 1
    qtbot.waitUntil(lambda: folder.ordering.scored and not widget.busy, timeout=60_000)
    info = engine.cache_info()
    assert info.clip_features.misses == 5, info.clip_features  # one CLIP pass per image of the folder
    assert widget.outputs_for(folder.layer).results[None].provenance["mode"] == "mutual"
    # the kept tokens are the ones a folder pass computes: an engine that computes every image itself (it must
    # not read the feature store the dock's engine just wrote) gives the same map
    images = [folder.session.read_image(i) for i in range(5)]
    fresh = tiny_engine(seed=0, feature_cache_bytes=0).segment_folder(
        images, widget.object_name, settings=threshold_settings(*widget.thresholds))
    np.testing.assert_allclose(widget.outputs_for(folder.layer).results[None].rough_map,
                               fresh[folder.session.index].rough_map, atol=1e-6)
    folder.close()
