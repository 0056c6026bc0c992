"""What a folder review feeds back into labelling: its good parts as normal references (no Qt, no torch).

::

    learning = ReviewLearning()                         # good_as_references=True by default
    refs = learning.references(session.output_dir)      # images accepted as good parts, as RGB arrays
    engine.set_normal_references(refs)                  # the next images' rough maps use them

A front end (the dock, a script) calls :meth:`ReviewLearning.references` when it opens or resumes a review and
after each good-part verdict; with ``good_as_references`` off it returns nothing. The same images are what
``napari-clipsam segment --normal LABELS_FOLDER`` takes. The other half of learning from a review, adapting the
UMCI head to the accepted labels, is :func:`napari_clipsam.training.adapt.adapt_to_review`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.review_labels import accepted_good_images, is_review_folder
from ..data.samples import load_image

__all__ = ["ReviewLearning"]


@dataclass(frozen=True)
class ReviewLearning:
    """Settings of how a review's verdicts are reused.

    Attributes:
        good_as_references: images accepted as good parts (defect-free) become the engine's normal references
            (few-shot, method.md#normal-references-few-shot) for the next images.
        max_references: at most this many of them (the first in the review's order); the few-shot map's cost
            grows with the number of references.
    """

    good_as_references: bool = True
    max_references: int = 16

    def reference_files(self, labels_dir: str | Path) -> list[Path]:
        """The image files to use as normal references (empty when the setting is off or there are none)."""
        if not self.good_as_references or not is_review_folder(labels_dir):
            return []
        return accepted_good_images(labels_dir)[:max(0, int(self.max_references))]

    def references(self, labels_dir: str | Path) -> list[np.ndarray]:
        """Those images as ``(H, W, 3) uint8`` RGB arrays, ready for ``engine.set_normal_references``."""
        return [load_image(p) for p in self.reference_files(labels_dir)]
