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
