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
from scipy.spatial import Delaunay, cKDTree
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


PAIRWISE_PIECES = 16
"""Up to this many pieces the spanning tree's edges are found by comparing every pair of pieces; above it, from
the Delaunay triangulation of all their boundary pixels (the same tree weight, in ~linear time)."""


def _closest_pairs(outlines: list[np.ndarray]) -> dict[tuple[int, int], tuple[float, int, int]]:
    """``{(i, j): (distance, vertex of i, vertex of j)}`` for every pair of pieces ``i < j``: the pieces'
    closest boundary pixels (the plain computation, m² nearest-neighbour queries)."""
    trees = [cKDTree(o) for o in outlines]
    pairs = {}
    for i in range(len(outlines)):
        for j in range(i + 1, len(outlines)):
            dist, idx = trees[j].query(outlines[i])
            a = int(np.argmin(dist))
            pairs[i, j] = (float(dist[a]), a, int(idx[a]))
    return pairs


def _delaunay_pairs(outlines: list[np.ndarray]) -> dict[tuple[int, int], tuple[float, int, int]]:
    """Like :func:`_closest_pairs` but only for the pairs of pieces joined by an edge of the Delaunay triangulation
    of all boundary pixels, each with its shortest such edge. A minimum spanning tree of these pairs is one of all
    pairs: an edge of the pixel-level tree is never longer than needed, so it has an empty diametral disk (a pixel
    inside it would be closer to both ends), and such an edge is in every Delaunay triangulation. Qhull's joggle
    (``QJ``) triangulates degenerate sets (collinear or cocircular pixels, as on a grid); a tiny perturbation keeps
    every edge with an empty closed diametral disk."""
    points = np.concatenate(outlines).astype(np.float64)
    piece = np.repeat(np.arange(len(outlines)), [len(o) for o in outlines])
    local = np.concatenate([np.arange(len(o)) for o in outlines])
    simplices = Delaunay(points, qhull_options="QJ").simplices
    edges = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    edges = edges[piece[edges[:, 0]] != piece[edges[:, 1]]]
    swap = piece[edges[:, 0]] > piece[edges[:, 1]]
    edges[swap] = edges[swap][:, ::-1]  # the lower piece first
    dist = np.hypot(*(points[edges[:, 0]] - points[edges[:, 1]]).T)
    pi, pj = piece[edges[:, 0]], piece[edges[:, 1]]
    order = np.lexsort((dist, pj, pi))  # per pair of pieces, shortest first
    _, first = np.unique(pi[order] * len(outlines) + pj[order], return_index=True)
    return {(int(pi[e]), int(pj[e])): (float(dist[e]), int(local[a]), int(local[b]))
            for e, (a, b) in zip(order[first], edges[order[first]])}


def _join(outlines: list[np.ndarray]) -> np.ndarray:
    """One closed path visiting every outline: cuts along a minimum spanning tree, there and back."""
    if len(outlines) == 1:
        return outlines[0]
    m = len(outlines)
    pairs = (_closest_pairs if m <= PAIRWISE_PIECES else _delaunay_pairs)(outlines)
    closest = {}
    rows, cols, weights = [], [], []
    for (i, j), (dist, a, b) in pairs.items():
        closest[i, j], closest[j, i] = (a, b), (b, a)
        rows.append(i)
        cols.append(j)
        weights.append(dist + 1e-9)  # zero would mean "no edge" to csgraph
    mst = minimum_spanning_tree(csr_matrix((weights, (rows, cols)), shape=(m, m)))
    mst = mst + mst.T
    order, parent = breadth_first_order(mst, 0, directed=False, return_predecessors=True)
    children: dict[int, list[int]] = {i: [] for i in range(m)}
    for node in order[1:]:
        children[int(parent[node])].append(int(node))
    return _walk(outlines, children, closest)[:-1]  # the root's closing vertex is implied


def _walk(outlines, children, closest) -> np.ndarray:
    """The tree's outlines in one path, depth first from piece 0's vertex 0: each piece's vertices from its entry
    vertex round to it again, a child's walk spliced in at the vertex its cut leaves from, followed by that
    vertex again (back along the cut). A stack of per-piece generators, so thousands of chained pieces do not
    recurse."""
    def piece(node: int, start: int):
        """Yields the piece's runs of vertices, and ``(child, entry vertex)`` where a child's walk goes."""
        outline = outlines[node]
        n = len(outline)
        steps = (start + np.arange(n + 1)) % n  # from the entry vertex round to it again
        cuts = sorted(((closest[node, c][0] - start) % n, k, c) for k, c in enumerate(children[node]))
        done = 0
        for step, _, child in cuts:
            if step >= done:
                yield outline[steps[done:step + 1]]
                done = step + 1
            yield child, closest[node, child][1]
            yield outline[steps[step:step + 1]]  # back along the cut
        yield outline[steps[done:]]

    out: list[np.ndarray] = []
    stack = [piece(0, 0)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, tuple):
            stack.append(piece(*item))
        else:
            out.append(item)
    return np.concatenate(out)


def _bridge_pixels(vertices: np.ndarray, filled: np.ndarray) -> int:
    """Background pixels (outside the filled pieces) drawn by the polygon's edges, i.e. by the cuts."""
    extra = np.zeros(filled.shape, dtype=bool)
    nxt = np.roll(vertices, -1, axis=0)
    for (r0, c0), (r1, c1) in zip(vertices, nxt):
        rr, cc = draw.line(int(r0), int(c0), int(r1), int(c1))
        extra[rr, cc] = True
    return int((extra & ~filled).sum())
