"""One closed polygon per instance, through the centres of its boundary pixels (the YOLO-seg geometry).

Ultralytics rasterises a YOLO-seg polygon by scaling it to pixels, **truncating** every vertex to whole
pixel indices and filling the polygon **including its edges**. A polygon whose vertices are the centres
``(row, col)`` of a piece's 8-connected boundary pixels (the outline OpenCV's ``findContours`` gives) is
filled back to exactly that piece under this rule, so :func:`instance_outline` traces such outlines.
Writing a vertex as ``x = (col + 0.5) / W`` (the pixel's centre in continuous coordinates) makes the
truncation land on ``col`` whatever rounding the six written decimals add.

One instance becomes one polygon:

* Pieces are 8-connected (a diagonal staircase is one piece, as the eye and ``findContours`` see it).
* Holes cannot be represented: each piece is filled first, so hole pixels come back as foreground;
  their number is returned (``hole_pixels``). Pieces lying inside another piece's hole are covered by
  that fill and need no outline of their own.
* Pieces smaller than ``min_piece_area`` pixels are dropped (``dropped_pieces``/``dropped_pixels``),
  except the instance's largest piece, so an instance never disappears.
* The remaining pieces are joined into one polygon by thin cuts: a minimum spanning tree over the
  pieces (by the distance between their closest boundary pixels) is walked depth-first, each cut
  going to a child piece and straight back along the same line, so it encloses no area. Under the
  fill-including-edges rule the cut's own pixels are drawn: ``bridge_pixels`` counts those that
  are background (0 for pieces touching diagonally).

Coordinates are ``(row, col)`` pixel indices throughout; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from scipy.spatial import cKDTree
from skimage import draw, measure

__all__ = ["OutlineStats", "instance_outline", "piece_outline"]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclasses.dataclass
class OutlineStats:
    """What the single-polygon representation of an instance changes (pixel counts; see module docs)."""

    dropped_pieces: int = 0
    dropped_pixels: int = 0
    hole_pixels: int = 0
    bridge_pixels: int = 0

    def add(self, other: OutlineStats) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def piece_outline(piece: np.ndarray) -> np.ndarray:
    """The closed outline of one 8-connected, hole-free bool piece, through its boundary pixel centres.

    Args:
        piece: ``(h, w)`` bool mask holding one 8-connected piece without holes.

    Returns:
        ``(N, 2)`` int array of ``(row, col)`` boundary pixels in walking order, not closed (the last
        vertex is not repeated); consecutive vertices are 8-neighbours. A one-pixel piece gives one vertex.
    """
    padded = np.pad(piece, 1)
    # Marching squares at level 0.5 puts every vertex half-way between an inside and an outside pixel;
    # "high" joins diagonal foreground pixels (8-connectivity of the piece).
    contours = measure.find_contours(padded.astype(np.float32), 0.5, fully_connected="high")
    contour = max(contours, key=len)
    lo = np.floor(contour).astype(int)  # the pixel before the half-way point along the split axis
    hi = np.ceil(contour).astype(int)
    inside_lo = padded[lo[:, 0], lo[:, 1]]
    pixels = np.where(inside_lo[:, None], lo, hi) - 1  # undo the padding
    keep = np.any(pixels != np.roll(pixels, 1, axis=0), axis=1)
    pixels = pixels[keep] if keep.any() else pixels[:1]
    return pixels


def _corners(path: np.ndarray) -> np.ndarray:
    """``path`` (closed, no repeated consecutive vertices) without vertices inside a straight run.

    A vertex is dropped when the step into it equals the step out of it, so every kept edge is a run of
    identical 8-neighbour steps (horizontal, vertical or exactly diagonal): its rasterisation is the run's
    own pixels. Reversals (a one-pixel-wide spike walked out and back) are kept.
    """
    if len(path) < 3:
        return path
    step_in = path - np.roll(path, 1, axis=0)
    step_out = np.roll(path, -1, axis=0) - path
    return path[np.any(step_in != step_out, axis=1)]


def instance_outline(
    mask: np.ndarray, min_piece_area: int = 1, offset: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, OutlineStats]:
    """One polygon for an instance mask: its pieces' outlines joined by thin cuts.

    Args:
        mask: ``(h, w)`` bool mask of one instance (any number of pieces, holes allowed).
        min_piece_area: pieces (8-connected, holes filled) with fewer pixels are dropped, except the
            largest piece.
        offset: ``(row0, col0)`` added to the vertices (the crop's position in the image).

    Returns:
        ``(vertices, stats)``: ``(N, 2)`` int ``(row, col)`` pixel indices with ``N >= 3`` (a one- or
        two-pixel piece repeats its last vertex), not closed; and the :class:`OutlineStats`.
        Raises ValueError on an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("instance_outline needs a non-empty mask")
    stats = OutlineStats()
    # Background is 4-connected when the foreground is 8-connected, which is binary_fill_holes' default.
    filled = ndimage.binary_fill_holes(mask)
    stats.hole_pixels = int((filled & ~mask).sum())
    labels, n = ndimage.label(filled, structure=_EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    largest = int(np.argmax(areas))
    outlines = []
    for k, region in enumerate(ndimage.find_objects(labels)):
        if areas[k] < min_piece_area and k != largest:
            stats.dropped_pieces += 1
            stats.dropped_pixels += int((mask[region] & (labels[region] == k + 1)).sum())
            continue
        piece = labels[region] == k + 1
        outline = piece_outline(piece) + np.array([region[0].start, region[1].start])
        outlines.append((int(areas[k]), outline))
    outlines.sort(key=lambda item: -item[0])  # the largest piece is the root of the joining tree
    path = _join([o for _, o in outlines])
    vertices = _corners(path) if len(outlines) == 1 else _drop_repeats(path)
    if len(outlines) > 1:
        stats.bridge_pixels = _bridge_pixels(vertices, filled)
    while len(vertices) < 3:
        vertices = np.concatenate([vertices, vertices[-1:]])
    return vertices + np.asarray(offset, dtype=int), stats


def _drop_repeats(path: np.ndarray) -> np.ndarray:
    """Drop consecutive duplicate vertices, then straight-run vertices (see :func:`_corners`)."""
    keep = np.any(path != np.roll(path, 1, axis=0), axis=1)
    path = path[keep] if keep.any() else path[:1]
    return _corners(path)


def _join(outlines: list[np.ndarray]) -> np.ndarray:
    """One closed path visiting every outline: cuts along a minimum spanning tree, there and back."""
    if len(outlines) == 1:
        return outlines[0]
    m = len(outlines)
    trees = [cKDTree(o) for o in outlines]
    weight = np.zeros((m, m))
    closest = {}
    for i in range(m):
        for j in range(i + 1, m):
            dist, idx = trees[j].query(outlines[i])
            a = int(np.argmin(dist))
            closest[i, j] = (a, int(idx[a]))
            closest[j, i] = (int(idx[a]), a)
            weight[i, j] = dist[a] + 1e-9  # zero would mean "no edge" to csgraph
    mst = minimum_spanning_tree(csr_matrix(weight))
    mst = mst + mst.T
    order, parent = breadth_first_order(mst, 0, directed=False, return_predecessors=True)
    children: dict[int, list[int]] = {i: [] for i in range(m)}
    for node in order[1:]:
        children[int(parent[node])].append(int(node))

    def walk(node: int, start: int) -> list[np.ndarray]:
        outline = outlines[node]
        attach: dict[int, list[int]] = {}
        for child in children[node]:
            attach.setdefault(closest[node, child][0], []).append(child)
        out = []
        n = len(outline)
        for step in range(n + 1):  # all vertices from the entry one, then back to it (closing the piece)
            v = (start + step) % n
            out.append(outline[v : v + 1])
            if step < n:
                for child in attach.get(v, []):
                    out.extend(walk(child, closest[node, child][1]))
                    out.append(outline[v : v + 1])  # back along the cut
        return out

    return np.concatenate(walk(0, 0))[:-1]  # the root's closing vertex is implied


def _bridge_pixels(vertices: np.ndarray, filled: np.ndarray) -> int:
    """Background pixels (outside the filled pieces) drawn by the polygon's edges, i.e. by the cuts."""
    extra = np.zeros(filled.shape, dtype=bool)
    nxt = np.roll(vertices, -1, axis=0)
    for (r0, c0), (r1, c1) in zip(vertices, nxt):
        rr, cc = draw.line(int(r0), int(c0), int(r1), int(c1))
        extra[rr, cc] = True
    return int((extra & ~filled).sum())
