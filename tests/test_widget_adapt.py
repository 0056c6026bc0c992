"""Issue 21 item 4 (dock): *Adapt to this product* trains the UMCI head on a review's accepted labels.

Through the dock opened from the manifest (viewer first): no labels folder (a clear status line), Cancel (no file
left), a finished adaptation (checkpoint + provenance next to the labels, the status line names it, the next Run's
provenance names its SHA-256), and a second adaptation that never replaces the first.
"""
from __future__ import annotations

import hashlib
import json

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.review import QASession  # noqa: E402
from napari_clipsam.training.adapt import adapt_settings  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

WAIT_MS = 120_000


def plugin_viewer(viewer):
    dock, opened = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    proxy = opened.viewer
    viewer.window.remove_dock_widget(dock)
    return proxy


def accepted_review(root, n_defect=3, n_good=1):
    """A review in which a person accepted ``n_defect`` images with their exact defect masks and ``n_good`` good."""
    inp, out = root / "in", root / "labels"
    inp.mkdir()
    truth = {}
    for i in range(n_defect + n_good):
        image, mask = synthetic_image("metal", "scratch" if i < n_defect else None, 64, seed=100 + i)
        iio.imwrite(inp / f"p{i:02d}.png", image)
        truth[f"p{i:02d}.png"] = mask
    session = QASession(inp, out)
    for i, path in enumerate(session.images):
        session.goto(i)
        session.accept(truth[path.name].astype(np.int32), formats=["mvtec"], provenance={"object_name": "metal"})
    return inp, out


def test_adapt_to_this_product_from_the_dock(qtbot, make_napari_viewer, shared_engine, tmp_path):
    inp, labels = accepted_review(tmp_path)
    viewer = make_napari_viewer()
    widget = ClipSAMWidget(plugin_viewer(viewer), engine=shared_engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.adapt.settings = adapt_settings(epochs=2)
    c = widget.c
    c.object_name.setText("metal")

    c.qa_adapt.click()  # no labels folder yet
    assert not widget.busy and "Adapting needs a folder review's labels" in widget.status, widget.status

    c.qa_output.setText(str(labels))
    c.qa_adapt.click()
    assert widget.busy and not c.run.isEnabled()
    c.cancel.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.status == "Cancelled.", widget.status
    assert not list(labels.glob("*umci*")) and not list(labels.glob(".*partial*"))  # nothing half-made
    assert widget.engine is shared_engine

    c.qa_adapt.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    ckpt = labels / "umci_adapted.pt"
    assert ckpt.is_file(), widget.status
    assert widget.status.startswith("rough map: adapted head umci_adapted.pt, 4 images"), widget.status
    doc = json.loads((labels / "umci_adapted.json").read_text())
    assert doc["checkpoint"] == "umci_adapted.pt" and doc["training_data"]["images"] == 4
    assert c.umci.text() == str(ckpt) and widget.engine is not shared_engine and widget.engine.umci is not None
    assert shared_engine.umci is None  # the injected engine is not changed

    src = viewer.add_image(iio.imread(inp / "p00.png"), name="next")
    c.run.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    prov = widget.outputs_for(src).results[None].provenance
    assert prov["umci_weights"] == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert prov["mode"] == "umci" and prov["rough_map"] == "UMCI (trained)"

    first = ckpt.read_bytes()
    c.qa_adapt.click()  # again: a new name, the first checkpoint untouched
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert (labels / "umci_adapted-2.pt").is_file() and ckpt.read_bytes() == first
    assert "adapted head umci_adapted-2.pt" in widget.status
