"""The dock's Export tab, driven through its public controls: verified flags (issue 21 item 5)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from pycocotools.coco import COCO  # noqa: E402

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.export import COCO_VERIFIED_KEY  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

WAIT_MS = 20_000


@pytest.fixture
def dock(make_napari_viewer, shared_engine):
    viewer = make_napari_viewer()
    widget = ClipSAMWidget(viewer, engine=shared_engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.c.prompt_threshold.setValue(0.3)  # the tiny random CLIP's rough map peaks around 0.6
    widget.c.object_name.setText("machined part")
    return viewer, widget


def run(qtbot, widget):
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "Done" in widget.status, widget.status


def coco_flags(path) -> dict[int, bool]:
    coco = COCO(str(path))
    return {a["instance_id"]: a[COCO_VERIFIED_KEY] for a in coco.loadAnns(coco.getAnnIds())}


def test_dock_export_marks_locked_objects_verified(qtbot, dock, tmp_path):
    viewer, widget = dock
    src = viewer.add_image(synthetic_image("part", "crack", size=96, seed=1)[0], name="part")
    run(qtbot, widget)
    out = widget.outputs_for(src)
    ids = sorted(set(np.unique(out.masks.data).tolist()) - {0})
    widget.c.export_dir.setText(str(tmp_path / "ds"))
    widget.c.export.click()
    assert f"0 verified by you, {len(ids)} pseudo-label(s)" in widget.status, widget.status
    assert coco_flags(tmp_path / "ds/coco/annotations.json") == dict.fromkeys(ids, False)
    out.masks.selected_label = ids[0]
    widget.c.lock_object.click()
    widget.c.overwrite.setChecked(True)
    widget.c.export.click()
    assert f"1 verified by you, {len(ids) - 1} pseudo-label(s)" in widget.status, widget.status
    assert coco_flags(tmp_path / "ds/coco/annotations.json") == {i: i == ids[0] for i in ids}
