"""Candidate filtering and the multi-level merge (method §3 steps 4–6). Pure NumPy.

Shapes: candidate masks (n, H, W) bool, scores (n,) float; component maps (K, H, W) float32 in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import InvalidInputError
from .prompts import EIGHT_CONNECTED


INSTANCE_TIE_TOLERANCE = 2.0 ** -10
"""Component maps closer than this at a pixel are tied for its instance (:func:`fuse_maps`): far above the
rounding of float32 decoding (≈1e-7), far below any difference of confidence that means something."""


def check_rough_map(rough, shape: tuple[int, int] | None = None, what: str = "rough map") -> np.ndarray:
    """``rough`` as a float32 (H, W) array; InvalidInputError (saying what to do) when it is not 2-D, or not
    ``shape`` (the image's height and width) when given."""
    a = np.asarray(rough)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise InvalidInputError(f"The {what} has dtype {a.dtype}; it must be an (H, W) array of real numbers "
                                "from 0 to 1.")
    if a.ndim != 2 or (shape is not None and a.shape != tuple(shape)):
        want = f"({shape[0]}, {shape[1]}), the image's height and width" if shape is not None else "(H, W)"
        resize = (f" (e.g. skimage.transform.resize(rough, ({shape[0]}, {shape[1]})))"
                  if shape is not None and a.ndim == 2 else "")
        raise InvalidInputError(f"The {what} has shape {a.shape}, but it must have shape {want}: give one value per "
                                f"image pixel{resize}, or run segment on the image again.")
    return a.astype(np.float32, copy=False)


def outside_fraction(masks: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Fraction of each mask's area outside ``box`` (row0, col0, row1, col1); 1.0 for empty masks."""
    r0, c0 = int(np.floor(box[0])), int(np.floor(box[1]))
    r1, c1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    area = masks.reshape(len(masks), -1).sum(axis=1)
    inside = masks[:, r0:r1, c0:c1].reshape(len(masks), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, 1.0 - inside / np.maximum(area, 1), 1.0)


def keep_candidates(masks: np.ndarray, scores: np.ndarray, box: np.ndarray | None, config) -> np.ndarray:
    """(n,) bool: predicted IoU ≥ min_predicted_iou, non-empty, and (with a box) at most max_outside_box of
    the area outside it (SAM's "whole object" failure mode)."""
    keep = (np.asarray(scores) >= config.min_predicted_iou) & masks.reshape(len(masks), -1).any(axis=1)
    if box is not None:
        keep &= outside_fraction(masks, box) <= config.max_outside_box
    return keep


def merge_component(masks: np.ndarray, scores: np.ndarray, keep: np.ndarray,
                    fallback: np.ndarray | None) -> np.ndarray:
    """M_c = Σ s_k m_k / Σ s_k over kept candidates, (H, W) float32 in [0, 1].

    The numerator is summed pixel by pixel in the same order and float32 rounding as the denominator, so a
    pixel that every kept candidate covers is exactly 1 (and no pixel exceeds 1) whatever the scores'
    rounding: the scores move by a few ulps with the decoder's batch, and 1 ± 1 ulp would otherwise decide
    which of several fully covering components takes the pixel (see :func:`fuse_maps`). Kept candidates whose
    scores sum to 0 weigh equally.

    With no kept candidate: the ``fallback`` mask (the binarised component) when given, else the single
    best-scoring candidate (user prompts have no component to fall back on).
    """
    if keep.any():
        s = np.asarray(scores, np.float32)[keep]
        if not s.sum() > 0:
            s = np.ones_like(s)
        num, den = np.zeros(masks.shape[1:], np.float32), np.float32(0.0)
        for weight, mask in zip(s, masks[keep]):
            num[mask] += weight
            den = np.float32(den + weight)
        return num / den
    if fallback is not None:
        return fallback.astype(np.float32)
    if len(masks) == 0:
        raise ValueError("merge_component needs at least one candidate or a fallback")
    return masks[int(np.argmax(scores))].astype(np.float32)


@dataclass
class FinalMaps:
    """final_map (H, W) float32 in [0, 1]; mask (H, W) bool; instances (H, W) int32 (0 = background); score.

    ``instance_component`` (n_instances,) int32: the prompt component (0-based) instance id ``i`` came from, at
    index ``i - 1``; -1 for mask pieces no component covers.
    """

    final_map: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    score: float
    instance_component: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


def fuse_maps(rough: np.ndarray, component_maps: np.ndarray, config, valid: np.ndarray | None = None) -> FinalMaps:
    """Final map = α·rough + (1 − α)·max_c M_c; mask = final ≥ τ_mask; instances by the strongest M_c.

    Instance rule: a covered mask pixel goes to the lowest-numbered component whose M_c there is within
    :data:`INSTANCE_TIE_TOLERANCE` of the strongest (max_c M_c). Components whose maps differ there only by
    rounding count as tied, so the instances do not depend on how the candidates were decoded (batch size,
    which prompts were decoded together, or memoised from an earlier call), which moves M_c by a few ulps.

    Mask pixels that no component covers (possible when α·rough alone reaches τ_mask) get instance ids of
    their own, one per 8-connected piece, after the component ids. ``valid`` (H, W) bool marks pixels that
    exist (NaN pixels of the input are invalid and always background).
    """
    rough = check_rough_map(rough, None if valid is None else np.shape(valid))
    if np.ndim(component_maps) != 3 or np.shape(component_maps)[1:] != rough.shape:
        raise InvalidInputError(f"The component maps have shape {np.shape(component_maps)}; fusing them with a "
                                f"{rough.shape} rough map needs shape (K, {rough.shape[0]}, {rough.shape[1]}).")
    K = len(component_maps)
    sam = component_maps.max(axis=0) if K else np.zeros_like(rough)
    best = (component_maps >= sam - INSTANCE_TIE_TOLERANCE).argmax(axis=0) if K else None  # first: lowest tied
    return _fused(rough, sam, best, K, config, valid)


def fuse_placed(rough: np.ndarray, placed: list, config, valid: np.ndarray | None = None) -> FinalMaps:
    """:func:`fuse_maps` for component maps that each cover a box of the image (SAM on crops, :mod:`.crops`):
    ``placed`` is ``[(box, map), ...]`` in component order, ``box`` (row0, col0, row1, col1) and ``map`` of the
    box's shape, 0 outside it. The same final map, mask, instances and tie rule as :func:`fuse_maps` on the maps
    pasted into full-size ones, without holding K full-size maps."""
    rough = check_rough_map(rough, None if valid is None else np.shape(valid))
    sam = np.zeros_like(rough)
    for (r0, c0, r1, c1), m in placed:
        if np.shape(m) != (r1 - r0, c1 - c0):
            raise InvalidInputError(f"A placed component map has shape {np.shape(m)}, its box {(r0, c0, r1, c1)} "
                                    f"needs ({r1 - r0}, {c1 - c0}).")
        np.maximum(sam[r0:r1, c0:c1], m, out=sam[r0:r1, c0:c1])
    K = len(placed)
    best = None
    if K:  # the lowest component within the tolerance of the strongest; outside its box a map is 0
        best = np.where(sam <= INSTANCE_TIE_TOLERANCE, 0, -1).astype(np.int64)
        for c, ((r0, c0, r1, c1), m) in reversed(list(enumerate(placed))):
            win = best[r0:r1, c0:c1]
            tied = (m >= sam[r0:r1, c0:c1] - INSTANCE_TIE_TOLERANCE) & (win != 0)
            win[tied] = c
    return _fused(rough, sam, best, K, config, valid)


def _fused(rough, sam, best, K: int, config, valid) -> FinalMaps:
    """The final map, mask and instances from the SAM map ``sam`` (max over components) and ``best`` (H, W), the
    component each pixel's instance comes from (None without components)."""
    final = np.clip(config.alpha * rough + (1.0 - config.alpha) * sam, 0.0, 1.0).astype(np.float32)
    if valid is not None:
        final[~valid] = 0.0
    mask = final >= config.mask_threshold
    instances = np.zeros(rough.shape, np.int32)
    if K:
        covered = mask & (sam > 0)
        instances[covered] = best[covered] + 1
    rest = mask & (instances == 0)
    if rest.any():
        extra, n = ndi.label(rest, structure=EIGHT_CONNECTED)
        instances[rest] = extra[rest] + K
    ids = np.flatnonzero(np.bincount(instances.ravel()))  # the ids present, sorted (np.unique's, without a sort)
    ids = ids[ids > 0]
    origin = np.where(ids <= K, ids - 1, -1).astype(np.int32)
    return FinalMaps(final, mask, _consecutive(instances, ids), float(final.max()) if final.size else 0.0, origin)


def _consecutive(instances: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Renumber the (sorted, positive) ``ids`` present in ``instances`` to 1..n."""
    if ids.size == 0 or ids[-1] == ids.size:
        return instances
    lut = np.zeros(int(ids[-1]) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[instances]
