"""Hand edits win: how new ClipSAM masks are merged into a masks plane a person may have corrected (no Qt).

Per frame, :class:`FrameMasks` remembers what ClipSAM last wrote (``written``), the pixels a person changed
(``edited``: every pixel a stroke of theirs wrote, read from the Labels layer's paint events by
:func:`stroke_pixels` — an erase that puts back ClipSAM's own value is still a correction — plus every pixel
found to differ from ``written``, accumulated until the person discards their corrections) and the layer instance id of each prompt component. :func:`merge_result` computes the
plane after a refine or a new Run:

- pixels a person painted, erased or filled, and every pixel of a locked instance, never change;
- a component whose prompts did not change keeps its pixels and its id, hence its class;
- a changed component keeps its old id (and class) when its new mask overlaps its old pixels, and is drawn only
  over background or its own old pixels; a new component gets a fresh id; a removed component's pixels are
  cleared (where nobody edited them).

Components are identified by their prompts (boxes, points and labels, rounded to 1/100 px).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

Signature = tuple


def component_signatures(prompts, decimals: int = 2) -> list[Signature]:
    """One hashable signature per prompt component of a :class:`~napari_clipsam.mmr.prompts.Prompts`.

    Negative points shared by every component (component -1) are part of every signature; identical prompt
    sets get an occurrence number so that signatures stay unique.
    """
    pts = np.round(np.asarray(prompts.points, np.float64).reshape(-1, 2), decimals)
    labels = np.asarray(prompts.point_labels).reshape(-1)
    boxes = np.round(np.asarray(prompts.boxes, np.float64).reshape(-1, 4), decimals)
    pc, bc = np.asarray(prompts.point_component), np.asarray(prompts.box_component)
    shared = tuple(sorted((float(r), float(c), int(lb)) for (r, c), lb, k in zip(pts, labels, pc) if k < 0))
    seen: Counter = Counter()
    out = []
    for k in range(prompts.num_components):
        sig = (tuple(sorted(tuple(map(float, b)) for b, j in zip(boxes, bc) if j == k)),
               tuple(sorted((float(r), float(c), int(lb)) for (r, c), lb, j in zip(pts, labels, pc) if j == k)),
               shared)
        out.append((sig, seen[sig]))
        seen[sig] += 1
    return out


def stroke_pixels(atoms, full_shape: tuple[int, ...], stacked: bool) -> dict:
    """The pixels one napari Labels ``paint`` event wrote, per frame: ``{frame: (H, W) bool}``.

    ``atoms`` is the event's ``value``: the list of edits napari applied as one undo step. Two kinds are read
    (what napari 0.9 emits): a mask edit (an object with ``slice_key``, a tuple of slices, and ``mask``, a bool
    array over that box or None when the whole box changed), and the ``(indices, old_values, new_values)``
    triple of ``Labels.data_setitem`` (numpy fancy indices). Frame is None for a 2-D layer.
    """
    touched = np.zeros(full_shape, bool)
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            region = touched[tuple(key)]
            mask = getattr(atom, "mask", None)
            region |= True if mask is None else np.broadcast_to(np.asarray(mask, bool), region.shape)
        elif isinstance(atom, tuple) and len(atom) == 3:
            touched[tuple(np.asarray(i) for i in atom[0])] = True
        else:
            raise TypeError(f"unknown napari paint record {type(atom).__name__}: the installed napari records "
                            "hand edits in a way this plugin does not read; please report it with napari's version")
    if not stacked:
        return {None: touched} if touched.any() else {}
    return {int(f): touched[f] for f in np.flatnonzero(touched.reshape(len(touched), -1).any(1))}


@dataclass
class FrameMasks:
    """What ClipSAM wrote into one frame of the masks layer, and what the person changed since.

    Attributes:
        written: (H, W) int32, the plane as ClipSAM last meant it.
        edited: (H, W) bool, pixels the person changed (painted, erased, filled, deleted).
        components: prompt-component signature → instance id in the layer.
        extras: ids of mask pieces no component covers (the rough map alone reached τ_mask there).
    """

    written: np.ndarray
    edited: np.ndarray
    components: dict = field(default_factory=dict)
    extras: set = field(default_factory=set)

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> FrameMasks:
        return cls(np.zeros(shape, np.int32), np.zeros(shape, bool))

    def note_stroke(self, pixels: np.ndarray) -> None:
        """Mark the pixels a person's stroke wrote (from the layer's paint event) as edited, whatever they hold."""
        self.edited |= pixels

    def note_edits(self, current: np.ndarray) -> np.ndarray:
        """Add the pixels where ``current`` differs from what ClipSAM wrote to ``edited``; return ``edited``."""
        self.edited |= np.asarray(current) != self.written
        return self.edited

    def forget_instance(self, instance_id: int) -> None:
        """Stop tracking one instance as ClipSAM's (locked or deleted objects): no refine will touch its id."""
        self.components = {s: i for s, i in self.components.items() if i != instance_id}
        self.extras.discard(instance_id)


@dataclass
class Merge:
    """The outcome of :func:`merge_result`: the new plane, the new state and the ids that appeared/vanished."""

    plane: np.ndarray
    state: FrameMasks
    next_id: int
    new_ids: list[int]
    removed_ids: list[int]


def merge_result(current: np.ndarray, state: FrameMasks, result, *, next_id: int,
                 locked: set[int] | frozenset = frozenset(), keep_extras: bool = False) -> Merge:
    """Merge ``result`` (a ClipSAMResult for this frame) into ``current`` (the plane as the layer holds it now).

    ``next_id`` is the first id free in the whole layer. ``keep_extras``: leave the pieces no component covers as
    they are (a refine, which changes prompts only); a new Run replaces them. ``state`` is not modified.
    """
    current = np.asarray(current, np.int32)
    edited = state.edited | (current != state.written)
    protected = edited | np.isin(current, list(locked)) if locked else edited
    inst = np.asarray(result.instances, np.int32)
    origin = np.asarray(result.instance_component, np.int32)
    sigs = component_signatures(result.prompts)

    def pixels(k: int) -> np.ndarray:
        return np.isin(inst, np.flatnonzero(origin == k) + 1)

    kept = {sig: state.components[sig] for sig in sigs if sig in state.components}
    stale = {i for sig, i in state.components.items() if sig not in kept} - set(locked)
    changed = [k for k, sig in enumerate(sigs) if sig not in kept]
    masks = {k: pixels(k) for k in changed}
    ids: dict[int, int] = {}
    free, new_ids = set(stale), []
    for k in sorted(changed, key=lambda j: -int(masks[j].sum())):
        overlap = {i: int(np.count_nonzero(masks[k] & (state.written == i))) for i in free}
        best = max(overlap, key=overlap.get, default=None)
        if best is not None and overlap[best] > 0:
            ids[k] = best
            free.discard(best)
        else:
            ids[k], next_id = next_id, next_id + 1
            new_ids.append(ids[k])
    plane = current.copy()
    clear = set(stale) if keep_extras else set(stale) | set(state.extras)
    if clear:
        plane[np.isin(state.written, list(clear)) & ~protected] = 0
    for k in changed:
        draw = masks[k] & ~protected & (plane == 0)
        plane[draw] = ids[k]
    extras = set(state.extras) if keep_extras else set()
    if not keep_extras:
        for e in np.flatnonzero(origin < 0) + 1:
            draw = (inst == e) & ~protected & (plane == 0)
            if draw.any():
                plane[draw] = next_id
                extras.add(next_id)
                new_ids.append(next_id)
                next_id += 1
    written = state.written.copy()
    written[~protected] = plane[~protected]
    components = {**kept, **{sigs[k]: ids[k] for k in changed}}
    present = set(np.unique(plane).tolist())
    removed = sorted(i for i in (set(state.components.values()) | set(state.extras)) - set(components.values())
                     - extras if i not in present)
    return Merge(plane, FrameMasks(written, edited, components, extras), next_id, new_ids, removed)
