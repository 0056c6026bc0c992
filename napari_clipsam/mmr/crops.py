"""SAM on crops at full resolution (issue 24): which crop of a large image each component is refined on.

Squashing a large image to SAM's input (1024 px for Meta's SAMs) shrinks a thin defect below SAM's mask
resolution: on a 4096×3072 image one of SAM's 256² low-resolution mask pixels covers 16 image pixels, so a 2-px
scratch can only get a blob. With crops, each prompt component is decoded on the embedding of a **window** of the
image around it, which SAM's input covers at full resolution (one image pixel per input pixel) when the window
is SAM's input size.

**Windows** lie on a fixed grid per level, so that components near each other share a window (one encoder run)
and a refine after an edit finds the window it was decoded on: level ``k`` has windows of side
``sam_size · 2**k`` image pixels (clipped to the image), starting every quarter side (:data:`WINDOW_STRIDE`), the
last ones ending on the image's border. The top level is the whole image (SAM's old squashed input).

**The region** a component's window must contain is its prompt box (the component's bounding box already grown by
``box_growth``) grown again by ``sam_crop_context`` × its size on every side, so SAM sees the defect with its
surroundings (:func:`crop_region`); a point-only component's region is its points' bounding box. A component gets
the smallest level with a window containing its region: among those, one whose embedding is cached, else the
one whose centre is nearest the region's centre (:func:`choose_window`). Coordinates are (row, col); boxes are
(row0, col0, row1, col1), end exclusive.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .prompts import Prompts

CROP_FORMAT = 1
"""Part of every crop embedding's key (:func:`crop_key`): bump when the crop geometry or its input changes."""
WINDOW_STRIDE = 0.25
"""Windows of one level start every this fraction of their side (any region up to 3/4 of the side fits one)."""

Box = tuple[int, int, int, int]


def crop_key(image_key: str, window: Box, shape: tuple[int, int]) -> str:
    """The cache key of SAM's embedding of ``window`` of image ``image_key`` (of ``shape``): the image's own key for
    the whole image (the squashed embedding), else the image key, :data:`CROP_FORMAT` and the window."""
    if tuple(window) == (0, 0, int(shape[0]), int(shape[1])):
        return image_key
    return f"{image_key}/sam-crop-v{CROP_FORMAT}/{','.join(str(int(v)) for v in window)}"


def _starts(length: int, side: int) -> list[int]:
    """Window starts along one axis: every :data:`WINDOW_STRIDE` of ``side``, the last ending at ``length``."""
    if side >= length:
        return [0]
    stride = max(1, int(round(side * WINDOW_STRIDE)))
    starts = list(range(0, length - side, stride))
    return starts + [length - side]


def level_windows(shape: tuple[int, int], side: int) -> list[Box]:
    """The windows of side ``side`` (clipped to the image) of an image of ``shape``, row-major."""
    h, w = int(shape[0]), int(shape[1])
    sh, sw = min(side, h), min(side, w)
    return [(r, c, r + sh, c + sw) for r in _starts(h, sh) for c in _starts(w, sw)]


def window_sides(shape: tuple[int, int], sam_size: int) -> list[int]:
    """The window sides from the finest level (``sam_size``: full resolution) to the first that covers the
    image (the whole image)."""
    sides, side = [], int(sam_size)
    while True:
        sides.append(side)
        if side >= max(shape):
            return sides
        side *= 2


def crop_region(box: np.ndarray | None, points: np.ndarray, context: float, shape: tuple[int, int]) -> Box:
    """The region (whole pixels, clipped to the image) a component's window must contain: its prompt ``box``
    grown by ``context`` × its height/width per side, or, without a box, the bounding box of its ``points``."""
    H, W = int(shape[0]), int(shape[1])
    if box is not None:
        r0, c0, r1, c1 = (float(v) for v in box)
        dr, dc = context * (r1 - r0), context * (c1 - c0)
        r0, c0, r1, c1 = r0 - dr, c0 - dc, r1 + dr, c1 + dc
    else:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        r0, c0 = pts.min(axis=0)
        r1, c1 = pts.max(axis=0) + 1.0
    r0, c0 = max(0, math.floor(r0)), max(0, math.floor(c0))
    r1, c1 = min(H, math.ceil(r1)), min(W, math.ceil(c1))
    return r0, c0, max(r1, r0 + 1), max(c1, c0 + 1)


def _contains(window: Box, region: Box) -> bool:
    return window[0] <= region[0] and window[1] <= region[1] and region[2] <= window[2] and region[3] <= window[3]


def choose_window(region: Box, shape: tuple[int, int], sam_size: int,
                  cached: Callable[[Box], bool] = lambda w: False, only_cached: bool = False) -> Box | None:
    """The window a component with ``region`` is decoded on (see the module notes): the smallest level with a
    window containing ``region``, preferring a ``cached`` one, else the nearest-centred. ``only_cached``: the
    smallest cached window containing the region at any level, or None (a refine without the image's pixels)."""
    centre = ((region[0] + region[2]) / 2.0, (region[1] + region[3]) / 2.0)
    for side in window_sides(shape, sam_size):
        fits = [w for w in level_windows(shape, side) if _contains(w, region)]
        held = [w for w in fits if cached(w)]
        if held or (fits and not only_cached):
            pool = held or fits
            return min(pool, key=lambda w: (abs((w[0] + w[2]) / 2.0 - centre[0]) + abs((w[1] + w[3]) / 2.0
                                                                                       - centre[1]), w))
    return None


def component_regions(prompts: Prompts, context: float, shape: tuple[int, int]) -> list[Box]:
    """Each component's region (:func:`crop_region`), in component order."""
    out = []
    for c in range(prompts.num_components):
        boxes = prompts.boxes[prompts.box_component == c]
        pts = prompts.points[(prompts.point_component == c) & (prompts.point_labels == 1)]
        if not len(boxes) and not len(pts):  # only negative points name it: their bounding box
            pts = prompts.points[prompts.point_component == c]
        out.append(crop_region(boxes[0] if len(boxes) else None, pts, context, shape))
    return out


def group_by_window(windows: list[Box]) -> dict[Box, list[int]]:
    """Window → the components (indices, ascending) decoded on it, windows in order of their first component."""
    groups: dict[Box, list[int]] = {}
    for c, w in enumerate(windows):
        groups.setdefault(tuple(w), []).append(c)
    return groups


def prompts_in_window(prompts: Prompts, members: list[int], window: Box) -> Prompts:
    """The prompts of components ``members`` in ``window``'s coordinates, renumbered 0..m-1 in that order; negative
    points that apply to every component (component -1) join when they lie in the window; the component label
    map (when present) is cut to the window and relabelled to match."""
    r0, c0, r1, c1 = window
    offset = np.array([r0, c0], np.float32)
    renumber = {c: i for i, c in enumerate(members)}
    pc = prompts.point_component
    inside = ((prompts.points[:, 0] >= r0) & (prompts.points[:, 0] < r1) & (prompts.points[:, 1] >= c0)
              & (prompts.points[:, 1] < c1)) if len(prompts.points) else np.zeros(0, bool)
    sel = np.isin(pc, members) | ((pc == -1) & inside)
    bsel = np.isin(prompts.box_component, members)
    boxes = prompts.boxes[bsel] - np.array([r0, c0, r0, c0], np.float32)
    boxes = np.clip(boxes, 0, [r1 - r0, c1 - c0, r1 - r0, c1 - c0]).astype(np.float32)
    components = None
    if prompts.components is not None:
        cut = prompts.components[r0:r1, c0:c1]
        lut = np.zeros(int(prompts.components.max(initial=0)) + 1, np.uint16)
        for c, i in renumber.items():
            if c + 1 < len(lut):
                lut[c + 1] = i + 1
        components = lut[cut]
    return Prompts(points=(prompts.points[sel] - offset).astype(np.float32),
                   point_labels=prompts.point_labels[sel],
                   boxes=boxes.reshape(-1, 4),
                   point_component=np.array([renumber.get(int(c), -1) for c in pc[sel]], np.int32),
                   box_component=np.array([renumber[int(c)] for c in prompts.box_component[bsel]], np.int32),
                   components=components, source=prompts.source)
