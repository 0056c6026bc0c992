"""Threshold-free binary classification scores: AUROC, AP and F1-max.

These are the building blocks of both the image-level metrics (one score per
image) and the pixel-level metrics (one score per pixel, pooled over images).
All functions return ``nan`` (without warnings) when a score is undefined
because a class is absent: AUROC needs both classes, AP and F1-max need at
least one positive.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def as_binary(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ``scores`` to float32 and ``labels`` to bool, checking they match.

    Raises:
        ValueError: different sizes, or non-finite scores.
    """
    scores = np.asarray(scores, dtype=np.float32).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.size} vs {labels.size}.")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values; fix the anomaly maps/scores first.")
    return scores, labels


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` (any shape) against bool ``labels``; nan if one class is absent."""
    scores, labels = as_binary(scores, labels)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def average_precision(scores, labels) -> float:
    """Average precision (sklearn's step-wise definition); nan without positives."""
    scores, labels = as_binary(scores, labels)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, scores))


def _f1_from_curve(precision: np.ndarray, recall: np.ndarray) -> float:
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def f1_max(scores, labels) -> float:
    """Maximum over all thresholds of ``2 P R / (P + R)`` (0 where P + R = 0); nan without positives.

    Args:
        scores: float array of any shape (higher = more anomalous).
        labels: bool/0-1 array of the same size.
    """
    scores, labels = as_binary(scores, labels)
    if not labels.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return _f1_from_curve(precision, recall)


def ap_and_f1_max(scores, labels) -> tuple[float, float]:
    """``(average_precision, f1_max)`` from one precision-recall curve (one sort instead of two).

    Uses sklearn's AP formula ``-sum(diff(recall) * precision[:-1])``, so the
    values equal :func:`average_precision` and :func:`f1_max`.
    """
    scores, labels = as_binary(scores, labels)
    if not labels.any():
        return float("nan"), float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    ap = float(-np.sum(np.diff(recall) * precision[:-1]))
    return ap, _f1_from_curve(precision, recall)


def image_auroc(scores, labels) -> float:
    """Image AUROC: ``scores`` (N,) float image scores, ``labels`` (N,) 0/1 or bool."""
    return auroc(scores, labels)


def image_ap(scores, labels) -> float:
    """Image average precision: ``scores`` (N,) float, ``labels`` (N,) 0/1 or bool."""
    return average_precision(scores, labels)


def image_f1_max(scores, labels) -> float:
    """Image F1-max: ``scores`` (N,) float, ``labels`` (N,) 0/1 or bool."""
    return f1_max(scores, labels)
