"""The result of one ClipSAM run: maps, prompts, masks and provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..mmr.prompts import Prompts


@dataclass
class ClipSAMResult:
    """Everything ClipSAM produced for one image. Coordinates are (row, col).

    Attributes:
        rough_map: (H, W) float32 in [0, 1], CLIP's anomaly probability (UMCI or training-free).
        prompts: the point and box prompts MMR ran with (:class:`~napari_clipsam.mmr.prompts.Prompts`; their
            full-size component map is dropped once the masks are made). ``points`` (N, 2) float32 (row, col),
            ``point_labels`` (N,) int32 (1 positive / 0 negative) and ``boxes`` (M, 4) float32 (row0, col0, row1,
            col1, inclusive-exclusive) are read-only views of them.
        final_map: (H, W) float32 in [0, 1] after SAM refinement; mask: final_map ≥ τ_mask, (H, W) bool.
        instances: (H, W) int32 instance ids, 0 = background; score: image anomaly score (max of final_map).
        provenance: package version, models and weights ids, mode ("umci" or "training-free"), thresholds.
        instance_component: (num_instances,) int32, the prompt component each instance id came from
            (``instance_component[i - 1]`` for id ``i``; -1: a piece of the mask that no component covers).
        valid: (H, W) bool, pixels that exist in the input (NaN pixels do not); None = all.
        image_key, sam_id: the handle of the image's SAM embedding (content hash of the normalised image, and the
            SAM that embedded it; ``""`` when none was computed). A result is a plain value: the embedding itself
            and everything decoded on it stay in the engine's cache (:meth:`ClipSAM.refine` finds them there).
        image_score: how anomalous the image is, in [0, 1], to order a review worst first (also ``image_score`` in
            provenance): from :meth:`ClipSAM.segment_folder`, the maximum of its smoothed calibrated mutual map, or
            of its fused rough map when normal references take part (``mutual_image_score``); from the other
            calls, the maximum of the final map (``score``).
    """

    rough_map: np.ndarray
    final_map: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    score: float
    provenance: dict[str, Any]
    prompts: Prompts = field(default_factory=Prompts)
    instance_component: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int32))
    valid: np.ndarray | None = field(repr=False, default=None)
    image_key: str = field(repr=False, default="")
    sam_id: str = field(repr=False, default="")
    image_score: float | None = None

    @property
    def points(self) -> np.ndarray:
        return self.prompts.points

    @property
    def point_labels(self) -> np.ndarray:
        return self.prompts.point_labels

    @property
    def boxes(self) -> np.ndarray:
        return self.prompts.boxes

    @property
    def mode(self) -> str:
        return self.provenance.get("mode", "")

    @property
    def num_instances(self) -> int:
        return int(self.instances.max()) if self.instances.size else 0
