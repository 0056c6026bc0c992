"""Actions on whole objects (instances) of one source's masks layer: delete, lock, discard corrections.

All pixel changes go through ``Labels.data_setitem`` inside one history block, so each action is one Ctrl+Z.
Deleting or locking an object also removes the prompts that made it, so no refine brings it back or redraws it.
"""
from __future__ import annotations

import numpy as np

from .hand_edits import FrameMasks
from .boxes import Frame, corners_to_box
from .layers import OutputLayers


def _prompt_rows(outputs: OutputLayers, frame: Frame, signature) -> tuple[list[int], list[int]]:
    """Indices of the points and boxes (in their layers) that make the component with ``signature``."""
    (boxes, points, _shared), _occurrence = signature
    want_pts, want_boxes = set(points), set(boxes)
    pts, bxs = [], []
    layer = outputs.prompts
    if layer is not None and len(layer.data):
        labels = layer.features["label"].astype(str).to_numpy()
        for i, p in enumerate(np.asarray(layer.data)):
            if outputs.stacked and int(np.round(p[0])) != frame:
                continue
            key = (float(np.round(p[-2], 2)), float(np.round(p[-1], 2)), 0 if labels[i] == "negative" else 1)
            if key in want_pts:
                pts.append(i)
    layer = outputs.boxes
    if layer is not None:
        for i, vertices in enumerate(layer.data):
            f, box = corners_to_box(vertices, outputs.stacked)
            if f == frame and tuple(float(v) for v in np.round(box, 2)) in want_boxes:
                bxs.append(i)
    return pts, bxs


def _drop_prompts_of(outputs: OutputLayers, frame: Frame, instance_id: int) -> int:
    state = outputs.frames.get(frame)
    sigs = [s for s, i in (state.components.items() if state else ()) if i == instance_id]
    removed = 0
    for sig in sigs:
        pts, bxs = _prompt_rows(outputs, frame, sig)
        if pts:
            outputs.prompts.selected_data = set(pts)
            outputs.prompts.remove_selected()
        if bxs:
            outputs.boxes.selected_data = set(bxs)
            outputs.boxes.remove_selected()
        removed += len(pts) + len(bxs)
    return removed


def delete_object(outputs: OutputLayers, frame: Frame, instance_id: int) -> int:
    """Erase one instance from a frame (one undo step) and remove its prompts. Returns the pixels erased."""
    if outputs.masks is None or instance_id <= 0:
        return 0
    plane = outputs.plane(frame)
    where = np.nonzero(plane == instance_id)
    _drop_prompts_of(outputs, frame, instance_id)
    if where[0].size:
        index = where if frame is None else (np.full(where[0].size, frame), *where)
        with outputs.masks.block_history():
            outputs.masks.data_setitem(index, 0)
    state = outputs.frames.get(frame)
    if state is not None:
        state.note_edits(outputs.plane(frame))  # the erased pixels are the person's: no refine redraws them
        state.forget_instance(instance_id)
    outputs.locked.discard(instance_id)
    if not outputs.stacked or not (outputs.masks.data == instance_id).any():
        table = outputs.instance_classes()
        table.pop(instance_id, None)
        outputs.set_instance_classes(table)
    return int(where[0].size)


def lock_object(outputs: OutputLayers, frame: Frame, instance_id: int) -> bool:
    """Commit one instance: its pixels never change again (until unlocked) and its prompts are removed."""
    if outputs.masks is None or instance_id <= 0 or not (outputs.plane(frame) == instance_id).any():
        return False
    _drop_prompts_of(outputs, frame, instance_id)
    outputs.locked.add(int(instance_id))
    for state in outputs.frames.values():
        state.forget_instance(instance_id)
    outputs.masks.metadata["clipsam_locked"] = sorted(outputs.locked)
    return True


def unlock_object(outputs: OutputLayers, instance_id: int) -> bool:
    if instance_id not in outputs.locked:
        return False
    outputs.locked.discard(instance_id)
    outputs.masks.metadata["clipsam_locked"] = sorted(outputs.locked)
    return True


def discard_corrections(outputs: OutputLayers, frame: Frame) -> int:
    """Put back what ClipSAM last wrote in a frame (one undo step) and forget the hand edits and locks there."""
    state = outputs.frames.get(frame)
    if state is None or outputs.masks is None:
        return 0
    plane = np.asarray(outputs.plane(frame))
    changed = np.nonzero(plane != state.written)
    if changed[0].size:
        index = changed if frame is None else (np.full(changed[0].size, frame), *changed)
        with outputs.masks.block_history():
            outputs.masks.data_setitem(index, state.written[changed])
    outputs.frames[frame] = FrameMasks(state.written.copy(), np.zeros_like(state.edited), dict(state.components),
                                       set(state.extras))
    outputs.locked -= set(np.unique(state.written).tolist())
    outputs.masks.metadata["clipsam_locked"] = sorted(outputs.locked)
    return int(changed[0].size)


class ObjectActions:
    """The dock's Delete object, Lock object and Discard corrections, on the chosen image's shown frame.

    Args:
        current: returns the chosen image's OutputLayers (or None). status: shows a message.
        changed: called after an action changed the objects (the object table refreshes).
        quiet_refine: returns the chosen image's CorrectionLoop (or None); an action that removes prompts tells
            it that the refine this starts must leave the action's message on the status line.
    """

    def __init__(self, current, status, changed, quiet_refine=lambda: None):
        self._current, self._status, self._changed, self._loop = current, status, changed, quiet_refine

    def _quiet(self) -> None:
        loop = self._loop()
        if loop is not None:
            loop.quiet_next()

    def _seen(self, outputs, frame) -> int:
        """How many objects the shown frame holds now (what the person counts on the canvas)."""
        plane = np.asarray(outputs.plane(frame))
        return int(np.count_nonzero(np.unique(plane[plane > 0])))

    def selected(self):
        """(outputs, frame, instance id) of the label selected in the masks layer, or None (with a message)."""
        outputs = self._current()
        if outputs is None or outputs.masks is None:
            self._status("Run ClipSAM on this image first.")
            return None
        label = int(outputs.masks.selected_label)
        frame = outputs.displayed_frame()
        if label <= 0 or not (outputs.plane(frame) == label).any():
            self._status("Select an object first: pick its label in the masks layer (or click it with the "
                         "colour picker), or click its row in the Objects table.")
            return None
        return outputs, frame, label

    def delete(self) -> int:
        picked = self.selected()
        if picked is None:
            return 0
        n = delete_object(*picked)
        self._quiet()
        self._changed()
        self._status(f"Deleted object {picked[2]} ({n} pixels); {self._seen(*picked[:2])} object(s) left. "
                     "Ctrl+Z on the masks layer brings its pixels back.")
        return n

    def lock(self) -> bool:
        picked = self.selected()
        if picked is None:
            return False
        outputs, frame, label = picked
        if unlock_object(outputs, label):
            self._changed()
            self._status(f"Object {label} unlocked: a Run or refine may change it again (its prompts were removed "
                         "when it was locked: add points to reshape it). Lock it again with the same button.")
            return False
        lock_object(outputs, frame, label)
        self._quiet()
        self._changed()
        self._status(f"Object {label} locked ({self._seen(outputs, frame)} object(s) in this frame): no refine or "
                     "Run will change it. The button now unlocks it.")
        return True

    def discard(self) -> int:
        outputs = self._current()
        if outputs is None or outputs.masks is None:
            self._status("Run ClipSAM on this image first.")
            return 0
        n = discard_corrections(outputs, outputs.displayed_frame())
        self._changed()
        self._status(f"Discarded hand corrections: {n} pixel(s) back to ClipSAM's masks (Ctrl+Z undoes it).")
        return n
