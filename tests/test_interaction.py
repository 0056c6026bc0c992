"""What an annotator expects of the dock: negative points placed directly, prompts deleted from the dock, a
progress bar that never goes back, a run that stops when its image is removed."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, WAIT_MS, run_and_wait  # noqa: E402
from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402

pytestmark = STRICT_NAPARI


@pytest.fixture
def dock(make_widget, image):
    viewer, widget = make_widget(prompt_threshold=0.5)
    return viewer, widget, viewer.add_image(image, name="part")


def run(qtbot, widget):
    run_and_wait(qtbot, widget, done=False)


def test_negative_mode_places_negative_points_and_delete_from_dock(qtbot, dock):
    viewer, widget, src = dock
    run(qtbot, widget)
    out = widget.outputs_for(src)
    n = len(out.prompts.data)
    widget.c.negative.click()
    out.prompts.selected_data = {0}  # napari would copy the selected point's features to a new one
    out.prompts.add([5.0, 5.0])
    assert list(out.prompts.features["label"].astype(str))[-1] == "negative"
    assert list(out.prompts.features["source"].astype(str))[-1] == "user"
    widget.c.negative.click()
    out.prompts.add([6.0, 80.0])
    assert list(out.prompts.features["label"].astype(str))[-1] == "positive"
    out.prompts.selected_data = {n, n + 1}
    widget.c.delete_prompts.click()
    assert len(out.prompts.data) == n


def test_progress_bar_never_goes_backwards(qtbot, dock):
    viewer, widget, src = dock
    values = []
    widget.c.progress.valueChanged.connect(values.append)
    widget.c.all_frames.setChecked(False)
    run(qtbot, widget)
    assert values and values == sorted(values) and values[-1] == 100


def test_removing_the_image_cancels_its_run(qtbot, dock):
    viewer, widget, src = dock
    gate = {"open": False}
    engine = widget.engine

    class Slow:
        """The tiny engine, held at its first stage until the test lets it go (or the run is cancelled)."""

        def __getattr__(self, name):
            return getattr(engine, name)

        def segment(self, image, name, *, progress=None, cancelled=None, contrast_limits=None, settings=None):
            import time

            deadline = time.monotonic() + 10
            while not gate["open"] and not cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            return engine.segment(image, name, progress=progress, cancelled=cancelled,
                                  contrast_limits=contrast_limits, settings=settings)

    widget._engine = Slow()
    assert widget.run()
    viewer.layers.remove(src)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "was removed while ClipSAM ran: its run stopped" in widget.status, widget.status
    assert not widget.sessions()


def test_object_table_assigns_classes_and_colours_by_class(qtbot, dock):
    viewer, widget, src = dock
    run(qtbot, widget)
    out = widget.outputs_for(src)
    table = widget.c.objects
    ids = sorted(int(i) for i in np.unique(out.masks.data) if i)
    assert [int(table.item(r, 0).text()) for r in range(table.rowCount())] == ids
    widget.classes.add("scratch")
    table.selectRow(1)
    assert out.masks.selected_label == ids[1]
    table.cellWidget(1, 2).setCurrentText("scratch")
    assert out.instance_classes()[ids[1]] == "scratch" and out.instance_classes()[ids[0]] == "defect"
    widget.c.colour_by_class.setChecked(True)
    colour = out.masks.colormap.map(np.array(ids))
    assert not np.allclose(colour[0], colour[1]), "two classes drawn in one colour"
    widget.c.colour_by_class.setChecked(False)
    # a painted object appears in the table
    out.masks.selected_label = 60
    out.masks.paint((3, 3), 60)
    qtbot.wait(20)
    assert 60 in [int(table.item(r, 0).text()) for r in range(table.rowCount())]


def test_normal_references_from_selected_layers_reach_the_engine(qtbot, dock, tmp_path):
    viewer, widget, src = dock
    good = [synthetic_image("part", None, size=96, seed=s)[0] for s in (5, 6)]
    layers = [viewer.add_image(g, name=f"good {i}") for i, g in enumerate(good)]
    viewer.layers.selection = set(layers)
    widget.c.ref_layers.click()
    assert widget.references.images and "2 normal reference(s)" in widget.c.ref_info.text()
    viewer.layers.selection.active = src
    widget.select_source(src)
    run(qtbot, widget)
    assert "few-shot" in widget.status and "one of the normal references" not in widget.status, widget.status
    out = widget.outputs_for(src)
    assert "few-shot" in out.rough.metadata["clipsam"]["rough_map"]
    widget.select_source(layers[0])  # a reference segmented itself: its defects would count as normal
    run(qtbot, widget)
    assert "this image is one of the normal references" in widget.status, widget.status
    widget.select_source(src)
    widget.c.ref_clear.click()
    run(qtbot, widget)
    assert "few-shot" not in widget.status, widget.status
    # a folder with an unreadable file: the status names what was skipped
    import imageio.v3 as iio

    folder = tmp_path / "refs"
    folder.mkdir()
    iio.imwrite(folder / "ok.png", good[1])
    (folder / "broken.png").write_bytes(b"not a png")
    widget.references.add_folder(folder)
    assert "Skipped 1 unreadable file(s): broken.png" in widget.status, widget.status


def test_a_correction_after_the_engine_forgot_the_image_still_refines(qtbot, make_widget, image):
    """Results hold no SAM embedding: when the engine's cache (cache_bytes) has dropped the image's, the dock's
    refine embeds the layer's image again and gives what a refine on the cached embedding gives."""
    from napari_clipsam.testing import tiny_engine

    forgetful = tiny_engine(seed=0, cache_bytes=1, embedding_cache_bytes=0)  # keeps only the last entry
    viewer, widget = make_widget(engine=forgetful)
    src = viewer.add_image(image, name="part")
    run(qtbot, widget)
    out, loop = widget.outputs_for(src), widget.correction_for(src)
    forgetful.clear_caches("embedding")  # as if other images had pushed it out
    encoded = forgetful.cache_info().sam_embeddings.misses
    with qtbot.waitSignal(loop.refined, timeout=WAIT_MS):
        out.prompts.add([40.0, 40.0])
    assert forgetful.cache_info().sam_embeddings.misses == encoded + 1 and "Refined" in widget.status, widget.status
    got = out.results[None]
    want = tiny_engine(seed=0).refine(got, points=got.points, point_labels=got.point_labels, boxes=got.boxes,
                                      image=image)
    np.testing.assert_array_equal(got.final_map, want.final_map)
