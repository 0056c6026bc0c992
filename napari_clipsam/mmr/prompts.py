"""Prompt extraction (method §3 steps 1–2): rough map → components → points and boxes.

Coordinates are (row, col); boxes are (row0, col0, row1, col1), inclusive-exclusive, as float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import InvalidInputError


EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class Prompts:
    """Point and box prompts plus the component each belongs to.

    Attributes:
        points: (N, 2) float32 (row, col). point_labels: (N,) int32, 1 positive, 0 negative.
        boxes: (M, 4) float32 (row0, col0, row1, col1). point_component: (N,) int32 and
        box_component: (M,) int32, the component index (0-based) each prompt belongs to; a negative point
        with component -1 applies to every component.
        components: (H, W) uint16 label image of the binarised rough map components (1-based, matching
        component index + 1), or None for user prompts; used as the fallback when SAM gives no usable mask.
        source: "clip" (derived from the rough map) or "user".
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    point_component: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box_component: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    components: np.ndarray | None = None
    source: str = "clip"

    @property
    def num_components(self) -> int:
        ids = np.concatenate([self.point_component[self.point_component >= 0], self.box_component])
        return int(ids.max()) + 1 if ids.size else 0


def binarise(rough_map: np.ndarray, config) -> np.ndarray:
    """rough ≥ τ_prompt, then a square morphological opening (method §3 step 1). (H, W) bool."""
    b = np.asarray(rough_map) >= config.prompt_threshold
    if config.opening_size and config.opening_size > 1:
        b = ndi.binary_opening(b, structure=np.ones((config.opening_size,) * 2, bool))
    return b


def grow_box(r0: float, c0: float, r1: float, c1: float, growth: float, shape: tuple[int, int]) -> np.ndarray:
    """Grow a box by ``growth`` × its height/width on every side and clip to the image."""
    dr, dc = growth * (r1 - r0), growth * (c1 - c0)
    H, W = shape
    return np.array([max(0.0, r0 - dr), max(0.0, c0 - dc), min(float(H), r1 + dr), min(float(W), c1 + dc)],
                    np.float32)


def kept_components(rough_map: np.ndarray, config, view_area: float | None = None):
    """``(rough, labels, keep)``: the map as float32 without NaN, the 8-connected components of its binarised
    map, and the 0-based indices of those :func:`prompts_from_map` makes prompts of (its size rule and
    ``max_components``, in order of decreasing peak). Cheap enough to ask "would any region be kept?"."""
    rough = np.nan_to_num(np.asarray(rough_map, dtype=np.float32), nan=0.0)
    if rough.ndim != 2:
        raise ValueError(f"rough_map must be a 2-D (H, W) array, got shape {rough.shape}")
    H, W = rough.shape
    labels, n = ndi.label(binarise(rough, config), structure=EIGHT_CONNECTED)
    if n == 0:
        return rough, labels, []
    flat = labels.ravel()  # per-label sizes and peaks in one pass each (scipy's indexed reductions: ~20× slower)
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    peaks = np.full(n + 1, -np.inf, np.float32)
    np.maximum.at(peaks, flat, rough.ravel())
    peaks = peaks[1:]
    min_size = max(config.min_component_px, config.min_component_frac * (H * W if view_area is None else view_area))
    keep = [i for i in np.argsort(-peaks, kind="stable") if sizes[i] >= min_size]
    return rough, labels, keep[: config.max_components]


def prompts_from_map(rough_map: np.ndarray, config, view_area: float | None = None) -> Prompts:
    """Derive SAM prompts from a rough anomaly map (H, W) float in [0, 1].

    Components of the binarised map (8-connected) smaller than max(min_component_px, min_component_frac ×
    ``view_area``) are dropped; ``view_area`` is H × W by default. A folder's mutual map of tiled images passes one
    tile's area: it is calibrated by whole images' maxima, so what passes τ is already rare at the image's scale,
    and its smallest meaningful region is a tile's patches; the CLIP and few-shot maps are calibrated per patch,
    so on a large image more patches pass τ by chance and the rule's whole-image area is what drops them
    (docs/method.md#large-images-tiling). The K = max_components with the highest peak are kept, in order of
    decreasing peak.
    Per component: a positive point at the peak of the rough map inside it, and its bounding box grown by
    box_growth per side. With ``negative_points``, one negative point per component at the lowest rough value
    inside its grown box but outside every component; a component whose box holds no such pixel (it fills its
    box, e.g. with ``box_growth=0``) gets no negative point (see :func:`_lowest_outside`).
    """
    rough, labels, keep = kept_components(rough_map, config, view_area)
    H, W = rough.shape
    if not labels.any():  # no pixel reached τ_prompt
        return Prompts(components=np.zeros((H, W), np.uint16))
    slices = ndi.find_objects(labels)
    components = np.zeros((H, W), np.uint16)
    points, boxes = [], []
    for new_id, i in enumerate(keep, start=1):
        region = labels == (i + 1)
        components[region] = new_id
        flat = np.where(region, rough, -np.inf).argmax()
        points.append(divmod(int(flat), W))
        sl = slices[i]
        boxes.append(grow_box(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop, config.box_growth, (H, W)))
    k = len(keep)
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    labels_out = np.ones(k, np.int32)
    comp = np.arange(k, dtype=np.int32)
    if config.negative_points and k:
        neg = [(c, p) for c, p in enumerate(_lowest_outside(rough, components, b) for b in boxes) if p is not None]
        pts = np.concatenate([pts, np.asarray([p for _, p in neg], np.float32).reshape(-1, 2)])
        labels_out = np.concatenate([labels_out, np.zeros(len(neg), np.int32)])
        comp = np.concatenate([comp, np.asarray([c for c, _ in neg], np.int32)])
    return Prompts(points=pts, point_labels=labels_out, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                   point_component=comp, box_component=np.arange(k, dtype=np.int32), components=components)


def _lowest_outside(rough: np.ndarray, components: np.ndarray, box: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the lowest rough value among the pixels the box covers that lie outside every component,
    or None when there is no such pixel (the components fill the box). No point is then better than any
    fallback: a negative point inside the defect would tell SAM the defect is background, and one outside the
    box is no longer a hint about this component's extent."""
    r0, c0, r1, c1 = (int(v) for v in (np.floor(box[0]), np.floor(box[1]), np.ceil(box[2]), np.ceil(box[3])))
    outside = components[r0:r1, c0:c1] == 0
    if not outside.any():
        return None
    window = np.where(outside, rough[r0:r1, c0:c1], np.inf)
    r, c = np.unravel_index(int(window.argmin()), window.shape)
    return r0 + r, c0 + c


def _numeric(name: str, value) -> np.ndarray:
    try:
        a = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise InvalidInputError(f"{name} must be a rectangular array of numbers, got {value!r:.80}: {err}") from err
    if a.size and not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
                       or a.dtype == bool):
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {a.dtype} ({value!r:.80}).")
    return a


def _prompt_array(name: str, value, width: int, layout: str) -> np.ndarray:
    """``value`` as a (N, width) float32 array; None or an empty sequence → (0, width). Refuses other shapes."""
    if value is None:
        return np.zeros((0, width), np.float32)
    a = _numeric(name, value)
    if a.size == 0:
        return np.zeros((0, width), np.float32)
    if a.ndim != 2 or a.shape[1] != width:
        hint = " (wrap a single one as [[...]])" if a.shape == (width,) else ""
        raise InvalidInputError(f"{name} must have shape (N, {width}), one {layout} row each, got shape {a.shape}"
                                f"{hint}.")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} must be finite numbers; got NaN or infinity in {a.tolist()!r:.120}.")
    return np.clip(a, -1e30, 1e30).astype(np.float32)  # far off the image either way; no float32 overflow


def _point_labels(value, n: int) -> np.ndarray:
    """``value`` as (n,) int32 of 0/1; None → all positive. Refuses fractions (0.5) and other values."""
    if value is None:
        return np.ones(n, np.int32)
    a = _numeric("point_labels", value)
    if a.ndim > 1 or (a.ndim == 0 and n != 1):
        raise InvalidInputError(f"point_labels must be a list of {n} labels (1 positive, 0 negative), got shape "
                                f"{a.shape}.")
    a = a.reshape(-1)
    if len(a) != n:
        raise InvalidInputError(f"point_labels has {len(a)} entries but there are {n} points; give one label "
                                "(1 positive, 0 negative) per point.")
    if not np.isin(a.astype(np.float64), (0.0, 1.0)).all():
        bad = sorted({float(v) for v in a.astype(np.float64) if v not in (0.0, 1.0)})[:5]
        raise InvalidInputError(f"point_labels must be 1 (positive) or 0 (negative), got {bad}.")
    return a.astype(np.int32)


def group_user_prompts(points, point_labels, boxes, shape: tuple[int, int]) -> Prompts:
    """Group free-form user prompts into components (method §3 step 7).

    Every box is a component; a point inside one or more boxes joins the smallest of them; any other positive
    point is a component of its own (point level only), and any other negative point applies to every
    component. Points may lie up to half a pixel outside the image (the edge pixels' outer halves); farther out
    they are refused, as a stray click there would otherwise become a prompt at the border.
    """
    pts = _prompt_array("points", points, 2, "(row, col)")
    bxs = _prompt_array("boxes", boxes, 4, "(row0, col0, row1, col1)")
    lab = _point_labels(point_labels, len(pts))
    H, W = shape
    outside = (pts[:, 0] < -0.5) | (pts[:, 0] > H - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > W - 0.5)
    if outside.any():
        r, c = pts[np.flatnonzero(outside)[0]]
        raise InvalidInputError(f"{int(outside.sum())} point(s) lie outside the {H}×{W} image, e.g. (row {r:.1f}, "
                                f"col {c:.1f}); delete them or move them onto the image.")
    pts = np.clip(pts, 0, [H - 1, W - 1]).astype(np.float32)
    bxs = np.stack([np.clip(bxs[:, 0], 0, H), np.clip(bxs[:, 1], 0, W), np.clip(bxs[:, 2], 0, H),
                    np.clip(bxs[:, 3], 0, W)], axis=1).astype(np.float32) if len(bxs) else bxs
    if len(bxs) and ((bxs[:, 2] <= bxs[:, 0]) | (bxs[:, 3] <= bxs[:, 1])).any():
        raise InvalidInputError("every box (boxes argument) must satisfy row0 < row1 and col0 < col1 inside the "
                                "image")
    areas = (bxs[:, 2] - bxs[:, 0]) * (bxs[:, 3] - bxs[:, 1])
    comp = np.full(len(pts), -1, np.int32)
    next_id = len(bxs)
    for i, (p, lb) in enumerate(zip(pts, lab)):
        inside = np.flatnonzero((bxs[:, 0] <= p[0]) & (p[0] < bxs[:, 2]) & (bxs[:, 1] <= p[1]) & (p[1] < bxs[:, 3]))
        if inside.size:
            comp[i] = inside[np.argmin(areas[inside])]
        elif lb == 1:
            comp[i], next_id = next_id, next_id + 1
    return Prompts(points=pts, point_labels=lab, boxes=bxs, point_component=comp,
                   box_component=np.arange(len(bxs), dtype=np.int32), components=None, source="user")
