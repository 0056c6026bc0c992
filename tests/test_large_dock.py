"""Large images in the dock (issue 24): the rough map is shown at full resolution, as a pyramid over the
engine's own array (no copy per layer), and the τ_prompt preview follows it level by level."""
from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from napari_clipsam.widget.pyramid import PYRAMID_MIN_SIDE, level0, max_halve, needs_pyramid, rough_pyramid


def test_pyramid_levels_keep_a_small_hot_spot_and_level0_is_the_map():
    rng = np.random.default_rng(0)
    rough = rng.random((4101, 3001), np.float32) * 0.2
    rough[2000:2002, 1500:1503] = 0.97  # a 2×3-px defect
    levels = rough_pyramid(rough)
    assert levels[0] is rough
    assert max(levels[-1].shape) <= PYRAMID_MIN_SIDE
    for a, b in zip(levels, levels[1:]):
        assert b.shape == ((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2) and b.dtype == np.float32
        assert float(b.max()) == float(a.max())  # max-halving: the hot spot survives every level
    # each coarse pixel is the max of its 2×2 block
    a = rng.random((5, 7), np.float32)
    b = max_halve(a)
    assert b[1, 2] == a[2:4, 4:6].max() and b[2, 3] == a[4, 6]
    assert needs_pyramid((5000, 4000)) and not needs_pyramid((2048, 2048))
    assert level0(levels) is rough or np.shares_memory(level0(levels), rough)


@pytest.fixture
def outputs(make_napari_viewer):
    from napari_clipsam.widget.layers import OutputLayers

    viewer = make_napari_viewer()
    shape = (5000, 4000)  # 20 MP
    source = viewer.add_image(np.zeros((8, 8), np.uint8), name="big")
    out = OutputLayers(viewer, source, None, shape)
    out._ensure_layers()
    return out


def test_large_rough_map_layer_is_a_pyramid_over_the_engine_map_with_bounded_memory(outputs):
    rng = np.random.default_rng(1)
    sizes = []
    for run in range(2):
        rough = rng.random(outputs.shape, np.float32)
        tracemalloc.start()
        outputs._set_rough({None: SimpleNamespace(rough_map=rough)})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sizes.append(peak / rough.nbytes)
        layer = outputs.rough
        assert layer.multiscale
        assert np.shares_memory(np.asarray(layer.data[0]), rough)  # level 0 is the engine's map, not a copy
        np.testing.assert_array_equal(np.asarray(layer.data[0]), rough)
    # the pyramid adds a third of the map; the old path copied it twice per Run (peak ≥ 2×)
    assert max(sizes) < 0.6, sizes


def test_small_rough_map_stays_plain_and_uncopied(make_napari_viewer):
    from napari_clipsam.widget.layers import OutputLayers

    viewer = make_napari_viewer()
    out = OutputLayers(viewer, viewer.add_image(np.zeros((8, 8), np.uint8), name="s"), None, (300, 200))
    out._ensure_layers()
    rough = np.random.default_rng(2).random((300, 200), np.float32)
    out._set_rough({None: SimpleNamespace(rough_map=rough)})
    assert not out.rough.multiscale and np.shares_memory(np.asarray(out.rough.data), rough)


def test_tau_preview_of_a_wide_image_is_a_pyramid_showing_the_rough_maps_regions(qtbot, make_widget):
    """Through the dock: a Run on a 300 × 4200 image (long side above 4096) gives a pyramid rough map whose
    level 0 is the result's map, and the τ preview thresholds every level."""
    from dock_helpers import WAIT_MS

    viewer, widget = make_widget(prompt_threshold=None)
    src = viewer.add_image(np.random.default_rng(3).integers(0, 255, (300, 4200, 3), dtype=np.uint8), name="wide")
    widget.c.prompt_threshold.setValue(0.99)
    widget.c.run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    outputs = widget.outputs_for(src)
    assert outputs.rough.multiscale
    np.testing.assert_array_equal(np.asarray(outputs.rough.data[0]), outputs.results[None].rough_map)
    widget.c.tau_preview.setChecked(True)
    rough = np.asarray(outputs.rough.data[0])
    tau = float(np.quantile(rough, 0.9))
    widget.c.prompt_threshold.setValue(round(tau, 3))
    tau = widget.c.prompt_threshold.value()
    (preview,) = [x for x in viewer.layers if x.name == "wide τ_prompt preview"]
    assert preview.multiscale and len(preview.data) == len(outputs.rough.data)
    for mask, level in zip(preview.data, outputs.rough.data):
        np.testing.assert_array_equal(np.asarray(mask) == 1, np.asarray(level) >= tau)
    assert np.asarray(preview.data[0]).any()


def test_the_blank_pyramid_has_the_levels_of_a_zero_map():
    from napari_clipsam.widget.pyramid import blank_pyramid, rough_pyramid

    for shape in [(4097, 3001), (2, 5000, 4096), (8193, 1025)]:
        made = rough_pyramid(np.zeros(shape, np.float32))
        blank = blank_pyramid(shape)
        assert [b.shape for b in blank] == [m.shape for m in made] and not any(b.any() for b in blank)
