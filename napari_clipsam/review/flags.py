"""Flags a reviewer wants to see first, as pure functions of an image's result facts, its verdict and the folder's
scores (no Qt, no engine).

* ``hot, no object``: the rough map reaches τ_prompt somewhere, yet no object came out (a missed defect, or a
  threshold to lower).
* ``object outside hot``: an object has no pixel where the rough map reaches τ_prompt (SAM grew a mask from a
  prompt into a region CLIP did not find anomalous; or a user prompt there).
* ``accepted normal, high score``: accepted with no object although the image's score is among the folder's
  highest (``high_quantile``, default the top quarter).
* ``rejected, low score``: rejected although its score is among the folder's lowest (``low_quantile``, default
  the bottom quarter): perhaps a good part.

A low SAM predicted IoU is **not** flagged: results do not carry the decoder's predicted IoUs; masks below
``min_predicted_iou`` (config, 0.5 by default) are already dropped when the masks are merged.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["FLAG_LABELS", "ImageFacts", "facts_from_result", "image_flags", "score_bounds"]

HOT_NO_OBJECT = "hot, no object"
OUTSIDE_HOT = "object outside hot"
ACCEPTED_HIGH = "accepted normal, high score"
REJECTED_LOW = "rejected, low score"
FLAG_LABELS = (HOT_NO_OBJECT, OUTSIDE_HOT, ACCEPTED_HIGH, REJECTED_LOW)


@dataclass(frozen=True)
class ImageFacts:
    """What the flags need from one image's engine result (small: kept for every image of a review)."""

    score: float | None
    n_objects: int
    hot: bool  # the rough map reaches τ_prompt
    outside: int  # objects with no pixel where the rough map reaches τ_prompt


def facts_from_result(result, prompt_threshold: float | None = None) -> ImageFacts:
    """The :class:`ImageFacts` of a ClipSAMResult; τ_prompt defaults to the one the result was made with."""
    if prompt_threshold is None:
        prompt_threshold = float(result.provenance.get("thresholds", {}).get("prompt_threshold", 0.5))
    rough = np.asarray(result.rough_map)
    hot_region = rough >= prompt_threshold
    instances = np.asarray(result.instances)
    ids = np.unique(instances[instances > 0])
    if hot_region.shape == instances.shape:
        inside = set(np.unique(instances[hot_region & (instances > 0)]).tolist())
        outside = sum(1 for i in ids.tolist() if i not in inside)
    else:  # cannot compare: count none rather than guess
        outside = 0
    score = result.image_score if result.image_score is not None else result.score
    return ImageFacts(score=None if score is None else float(score), n_objects=int(len(ids)),
                      hot=bool(hot_region.any()), outside=int(outside))


def score_bounds(scores: Iterable[float], high_quantile: float = 0.75,
                 low_quantile: float = 0.25) -> tuple[float, float] | None:
    """(high, low): a score ≥ high is among the folder's highest, ≤ low among its lowest. None with fewer than
    four scores (too few to call any of them high or low)."""
    values = np.asarray([float(s) for s in scores if s is not None and np.isfinite(s)], np.float64)
    if len(values) < 4:
        return None
    return float(np.quantile(values, high_quantile)), float(np.quantile(values, low_quantile))


def image_flags(facts: ImageFacts | None, verdict: str | None = None, accepted_objects: int | None = None,
                bounds: tuple[float, float] | None = None) -> list[str]:
    """The flags of one image (a list of :data:`FLAG_LABELS`, in that order).

    Args:
        facts: from the image's engine result (None when it has none: then only verdict flags can apply, and
            only with a score).
        verdict: ``"accepted"``, ``"rejected"``, ``"skipped"`` or None (undecided).
        accepted_objects: objects in the accepted labels (the manifest's ``n_instances``); None: unknown.
        bounds: :func:`score_bounds` of the folder.
    """
    flags = []
    if facts is not None and facts.hot and facts.n_objects == 0:
        flags.append(HOT_NO_OBJECT)
    if facts is not None and facts.outside > 0:
        flags.append(OUTSIDE_HOT)
    score = None if facts is None else facts.score
    if bounds is not None and score is not None:
        high, low = bounds
        if verdict == "accepted" and accepted_objects == 0 and score >= high:
            flags.append(ACCEPTED_HIGH)
        if verdict == "rejected" and score <= low:
            flags.append(REJECTED_LOW)
    return flags
