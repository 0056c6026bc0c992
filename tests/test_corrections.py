"""A person's corrections are never lost: painted, erased, deleted, locked and classified objects survive
refines and re-runs byte for byte where no prompt changed (napari widget under Xvfb, tiny real models)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_clipsam.data.synthetic import synthetic_image  # noqa: E402
from napari_clipsam.testing import tiny_engine  # noqa: E402
from napari_clipsam.widget import ClipSAMWidget  # noqa: E402

WAIT_MS = 20_000


@pytest.fixture
def session(qtbot, make_napari_viewer, shared_engine):
    """A widget that ran on an image with two CLIP components (two instances)."""
    viewer = make_napari_viewer()
    widget = ClipSAMWidget(viewer, engine=shared_engine)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    widget.c.prompt_threshold.setValue(0.5)  # two components on this image with the tiny random CLIP
    widget.c.object_name.setText("machined part")
    src = viewer.add_image(synthetic_image("part", "crack", size=96, seed=1)[0], name="part")
    run(qtbot, widget)
    out = widget.outputs_for(src)
    assert len(np.unique(out.masks.data)) - 1 >= 2, "the scenario needs two instances"
    return viewer, widget, out


def run(qtbot, widget):
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    loop = widget.correction_for(widget.picker.current)
    if loop is not None:
        qtbot.waitUntil(lambda: not loop.busy, timeout=WAIT_MS)
    assert "Done" in widget.status, widget.status


def settle(qtbot, loop):
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not loop.busy, timeout=WAIT_MS)


def component_point(out, instance_id):
    """Row index of the CLIP point inside instance ``instance_id``."""
    plane = out.masks.data
    for i, (r, c) in enumerate(np.asarray(out.prompts.data)):
        if plane[int(round(r)), int(round(c))] == instance_id:
            return i
    raise AssertionError(f"no prompt point on instance {instance_id}")


def background_block(plane, size=3):
    """Top-left corner of a size×size block of background at least 4 px away from every instance."""
    from scipy import ndimage as ndi

    far = ndi.distance_transform_edt(plane == 0) > 4 + size
    r, c = np.argwhere(far)[len(np.argwhere(far)) // 2]
    return int(r), int(c)


def hand_edit(out, widget):
    """Paint a new object, erase part of instance A, delete instance B's neighbour... and classify A."""
    masks = out.masks
    plane = masks.data
    ids = [int(i) for i in np.unique(plane) if i]
    a, b = ids[0], ids[1]
    # paint a new object (id 50) with a 3-px brush, as the paint tool does
    r, c = background_block(plane)
    masks.brush_size = 3
    masks.selected_label = 50
    masks.paint((r, c), 50)
    # erase one pixel-disc of A
    ar, ac = np.argwhere(plane == a)[0]
    masks.paint((int(ar), int(ac)), 0)
    # give A a class
    widget.classes.add("scratch")
    out.set_instance_class(a, "scratch")
    return a, b, (r, c)


def test_hand_edits_survive_a_refine_of_another_component(qtbot, session):
    viewer, widget, out = session
    loop = widget.correction_for(out.source)
    a, b, painted_at = hand_edit(out, widget)
    before = out.masks.data.copy()
    edited = out.frames[None].note_edits(before).copy()
    assert edited.sum() > 0
    # move B's point by two pixels: only B may change
    i = component_point(out, b)
    data = np.asarray(out.prompts.data).copy()
    data[i] += 2.0
    out.prompts.data = data
    settle(qtbot, loop)
    after = out.masks.data
    b_region = (before == b) | (after == b)
    assert np.array_equal(after[~b_region], before[~b_region]), "pixels outside the edited component changed"
    assert np.array_equal(after[edited], before[edited]), "a hand edit was overwritten"
    assert after[painted_at] == 50
    assert out.instance_classes()[a] == "scratch"


def test_an_erased_patch_stays_erased_after_an_unrelated_prompt_edit(qtbot, session):
    """Paint a patch where the next refine would draw, erase it (back to ClipSAM's own 0s), then move another
    component's point: every erased pixel stays 0. The strokes come from the layer's paint events, so an erase
    that restores ClipSAM's plane is still the person's correction."""
    from napari_clipsam.widget.hand_edits import merge_result
    from napari_clipsam.widget.workers import refine_job

    viewer, widget, out = session
    loop = widget.correction_for(out.source)
    plane = out.masks.data.copy()
    b = [int(i) for i in np.unique(plane) if i][1]
    i = component_point(out, b)
    moved = np.asarray(out.prompts.data).copy()
    moved[i] += 2.0
    # where the refine after this move would draw into the background (what the old code refilled)
    points, labels, boxes = out.read_prompts()[None]
    points = points.copy()
    points[i] += 2.0
    job = refine_job(widget.engine, [(None, out.results[None], (points, labels, boxes))], widget.thresholds)
    predicted = job(lambda *a: None, lambda: False)[None]
    merged = merge_result(plane, out.frames[None], predicted, next_id=out.next_id, locked=out.locked,
                          keep_extras=True)
    grows = (merged.plane != 0) & (plane == 0)
    assert grows.any(), "the scenario needs a refine that draws into the background"
    r, c = np.argwhere(grows)[len(np.argwhere(grows)) // 2]
    masks = out.masks
    masks.brush_size = 7
    masks.paint((int(r), int(c)), 77)
    patch = masks.data == 77
    masks.paint((int(r), int(c)), 0)  # the eraser over the same disc
    erased = patch & (plane == 0)
    assert (erased & grows).any() and np.array_equal(masks.data, np.where(patch, 0, plane))
    # the same again through data_setitem (a plugin's or script's edit), elsewhere in the growth
    rest = grows & ~patch
    if rest.any():
        idx = np.nonzero(rest)
        masks.data_setitem(idx, 78)
        masks.data_setitem(idx, 0)
        erased |= rest
    out.prompts.data = moved  # the unrelated prompt edit
    settle(qtbot, loop)
    after = out.masks.data
    assert "Refined" in widget.status, widget.status
    assert not after[erased].any(), f"a refine refilled {int(np.count_nonzero(after[erased]))} of " \
                                    f"{int(erased.sum())} erased pixels"
    assert int(out.frames[None].edited[erased].sum()) == int(erased.sum())


def test_delete_lock_and_rerun_keep_the_persons_work(qtbot, session):
    viewer, widget, out = session
    loop = widget.correction_for(out.source)
    a, b, painted_at = hand_edit(out, widget)
    # delete B with the dock's button (its pixels and prompts go)
    out.masks.selected_label = b
    widget.c.delete_object.click()
    assert not (out.masks.data == b).any()
    assert b not in out.instance_classes()
    settle(qtbot, loop)
    # lock A, then add a user point and Run again
    out.masks.selected_label = a
    widget.c.lock_object.click()
    assert a in out.locked
    out.prompts.add([5.0, 5.0])
    settle(qtbot, loop)
    snapshot = out.masks.data.copy()
    edited = out.frames[None].note_edits(snapshot).copy()
    run(qtbot, widget)
    settle(qtbot, loop)
    after = out.masks.data
    assert "Kept your corrections" in widget.status, widget.status
    assert np.array_equal(after[edited], snapshot[edited]), "a hand edit was lost by Run"
    assert np.array_equal(after == a, snapshot == a), "a locked object changed"
    assert not (after == b).any(), "a deleted object came back"
    assert after[painted_at] == 50
    assert out.instance_classes()[a] == "scratch"
    sources = list(out.prompts.features["source"].astype(str))
    assert "user" in sources, "the person's point was dropped by Run"


def test_fill_with_zero_is_not_undone_by_refine(qtbot, session):
    viewer, widget, out = session
    loop = widget.correction_for(out.source)
    ids = [int(i) for i in np.unique(out.masks.data) if i]
    r, c = np.argwhere(out.masks.data == ids[0])[0]
    out.masks.fill((int(r), int(c)), 0)
    erased = ~(out.masks.data == ids[0]).any()
    widget.refine()
    settle(qtbot, loop)
    assert erased and not (out.masks.data == ids[0]).any()


def test_discard_corrections_restores_clipsam_masks_and_undoes(qtbot, session):
    viewer, widget, out = session
    written = out.masks.data.copy()
    hand_edit(out, widget)
    edited = out.masks.data.copy()
    assert widget.discard_corrections() > 0
    assert np.array_equal(out.masks.data, written)
    out.masks.undo()
    assert np.array_equal(out.masks.data, edited)


def test_undo_after_the_next_image_in_a_review_does_not_bring_back_the_previous_labels(session):
    """The next image gets a new masks layer (napari has no public call to clear a layer's undo history), in the
    old one's place in the layer list: Ctrl+Z never pastes one image's labels onto another."""
    viewer, widget, out = session
    position = list(viewer.layers).index(out.masks)
    hand_edit(out, widget)  # undo history: the run's labels, then the person's strokes
    out.source.data = synthetic_image("part", "crack", size=96, seed=2)[0]  # the review's next image, same layer
    widget.restart_outputs(out.source)
    assert list(viewer.layers).index(out.masks) == position and out.masks.name == "part masks"
    for _ in range(4):
        assert not out.masks.data.any(), "undo brought back labels of the previous image"
        out.masks.undo()


def test_refine_job_re_embeds_a_result_made_by_another_engine(shared_engine):
    """After a preset/weights change the widget refines older results on the new engine's SAM (no error)."""
    from napari_clipsam.widget.workers import refine_job

    image = synthetic_image("part", "crack", size=96, seed=1)[0]
    old = shared_engine.segment(image, "machined part")
    other = tiny_engine(seed=1)
    prompts = (np.array([[40.0, 40.0]], np.float32), np.array([1], np.int32), np.zeros((0, 4), np.float32))
    job = refine_job(other, [(None, old, prompts)], read_image=lambda frame: image)
    refined = job(lambda *a: None, lambda: False)[None]
    direct = other.refine(other.segment(image, "machined part"), *prompts)
    assert np.array_equal(refined.instances, direct.instances)
    assert refined.provenance["sam_weights"] == direct.provenance["sam_weights"]


def test_paint_events_of_a_stack_mark_the_painted_frame_only():
    """napari's paint records (brush masks and data_setitem triples) are read per frame, for the exact pixels."""
    from napari.layers import Labels

    from napari_clipsam.widget.hand_edits import stroke_pixels

    layer = Labels(np.zeros((3, 20, 20), np.int32))
    seen = []
    layer.events.paint.connect(lambda e: seen.append(stroke_pixels(e.value, layer.data.shape, True)))
    layer.brush_size = 5
    layer.paint((1, 10, 10), 4)
    layer.data_setitem((np.array([2, 2]), np.array([0, 3]), np.array([1, 4])), 9)
    assert list(seen[0]) == [1] and np.array_equal(seen[0][1], layer.data[1] == 4)
    assert list(seen[1]) == [2] and np.argwhere(seen[1][2]).tolist() == [[0, 1], [3, 4]]
