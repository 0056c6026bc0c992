"""How closely one backend reproduces another: the measures the tests and ``napari-clipsam bench`` share.

Reference is always torch float32. Embeddings and features are compared as whole tensors (cosine similarity and
relative L2 error, flattened per image); masks by IoU. SAM masks are decoded with fixed prompts
(:func:`fixed_prompts`) on each backend's embedding, so the comparison sees the encoder alone.
"""
from __future__ import annotations

import numpy as np


def cosine(a, b) -> float:
    """Cosine similarity of two tensors/arrays of equal shape, flattened (float64)."""
    a, b = _flat(a), _flat(b)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def relative_l2(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` (``b`` is the reference), flattened (float64)."""
    a, b = _flat(a), _flat(b)
    ref = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / ref) if ref > 0 else float(np.linalg.norm(a))


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(_flat(a) - _flat(b)))) if _flat(a).size else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def fixed_prompts(shape: tuple[int, int], n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` point prompts (centres of a regular grid), their labels (all 1) and ``n`` boxes around them, for an
    image of ``shape`` (H, W): points ``(n, 1, 2)`` (row, col), labels ``(n, 1)``, boxes ``(n, 4)``
    (row0, col0, row1, col1) — the format of :meth:`SamRunner.decode`."""
    H, W = shape
    side = int(np.ceil(np.sqrt(n)))
    centres = [((i // side + 0.5) * H / side, (i % side + 0.5) * W / side) for i in range(n)]
    pts = np.array(centres, np.float32)[:, None, :]
    half = np.array([H, W], np.float32) / (3 * side)
    boxes = np.concatenate([pts[:, 0] - half, pts[:, 0] + half], axis=1).clip(0, [H - 1, W - 1, H - 1, W - 1])
    return pts, np.ones((n, 1), np.int64), boxes.astype(np.float32)


def sam_mask_ious(runner_a, emb_a, runner_b, emb_b, shape) -> list[float]:
    """IoU of every multimask output of the fixed point prompts and of the fixed box prompts, decoded on each
    runner's own embedding (``runner.decode``): ``2 × n × 3`` values."""
    pts, labels, boxes = fixed_prompts(shape)
    ious = []
    for kwargs in (dict(points=pts, point_labels=labels), dict(boxes=boxes)):
        ma, _ = runner_a.decode(emb_a, **kwargs)
        mb, _ = runner_b.decode(emb_b, **kwargs)
        ious += [mask_iou(x, y) for x, y in zip(ma.reshape(-1, *shape), mb.reshape(-1, *shape))]
    return ious


def _flat(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float64).reshape(-1)
