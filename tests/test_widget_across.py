"""Issue 20 (dock mode): folder mutual scoring over the viewer's image layers or a stack's frames, from the dock.

Through the dock opened from the manifest (viewer first): too few images (a status line that says how many are
needed), ≥ 5 image layers, a 5-frame stack, and Cancel (nothing shown).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

WAIT_MS = 60_000


def plugin_viewer(viewer):
    dock, opened = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    proxy = opened.viewer
    viewer.window.remove_dock_widget(dock)
    return proxy


def _dock(viewer, engine):
    widget = ClipSAMWidget(plugin_viewer(viewer), engine=engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.c.object_name.setText("metal plate")
    return widget


def _images(n):
    kinds = ["scratch", "good", "hole", "good", "scratch", "good"]
    return [synthetic_image("metal", kinds[i % len(kinds)], size=64, seed=i)[0] for i in range(n)]


def test_score_across_image_layers(qtbot, make_napari_viewer, shared_engine):
    viewer = make_napari_viewer()
    widget = _dock(viewer, shared_engine)
    c = widget.c
    layers = [viewer.add_image(im, name=f"plate {i}") for i, im in enumerate(_images(4))]
    c.across.setCurrentText("image layers")
    c.across_run.click()
    assert not widget.busy
    assert "at least 5 images; there are 4 image layers" in widget.status, widget.status
    assert "normal references" in widget.status

    layers.append(viewer.add_image(_images(5)[4], name="plate 4"))
    c.across_run.click()
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.startswith("Mutual scoring: 5 images"), widget.status
    singles = [shared_engine.segment(np.asarray(x.data), "metal plate") for x in layers]
    fused = []
    for layer in layers:
        outputs = widget.outputs_for(layer)
        assert outputs is not None, layer.name
        result = outputs.results[None]
        assert result.provenance["mode"] == "mutual"
        assert result.provenance["folder"]["size"] == 5
        assert "image_score" in result.provenance
        np.testing.assert_allclose(np.asarray(outputs.rough.data), result.rough_map, atol=1e-6)
        fused.append(result.rough_map)
    # the maps are the folder's, not a single Run's: they differ from segment() of each image alone
    assert any(not np.allclose(f, s.rough_map) for f, s in zip(fused, singles))


def test_score_across_stack_frames_and_cancel(qtbot, make_napari_viewer, shared_engine):
    viewer = make_napari_viewer()
    widget = _dock(viewer, shared_engine)
    c = widget.c
    stack = viewer.add_image(np.stack(_images(5)), name="plates", rgb=True)
    c.image.setCurrentText("plates")
    c.across.setCurrentText("stack frames")

    c.across_run.click()
    assert widget.busy
    c.cancel.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status == "Cancelled.", widget.status
    assert widget.outputs_for(stack) is None  # nothing half-made is shown

    c.across_run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.startswith("Mutual scoring: 5 images"), widget.status
    outputs = widget.outputs_for(stack)
    assert sorted(outputs.results) == [0, 1, 2, 3, 4]
    assert all(r.provenance["mode"] == "mutual" and r.provenance["folder"]["size"] == 5
               for r in outputs.results.values())
    rough = np.asarray(outputs.rough.data)
    assert rough.shape[0] == 5
    for f in range(5):
        np.testing.assert_allclose(rough[f], outputs.results[f].rough_map, atol=1e-6)

    # "aligned parts" (Settings tab): the folder is scored with the aligned window, and the dock remembers it
    plain = {f: r.rough_map for f, r in outputs.results.items()}
    c.aligned.setChecked(True)
    c.across_run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    results = widget.outputs_for(stack).results
    assert all(r.provenance["folder"]["settings"]["window"] == 2 for r in results.values())
    assert any(not np.allclose(results[f].rough_map, plain[f]) for f in plain)
    from napari_clipsam.widget.settings import WidgetSettings

    assert WidgetSettings.load().aligned_parts
