"""Area under the per-region-overlap (PRO) curve, in two flavours.

The PRO of a binarised anomaly map is the mean, over all connected ground-truth
regions of all images (8-connectivity), of the fraction of the region's pixels
flagged anomalous. The PRO curve plots PRO against the false-positive rate
(flagged normal pixels / all normal pixels) as the threshold varies; AUPRO is
the area under it up to ``max_fpr``, normalised. Two flavours coexist in the
literature and give different numbers for the same maps:

- ``"official"`` — the MVTec AD evaluation code: the exact curve over every
  distinct score (equal scores collapse into one point), trapezoid rule up to
  exactly ``max_fpr`` (the curve is interpolated there), divided by ``max_fpr``.
- ``"published"`` — the ZSAS style (APRIL-GAN, AnomalyCLIP, ...): 200 equally
  spaced thresholds ``min + k (max - min) / 200``, ``k = 0..199``, a pixel is
  flagged when its score is strictly above the threshold; points with
  ``FPR < max_fpr`` are kept, their FPRs min-max rescaled to [0, 1] and
  integrated with ``sklearn.metrics.auc``. (The reference code builds the
  thresholds with ``np.arange``, which rounding can make 201 long; we always
  use 200.)

Both return ``nan`` when no pixel is anomalous or no pixel is normal; the
published flavour also returns ``nan`` when fewer than two kept points have
distinct FPRs (e.g. a perfectly separating binary map), where the reference
code divides by zero.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

from .pixel import as_stacks

FLAVOURS = ("official", "published")
#: Thresholds of the published flavour.
PUBLISHED_THRESHOLDS = 200
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected regions of every mask with ids unique across the stack.

    Args:
        masks: ``(N, H, W)`` bool.

    Returns:
        ``(labels, n_regions)``: ``(N, H, W)`` int32 with 0 = normal and
        ``1..n_regions`` = regions, and the total number of regions.
    """
    labels = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for index, mask in enumerate(masks):
        if mask.any():
            labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
            labels[index] = np.where(labelled > 0, labelled + n_regions, 0)
            n_regions += count
    return labels, n_regions


def pro_curve(maps, masks, max_fpr: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve of the official MVTec AD evaluation.

    One point per distinct score ``t`` (pixels with score >= t flagged), plus
    ``(0, 0)`` in front and ``(1, 1)`` at the end, as the official code does.
    With ``max_fpr < 1`` only the part of the curve up to the first point
    beyond ``max_fpr`` is computed (sorting only the pixels that can matter),
    which is all :func:`aupro` needs.

    Args:
        maps: ``(N, H, W)`` float anomaly maps.
        masks: ``(N, H, W)`` bool ground truth.
        max_fpr: stop after the first point whose FPR exceeds this.

    Returns:
        ``(fprs, pros)``: float64 arrays, FPR non-decreasing. Empty arrays when
        the curve is undefined (no anomalous or no normal pixel).
    """
    maps, masks = as_stacks(maps, masks)
    regions, n_regions = label_regions(masks)
    scores, ids = maps.ravel(), regions.ravel()
    sizes = np.bincount(ids, minlength=n_regions + 1)
    n_normal = int(sizes[0])
    if n_regions == 0 or n_normal == 0:
        return np.empty(0), np.empty(0)

    # Points with FPR <= max_fpr flag at most `allowed` normal pixels; everything scoring
    # below the (allowed + 1)-th highest normal score only shapes the curve beyond that.
    allowed = int(np.floor(max_fpr * n_normal)) + 1
    if allowed < n_normal:
        normal_scores = scores[ids == 0]
        cutoff = np.partition(normal_scores, n_normal - 1 - allowed)[n_normal - 1 - allowed]
        keep = scores >= cutoff
        scores, ids = scores[keep], ids[keep]

    order = np.argsort(scores, kind="stable")[::-1]
    scores, ids = scores[order], ids[order]
    per_pixel = np.zeros(n_regions + 1)
    per_pixel[1:] = 1.0 / (n_regions * sizes[1:])  # each region adds up to 1 / n_regions
    pros = np.cumsum(per_pixel[ids])
    fprs = np.cumsum(ids == 0) / n_normal
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    fprs, pros = np.minimum(fprs[last_of_tie], 1.0), np.minimum(pros[last_of_tie], 1.0)
    return np.concatenate([[0.0], fprs, [1.0]]), np.concatenate([[0.0], pros, [1.0]])


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under ``y(x)`` from ``x[0]`` to exactly ``x_max``.

    ``x`` must be non-decreasing. When ``x_max`` falls between two points, the
    curve is linearly interpolated there (as in the official MVTec AD code).
    """
    inside = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if inside < len(x) and xs[-1] < x_max:
        y_max = ys[-1] + (y[inside] - ys[-1]) * (x_max - xs[-1]) / (x[inside] - xs[-1])
        area += 0.5 * (y_max + ys[-1]) * (x_max - xs[-1])
    return float(area)


def _aupro_official(maps: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    fprs, pros = pro_curve(maps, masks, max_fpr)
    if fprs.size == 0:
        return float("nan")
    return float(area_up_to(fprs, pros, max_fpr) / max_fpr)


def published_pro_points(maps, masks, n_thresholds: int = PUBLISHED_THRESHOLDS):
    """``(thresholds, fprs, pros)`` of the published flavour, each of length ``n_thresholds``.

    Vectorised: each pixel's *level* is the number of thresholds strictly below
    its score, so it is flagged at thresholds ``0..level-1``; a 2-D histogram of
    (region, level) then gives every region's overlap at every threshold.
    Returns ``None`` when the maps are constant or a class is absent.
    """
    maps, masks = as_stacks(maps, masks)
    regions, n_regions = label_regions(masks)
    low, high = float(maps.min()), float(maps.max())
    n_normal = int(masks.size - masks.sum())
    if n_regions == 0 or n_normal == 0 or high <= low:
        return None
    thresholds = low + (high - low) / n_thresholds * np.arange(n_thresholds)
    levels = np.searchsorted(thresholds, maps.ravel().astype(np.float64), side="left")
    bins = n_thresholds + 1
    keys = regions.ravel().astype(np.int64) * bins + levels
    histogram = np.bincount(keys, minlength=(n_regions + 1) * bins).reshape(n_regions + 1, bins)
    at_least = np.cumsum(histogram[:, ::-1], axis=1)[:, ::-1]  # at_least[r, l] = #pixels with level >= l
    flagged = at_least[:, 1:]  # flagged[r, k] = #pixels of r with score > thresholds[k]
    sizes = at_least[:, 0]
    pros = (flagged[1:] / sizes[1:, None]).mean(axis=0)
    fprs = flagged[0] / n_normal
    return thresholds, fprs, pros


def _aupro_published(maps: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    points = published_pro_points(maps, masks)
    if points is None:
        return float("nan")
    _, fprs, pros = points
    kept = fprs < max_fpr
    fprs, pros = fprs[kept], pros[kept]
    if fprs.size < 2 or fprs.max() <= fprs.min():
        return float("nan")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return float(auc(fprs, pros))


def aupro(maps, masks, max_fpr: float = 0.3, flavour: str = "official") -> float:
    """Normalised area under the PRO curve up to ``max_fpr``.

    Args:
        maps: ``(N, H, W)`` float anomaly maps (or a list of ``(H, W)``), higher = more anomalous.
        masks: ``(N, H, W)`` bool ground truth.
        max_fpr: FPR limit of the integration, in (0, 1].
        flavour: ``"official"`` (MVTec AD code) or ``"published"`` (ZSAS papers); see the module docstring.

    Returns:
        AUPRO in [0, 1] (1 = perfect), or nan when undefined (no anomalous
        pixel, no normal pixel; for ``"published"`` also degenerate curves).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}.")
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}.")
    maps, masks = as_stacks(maps, masks)
    if flavour == "official":
        return _aupro_official(maps, masks, max_fpr)
    return _aupro_published(maps, masks, max_fpr)
