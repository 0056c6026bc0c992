"""Worst first: the order a folder review walks its images in, and the image scores it is made from.

The order is a permutation of the session's images (positions in :attr:`QASession.images`, which are in natural
file order). Worst first puts the images with the highest score first; ties, and the images without a score
yet (unreadable, multi-frame, or not scored), follow by file order, so the order is the same every time for the
same scores. File order is the plain natural order.

Scores are kept in the output folder (``clipsam_review_scores.json``, written atomically), so a reopened review
has its order at once, before the folder is scored again, and resumes at the first undecided image of that order::

    {"format": "napari-clipsam/review-scores", "version": 2, "key": "3f0c…", "input_dir": "/data/plates",
     "object": "metal plate", "mode": "mutual", "scores": {"img2.png": 0.91, ...}}

The file is a cache of what the engine gave, never the record of the user's work (that is the manifest), so like
every on-disk cache it is named by everything that determines it: ``key`` is :func:`scores_key`, the
:func:`~napari_clipsam.io.cache_files.cache_key` of the engine's identity (models, weights, architectures,
backend and precisions), every config field that changes a score (the per-call thresholds included: mutual
scoring, tiling, few-shot, prompts...), the normal references in use, the object name, the input folder, the
images' sizes and times, and :data:`SCORES_VERSION`. A file whose key differs is stale: the folder is scored
again. A file of an older version (version 1 had no key) is ignored, and one that cannot be read is ignored
(and rewritten on the next scoring), with a logged warning.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io.atomic import atomic_file

__all__ = ["SCORES_NAME", "SCORES_VERSION", "ReviewOrder", "file_signatures", "load_scores", "load_scores_file",
           "order_keys", "review_order", "save_scores", "scores_key"]

log = logging.getLogger(__name__)
SCORES_NAME = "clipsam_review_scores.json"
_FORMAT = "napari-clipsam/review-scores"
SCORES_VERSION = 2
"""The scores file's format version (2: keyed by :func:`scores_key`); bump it when what the file holds or how the
scores are made changes, so files of an older version are scored again, never misread."""
_NOT_SCORING = frozenset({"device", "cache_bytes", "embedding_cache_bytes", "feature_cache_bytes", "text_cache",
                          "decoder_batch_size", "embed_without_prompts"})
"""Config fields that never change a score (memory budgets, batching, caches; the resolved device is keyed
instead of the asked one)."""
_IDENTITY = ("clip_model", "clip_weights", "clip_architecture", "sam_model", "sam_weights", "sam_architecture",
             "umci_weights", "config_replaced")
_UNIDENTIFIED = ("random", "None", "")


def review_order(n: int, scores: Mapping[int, float], worst_first: bool = True) -> list[int]:
    """Positions ``0..n-1`` in review order: by score, highest first (ties and unscored images by position), or
    plain position order when ``worst_first`` is False. Scores that are not finite numbers count as unscored."""
    if not worst_first:
        return list(range(n))

    def key(i: int):
        s = scores.get(i)
        ok = isinstance(s, (int, float)) and math.isfinite(s)
        return (0, -float(s), i) if ok else (1, 0.0, i)

    return sorted(range(n), key=key)


class ReviewOrder:
    """Walks a :class:`~napari_clipsam.review.QASession` in review order (it moves the session with ``goto``).

    Args:
        session: the review; its current image stays current when the order changes.
        scores: image key → score (e.g. from :func:`load_scores`).
        worst_first: start worst first (True) or in file order.
    """

    def __init__(self, session, scores: Mapping[str, float] | None = None, worst_first: bool = True):
        self.session = session
        self.scores: dict[str, float] = {}
        self.worst_first = bool(worst_first)
        self.order: list[int] = list(range(len(session)))
        self.set_scores(scores or {})

    def set_scores(self, scores: Mapping[str, float]) -> None:
        """Add or replace scores (key → score) and re-order; the current image stays current."""
        self.scores.update({str(k): float(v) for k, v in scores.items()})
        self._reorder()

    def set_worst_first(self, worst_first: bool) -> None:
        self.worst_first = bool(worst_first)
        self._reorder()

    def score(self, index: int) -> float | None:
        return self.scores.get(self.session.key(index))

    @property
    def position(self) -> int:
        """Where the current image is in the order (0 = first)."""
        return self.order.index(self.session.index)

    def at_end(self) -> bool:
        return self.position >= len(self.order) - 1

    def at_start(self) -> bool:
        return self.position <= 0

    def next(self) -> None:
        """Go to the next image in the order (stays on the last one)."""
        self.session.goto(self.order[min(self.position + 1, len(self.order) - 1)])

    def previous(self) -> None:
        self.session.goto(self.order[max(self.position - 1, 0)])

    def first_undecided(self) -> int | None:
        """The session position of the first image without a verdict in this order, or None."""
        return next((i for i in self.order if self.session.verdict(i) is None), None)

    def resume(self) -> None:
        """Go to the first undecided image of the order (the order's last image when all are decided)."""
        i = self.first_undecided()
        self.session.goto(self.order[-1] if i is None else i)

    def next_matching(self, wanted) -> int | None:
        """The session position of the next image after the current one (in order, wrapping round) for which
        ``wanted(index)`` is true, or None when no other image is."""
        n, start = len(self.order), self.position
        return next((self.order[(start + step) % n] for step in range(1, n)
                     if wanted(self.order[(start + step) % n])), None)

    def _reorder(self) -> None:
        keys = [self.session.key(i) for i in range(len(self.session))]
        self.order = review_order(len(keys), {i: self.scores[k] for i, k in enumerate(keys) if k in self.scores},
                                  self.worst_first)


# ---------------------------------------------------------------- the scores file


def scores_key(engine, object_name: str, settings: Mapping | None, files: Mapping[str, Sequence[int]],
               input_dir: str | Path) -> str | None:
    """The key of the scores ``engine`` makes for this review (see the module notes), or None when its CLIP or
    SAM weights are not identified (``random``): two such engines differ, so their scores are never reused.

    ``settings``: the per-call settings the folder is scored with (the dock's thresholds); ``files``:
    :func:`file_signatures` of the review; ``engine``: anything with ``identity``, ``device``, ``config`` and
    ``normal_references(object_name)`` (a :class:`~napari_clipsam.engine.ClipSAM`).
    """
    from ..io.cache_files import cache_key

    identity = dict(engine.identity)
    if any(str(identity.get(k)) in _UNIDENTIFIED for k in ("clip_weights", "sam_weights")):
        return None
    encoders = identity.get("encoders") or {}
    config = engine.config.replace(**dict(settings or {})).to_dict()
    fields = {"cache": "review-scores", "input_dir": Path(input_dir).resolve().as_posix(), "object": object_name,
              "files": {str(k): list(v) for k, v in files.items()}, "device": str(engine.device),
              "identity": {k: identity.get(k) for k in _IDENTITY},
              "encoders": {k: encoders.get(k) for k in ("backend", "clip_precision", "sam_precision")},
              "config": {k: v for k, v in config.items() if k not in _NOT_SCORING},
              "references": engine.normal_references(object_name or None)}
    return cache_key(fields, SCORES_VERSION)


def load_scores_file(output_dir: str | Path, input_dir: str | Path, object_name: str,
                     key: str | None = None) -> dict | None:
    """The whole scores file kept for this input folder and object name, its ``scores`` cleaned (finite numbers
    only); None when there is none or it is not usable (another folder or object, an older version, unreadable,
    or, when ``key`` is given, another :func:`scores_key`)."""
    path = Path(output_dir) / SCORES_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a review scores file")
        scores = data["scores"]
        if not isinstance(scores, dict):
            raise ValueError("scores is not an object")
        if data.get("version") != SCORES_VERSION:
            log.info("Ignoring the review scores file %s: version %r, not %d (made by an older napari-clipsam); the "
                     "folder is scored again.", path, data.get("version"), SCORES_VERSION)
            return None
        if data.get("input_dir") != Path(input_dir).resolve().as_posix() or data.get("object") != object_name:
            return None
        if key is not None and data.get("key") != key:
            return None
        data["scores"] = {str(k): float(v) for k, v in scores.items()
                          if isinstance(v, (int, float)) and math.isfinite(v)}
        return data
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        log.warning("Ignoring the review scores file %s (%s); the folder is scored again.", path, err)
        return None


def load_scores(output_dir: str | Path, input_dir: str | Path, object_name: str) -> dict[str, float]:
    """The scores kept for this input folder and object name (empty when there are none or the file is not
    usable: another folder or object, or unreadable)."""
    data = load_scores_file(output_dir, input_dir, object_name)
    return {} if data is None else data["scores"]


def file_signatures(session) -> dict[str, list[int]]:
    """image key → [size, mtime_ns] of every image of a review: scores made from other files are stale."""
    out = {}
    for i, path in enumerate(session.images):
        try:
            st = Path(path).stat()
            out[session.key(i)] = [int(st.st_size), int(st.st_mtime_ns)]
        except OSError:
            out[session.key(i)] = [-1, -1]
    return out


def save_scores(output_dir: str | Path, input_dir: str | Path, object_name: str, mode: str,
                scores: Mapping[str, float], extra: Mapping | None = None, key: str | None = None) -> Path:
    """Write the scores file atomically (the folder is created if needed); raises OSError when it cannot.
    ``extra``: more JSON fields kept beside the scores (the dock keeps the files' signatures, the settings, the
    flags' facts and the images left out); ``key``: the :func:`scores_key` they were made under (None: unknown,
    never matched on reopening)."""
    path = Path(output_dir) / SCORES_NAME
    data = {**dict(extra or {}), "format": _FORMAT, "version": SCORES_VERSION, "key": key,
            "input_dir": Path(input_dir).resolve().as_posix(), "object": object_name, "mode": mode,
            "scores": {str(k): float(v) for k, v in sorted(scores.items())}}
    with atomic_file(path) as f:
        f.write(json.dumps(data, indent=1).encode("utf-8"))
    return path


def order_keys(session, order: Sequence[int]) -> list[str]:
    """The image keys of ``order`` (for messages and tests)."""
    return [session.key(i) for i in order]
