"""Boxes as napari rectangles and back: (row0, col0, row1, col1) prompt boxes <-> Shapes-layer corners."""
from __future__ import annotations

import numpy as np

Frame = int | None
"""A stack's frame index, or None for a 2-D image."""


def box_to_corners(box, frame: Frame = None) -> np.ndarray:
    """A (row0, col0, row1, col1) box (inclusive-exclusive) as napari rectangle corners around its pixels.

    Pixel centres sit on integer coordinates in napari, so the drawn edges lie half a pixel outside them.
    Returns (4, 2), or (4, 3) with the frame index first.
    """
    r0, c0, r1, c1 = (float(v) for v in box)
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], np.float64) - 0.5
    return corners if frame is None else np.column_stack([np.full(4, frame, np.float64), corners])


def corners_to_box(vertices: np.ndarray, stacked: bool) -> tuple[Frame, np.ndarray]:
    """Inverse of :func:`box_to_corners` for any drawn shape: its bounding box and frame."""
    v = np.asarray(vertices, np.float64)
    frame = int(np.round(v[0, 0])) if stacked else None
    rc = v[:, -2:]
    return frame, np.concatenate([rc.min(0) + 0.5, rc.max(0) + 0.5])
