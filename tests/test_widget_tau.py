"""Issue 22 item 4: a suggested τ_prompt from the rough map, and a live preview of what τ_prompt selects.

Through the dock from the manifest, in the user's order: a Run that finds nothing, the status line's suggestion,
*Suggest*, *preview* following the spin box, a Run with the suggested value.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from dock_helpers import STRICT_NAPARI, WAIT_MS  # noqa: E402

pytestmark = STRICT_NAPARI


def test_suggest_and_preview_tau_prompt(qtbot, make_widget, image):
    viewer, widget = make_widget(prompt_threshold=None)
    c = widget.c
    src = viewer.add_image(image, name="part")

    c.tau_suggest.click()  # nothing to suggest from yet
    assert widget.status.startswith("Run ClipSAM on this image first"), widget.status
    c.tau_preview.setChecked(True)
    assert "appears after the first Run" in widget.status
    assert not [x for x in viewer.layers if "preview" in x.name]

    c.prompt_threshold.setValue(0.99)  # the tiny random CLIP's rough map stays well below
    c.run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    hint = re.search(r"Lower τ_prompt \(e\.g\. to (\d\.\d+)\)", widget.status)
    assert hint, widget.status
    outputs = widget.outputs_for(src)
    (preview,) = [x for x in viewer.layers if x.name == "part τ_prompt preview"]
    assert not np.asarray(preview.data).any()  # nothing reaches 0.99
    active = viewer.layers.selection.active

    c.tau_suggest.click()
    tau = c.prompt_threshold.value()
    assert tau == pytest.approx(float(hint.group(1)))  # the value the status line proposed, now in the box
    assert widget.status.startswith(f"τ_prompt set to {tau:.3f}"), widget.status
    rough = np.asarray(outputs.rough.data)
    np.testing.assert_array_equal(np.asarray(preview.data) == 1, rough >= tau)
    assert np.asarray(preview.data).any() and preview.contour == 1
    assert viewer.layers.selection.active == active  # the preview does not take the selection
    assert preview.name not in [c.image.itemText(i) for i in range(c.image.count())]  # never a source

    c.prompt_threshold.stepDown()  # live: the box changes, the outlines follow
    lower = c.prompt_threshold.value()
    assert lower == pytest.approx(tau - 0.01)
    np.testing.assert_array_equal(np.asarray(preview.data) == 1, rough >= lower)
    assert widget.status.startswith(f"Preview at τ_prompt {lower:.3f}:") and "region(s)" in widget.status

    c.prompt_threshold.setValue(tau)
    c.run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status.startswith("Done") and "No defect region" not in widget.status, widget.status
    assert len(outputs.prompts.data) > 0

    c.tau_preview.setChecked(False)
    assert preview not in viewer.layers


def test_suggest_skips_a_tenth_that_holds_only_specks_and_the_status_says_why():
    """The strongest tenth of a map can be a speck the prompt step drops (smaller than min_component_px after
    the opening): Suggest then goes lower, to the first share of the range the engine's own prompt step keeps,
    and a Run that found nothing for that reason says so instead of blaming τ_mask."""
    from types import SimpleNamespace

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.mmr.prompts import prompts_from_map
    from napari_clipsam.widget.threshold_preview import suggested_prompt_threshold
    from napari_clipsam.widget.workers import why_nothing

    rough = np.zeros((64, 64), np.float32)
    rough[20:30, 20:30] = 0.75  # a 10×10 region
    rough[50, 50] = 1.0  # a one-pixel speck at the peak
    thresholds = ClipSAMConfig().thresholds()
    assert suggested_prompt_threshold(rough) == pytest.approx(0.9)  # range only: the speck
    tau = suggested_prompt_threshold(rough, thresholds=thresholds)
    assert tau == pytest.approx(0.7)  # a fifth (0.8) holds only the speck too; three tenths take the region
    assert len(prompts_from_map(rough, SimpleNamespace(**{**thresholds, "prompt_threshold": tau})).boxes) == 1
    found_nothing = SimpleNamespace(rough_map=rough, boxes=np.zeros((0, 4)),
                                    provenance={"thresholds": {**thresholds, "prompt_threshold": 0.9}})
    text = why_nothing([found_nothing])
    assert "only in specks smaller than min_component_px 16" in text and "e.g. to 0.700" in text, text
    assert "τ_mask" not in text
