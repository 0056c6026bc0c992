"""Score a review's folder in one background job: every image's result and score, for worst first and the flags.

With at least ``mutual_min_images`` (5) single images that can be read, the folder is segmented with
``engine.segment_folder`` (mutual scoring: each image is scored against the others); below that each image is
segmented alone (``engine.segment``, the per-image path). Images that cannot be read, and multi-frame images (an
N×H×W TIFF, reviewed frame by frame), take no part: they have no score and come last in worst-first order, and
are segmented when the review reaches them.

Qt-free and engine-agnostic (anything with ``segment``, ``segment_folder`` and ``config.mutual_min_images``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .flags import ImageFacts, facts_from_result

__all__ = ["FolderScores", "is_single_image", "score_folder"]


@dataclass
class FolderScores:
    """What scoring a folder gave.

    Attributes:
        mode: ``"mutual"`` (segment_folder over ``len(results)`` images) or ``"per-image"``.
        results: image key → ClipSAMResult (the result the review shows for that image).
        facts: image key → :class:`~.flags.ImageFacts` (kept when a result is dropped).
        left_out: image key → why it was not scored (unreadable, multi-frame).
        object_name, settings: what the results were made with (a change means scoring again).
    """

    mode: str
    object_name: str
    settings: dict
    results: dict = field(default_factory=dict)
    facts: dict[str, ImageFacts] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        return {k: f.score for k, f in self.facts.items() if f.score is not None}

    def describe(self, minimum: int) -> str:
        """One sentence for the status line: how the folder was scored."""
        n = len(self.facts)
        extra = f"; {len(self.left_out)} image(s) left out (unreadable or multi-frame)" if self.left_out else ""
        if self.mode == "mutual":
            return f"Folder scored by mutual scoring over {n} images{extra}."
        return (f"Only {n} image(s) to score, fewer than the {minimum} mutual scoring needs: each image was "
                f"segmented on its own (per-image scores){extra}.")


def is_single_image(image) -> bool:
    """H×W or H×W×C (C = 1..4): one image; anything else (N×H×W, N×H×W×C) is a multi-frame stack."""
    a = np.asarray(image) if not hasattr(image, "ndim") else image
    return a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4))


def score_folder(engine, session, object_name: str, settings: dict | None = None,
                 progress: Callable[[str, float], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> FolderScores:
    """Segment and score every single image of ``session`` (a :class:`~.session.QASession`); see the module notes.

    Raises the engine's Cancelled when ``cancelled()`` turns true, and whatever the engine raises otherwise.
    """
    report = progress or (lambda stage, fraction: None)
    settings = dict(settings or {})
    keys, images, left_out = [], [], {}
    for i in range(len(session)):
        key = session.key(i)
        try:
            image = session.read_image(i)
        except (OSError, ValueError) as err:
            left_out[key] = f"unreadable: {err}"
            continue
        if not is_single_image(image):
            left_out[key] = "multi-frame"
            continue
        keys.append(key)
        images.append(image)
        report("reading the folder", 0.05 * (i + 1) / len(session))
    minimum = int(engine.config.mutual_min_images)

    def scaled(stage: str, fraction: float) -> None:
        report(f"scoring the folder: {stage}", 0.05 + 0.95 * float(fraction))

    if len(images) >= minimum:
        mode = "mutual"
        results = engine.segment_folder(images, object_name, progress=scaled, cancelled=cancelled,
                                        settings=settings)
    else:
        mode, results = "per-image", []
        for j, image in enumerate(images):
            results.append(engine.segment(image, object_name, cancelled=cancelled, settings=settings,
                                          progress=lambda s, f, j=j: scaled(s, (j + f) / len(images))))
    out = FolderScores(mode, object_name, settings, left_out=left_out)
    for key, result in zip(keys, results):
        out.results[key] = result
        out.facts[key] = facts_from_result(result)
    return out
