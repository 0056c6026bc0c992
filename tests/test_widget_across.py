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


def test_score_across_maps_each_16_bit_layer_by_its_own_contrast_limits(qtbot, make_napari_viewer, shared_engine):
    """16-bit layers with different ranges: each is scored as a Run would see it (its own contrast limits), not
    through the first layer's (which turned the others white: the folder compared blank images)."""
    viewer = make_napari_viewer()
    widget = _dock(viewer, shared_engine)
    layers = []
    for i, im in enumerate(_images(5)):
        gray = im.mean(axis=-1)
        low, high = (900, 1800) if i == 0 else (17000, 48000)  # the first layer's range is far below the others'
        layers.append(viewer.add_image((low + gray * (high - low) / 255).astype(np.uint16), name=f"u16 {i}"))
    widget.c.across.setCurrentText("image layers")
    widget.c.across_run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.startswith("Mutual scoring: 5 images"), widget.status
    limits = [tuple(x.contrast_limits) for x in layers]
    expected = shared_engine.segment_folder([np.asarray(x.data) for x in layers], "metal plate",
                                            contrast_limits=limits)
    for layer, want in zip(layers, expected):
        got = widget.outputs_for(layer).results[None]
        assert got.image_key == want.image_key, layer.name  # the same 8-bit image the engine saw per layer
        np.testing.assert_allclose(got.rough_map, want.rough_map, atol=1e-6)
    one = shared_engine.segment_folder([np.asarray(x.data) for x in layers], "metal plate",
                                       contrast_limits=limits[0])  # the old way: every layer by the first's limits
    assert any(a.image_key != b.image_key for a, b in zip(one[1:], expected[1:]))
    from napari_clipsam.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="2 pairs for 5 images"):
        shared_engine.segment_folder([np.asarray(x.data) for x in layers], "metal plate", contrast_limits=limits[:2])
