"""Crash journal of a folder review: the person's unfinished corrections on an image, kept as a *draft* on disk.

While someone corrects an image (paints, erases, adds or moves prompts, assigns classes, locks objects) the
widget saves the whole correctable state of that image here a second after the last edit, all-or-nothing
(:func:`~napari_clipsam.io.atomic.atomic_file`). If napari crashes or is killed, reopening the review on the
same folders finds the draft and offers it back; a verdict (accept, reject, skip) or declining the offer deletes
it. Nothing here imports Qt: a draft is plain arrays.

Drafts live in ``<output>/.clipsam-drafts/<export stem>.npz`` (one per image), with the image file's size and
modification time, so a draft is never offered for an image that changed since.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_file

__all__ = ["DRAFTS_DIR", "Draft", "DraftJournal"]
log = logging.getLogger(__name__)
DRAFTS_DIR = ".clipsam-drafts"
FORMAT = 1


@dataclass
class Draft:
    """The correctable state of one image's layers.

    Attributes:
        masks: instance labels, (H, W) or (N, H, W) int32.
        classes: instance id → class name.
        points: prompt points (K, D) in the points layer's data coordinates; ``point_labels`` and
            ``point_sources`` one entry per point ("positive"/"negative", "clip"/"user").
        boxes: box prompts, each a (4, D) rectangle as the shapes layer holds it.
        locked: ids of the locked objects.
    """

    masks: np.ndarray
    classes: dict[int, str] = field(default_factory=dict)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_labels: list[str] = field(default_factory=list)
    point_sources: list[str] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    locked: set[int] = field(default_factory=set)

    def same_as(self, other: Draft | None) -> bool:
        """True when both hold exactly the same state (a draft equal to ClipSAM's own result is no draft)."""
        if other is None:
            return False
        return (np.array_equal(self.masks, other.masks) and self.classes == other.classes
                and np.array_equal(self.points, other.points) and self.point_labels == other.point_labels
                and self.point_sources == other.point_sources and len(self.boxes) == len(other.boxes)
                and all(np.array_equal(a, b) for a, b in zip(self.boxes, other.boxes))
                and self.locked == other.locked)

    def summary(self) -> str:
        n = int(len(np.unique(self.masks[self.masks > 0])))
        return f"{n} object(s), {len(self.points)} point(s), {len(self.boxes)} box(es), {len(self.locked)} locked"


class DraftJournal:
    """The drafts of one review output folder (see the module notes)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir) / DRAFTS_DIR

    def path(self, stem: str) -> Path:
        return self.folder / f"{stem}.npz"

    def save(self, stem: str, image_file: str | os.PathLike, draft: Draft) -> Path:
        """Write the draft of the image saved under ``stem`` atomically (the previous draft stays whole until the
        new one is complete). Raises OSError when it cannot be written."""
        meta = {"format": FORMAT, "image": _identity(image_file), "classes": {str(k): v for k, v in
                                                                           draft.classes.items()},
                "point_labels": list(draft.point_labels), "point_sources": list(draft.point_sources),
                "locked": sorted(int(i) for i in draft.locked), "n_boxes": len(draft.boxes)}
        arrays = {"masks": np.asarray(draft.masks, np.int32), "points": np.asarray(draft.points, np.float64),
                  "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        arrays.update({f"box{i}": np.asarray(b, np.float64) for i, b in enumerate(draft.boxes)})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.path(stem)
        for attempt in (1, 2):
            try:
                with atomic_file(path) as f:
                    f.write(buf.getvalue())
                return path
            except FileNotFoundError:  # an export's sweep of stale temporary files took ours: write it again
                if attempt == 2:
                    raise
        return path

    def load(self, stem: str, image_file: str | os.PathLike) -> Draft | None:
        """The draft of an image, or None (none saved, unreadable, or the image file changed since)."""
        path = self.path(stem)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != FORMAT:
                    return None
                if meta.get("image") != _identity(image_file):
                    log.warning("The draft %s is for an older version of %s; not offered.", path, image_file)
                    return None
                return Draft(masks=np.asarray(z["masks"], np.int32),
                             classes={int(k): str(v) for k, v in meta["classes"].items()},
                             points=np.asarray(z["points"], np.float64),
                             point_labels=[str(x) for x in meta["point_labels"]],
                             point_sources=[str(x) for x in meta["point_sources"]],
                             boxes=[np.asarray(z[f"box{i}"]) for i in range(int(meta["n_boxes"]))],
                             locked={int(i) for i in meta["locked"]})
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("The draft %s cannot be read (%s); it is ignored.", path, err)
            return None

    def discard(self, stem: str) -> bool:
        """Delete an image's draft; True when there was one."""
        try:
            self.path(stem).unlink()
            return True
        except FileNotFoundError:
            return False

    def stems(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npz")) if self.folder.is_dir() else []


def _identity(image_file: str | os.PathLike) -> list:
    try:
        st = os.stat(image_file)
    except OSError:
        return [str(Path(image_file).name), None, None]
    return [str(Path(image_file).name), int(st.st_size), int(st.st_mtime_ns)]
