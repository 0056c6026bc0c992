"""ROC and precision-recall curves, thinned to a few hundred points for plotting (``eval --plots``).

The curves are sklearn's exact ones (every threshold); :func:`thin` keeps points evenly spaced along the curve's
length, both end points included, so a plot of millions of pooled pixels keeps its shape at a few kB. The areas
reported next to the curves are the metrics of :mod:`.report`, never recomputed from the thinned points.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from .classification import as_binary

#: Points kept per curve by default.
MAX_POINTS = 400


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of the polyline ``(x, y)``, evenly spaced along its (L1) length, the first and
    the last included; unchanged when it is already short enough.

    >>> x, y = thin(np.linspace(0, 1, 1001), np.linspace(0, 1, 1001), 11)
    >>> x.round(2).tolist()
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) <= max_points:
        return x, y
    length = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))])
    picks = np.searchsorted(length, np.linspace(0.0, length[-1], max_points))
    picks = np.unique(np.clip(np.concatenate([[0], picks, [len(x) - 1]]), 0, len(x) - 1))
    return x[picks], y[picks]


def roc_and_pr(scores, labels, max_points: int = MAX_POINTS) -> dict[str, dict[str, list[float]]] | None:
    """``{"roc": {"fpr", "tpr"}, "pr": {"recall", "precision"}}`` of ``scores`` (any shape) against bool
    ``labels``, each thinned to ``max_points`` (:func:`thin`); None when one class is absent (no curve is
    defined)."""
    scores, labels = as_binary(scores, labels)
    if labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fpr, tpr = thin(fpr, tpr, max_points)
    recall, precision = thin(recall, precision, max_points)
    return {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            "pr": {"recall": recall.tolist(), "precision": precision.tolist()}}
