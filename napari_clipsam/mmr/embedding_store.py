"""SAM image embeddings kept on disk, so reopening an image does not run the 10–60 s encoder again.

One ``.npy`` file per (image content, SAM identity) under ``<cache>/embeddings`` (``NAPARI_CLIPSAM_CACHE``
moves it): the float32 features as they came from the encoder, plus a small JSON sidecar with the geometry and
the SAM stamp. Files are written atomically. Every file name is the
:func:`~napari_clipsam.io.cache_files.cache_key` of the store's :data:`STORE_FORMAT`, the SAM stamp (model,
weights, architecture, backend, precision, device) and the image's content hash, so an entry of an older format
is never read. An entry is used only when it checks out
inside the read (:func:`_check`): the sidecar is this format's, names this SAM and image and has two positive
sizes, and the array is a finite float32 ``(1, C, h, w)`` of the shape the sidecar records. Anything else is a
miss, logged, and rewritten by the next put. The folder is bounded by bytes (every file in it, temporaries left
by killed writers included, which are swept when the store is first used): after each write, the least recently
used entries go until the total fits (reading an entry marks it used).
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..io.atomic import AtomicBatch
from ..io.cache_files import CacheInfo, HitCounter, cache_key

log = logging.getLogger(__name__)
STORE_FORMAT = 2
"""Part of every entry's name and sidecar: bump when what an entry holds changes."""


def _sizes(info: dict, field: str) -> tuple[int, int]:
    value = info.get(field)
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"its sidecar's {field} is {value!r}, not two positive integers")
    return int(value[0]), int(value[1])


def _check(info, features, image_key: str, model_id: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(input_size, original_size)`` of a valid entry; raises ValueError saying what is wrong with it."""
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
        raise ValueError(f"its sidecar is not of format {STORE_FORMAT}")
    if info.get("model_id") != model_id or info.get("image_key") != image_key:
        raise ValueError("the entry belongs to another image or SAM")
    sizes = _sizes(info, "input_size"), _sizes(info, "original_size")
    if not isinstance(features, np.ndarray) or features.dtype != np.float32 or features.ndim != 4 \
            or features.shape[0] != 1 or 0 in features.shape:
        raise ValueError(f"it holds {getattr(features, 'dtype', type(features).__name__)} "
                         f"{getattr(features, 'shape', '')}, not float32 (1, C, h, w)")
    if list(features.shape) != info.get("shape"):
        raise ValueError(f"its array is {tuple(features.shape)}, its sidecar says {info.get('shape')}")
    if not np.isfinite(features).all():
        raise ValueError("it holds NaN or infinite values")
    return sizes


def entry_key(image_key: str, model_id: str, version: int | None = None) -> str:
    """The file name (without suffix) of the embedding of image ``image_key`` by SAM ``model_id``."""
    return cache_key({"cache": "sam-embedding", "sam": model_id, "image": image_key},
                     STORE_FORMAT if version is None else version, length=40)


class EmbeddingStore:
    """Embeddings on disk in ``folder``, at most ``max_bytes`` in all (0 disables the store)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self._lock = threading.Lock()
        self._counts = HitCounter()
        if self.max_bytes > 0:
            from ..io.cache_files import sweep_stale

            sweep_stale(self.folder)

    def _paths(self, image_key: str, model_id: str) -> tuple[Path, Path]:
        name = entry_key(image_key, model_id)
        return self.folder / f"{name}.npy", self.folder / f"{name}.json"

    def has(self, image_key: str, model_id: str) -> bool:
        """Whether an entry for this image and SAM is on disk (not read or checked; not counted)."""
        return self.max_bytes > 0 and all(p.exists() for p in self._paths(image_key, model_id))

    def get(self, image_key: str, model_id: str):
        """``(features (1, C, h, w) float32, input_size, original_size)`` or None when absent or unusable."""
        if self.max_bytes <= 0:
            return None
        data, meta = self._paths(image_key, model_id)
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            features = np.load(data, allow_pickle=False)
            input_size, original_size = _check(info, features, image_key, model_id)
            os.utime(data)  # most recently used
        except FileNotFoundError:
            self._counts.miss()
            return None
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            log.warning("Ignoring unusable SAM embedding cache entry %s (%s); it will be rewritten.", data, err)
            self._counts.miss()
            return None
        self._counts.hit()
        return features, input_size, original_size

    def put(self, image_key: str, model_id: str, features: np.ndarray, input_size, original_size) -> None:
        """Store one embedding (atomically), then trim the folder to ``max_bytes``. Failures are only logged."""
        if self.max_bytes <= 0:
            return
        data, meta = self._paths(image_key, model_id)
        features = np.asarray(features, np.float32)
        if features.ndim != 4 or not np.isfinite(features).all():
            log.warning("Not storing a SAM embedding of shape %s with NaN/infinite values or not 4-D.", features.shape)
            return
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        info = {"format": STORE_FORMAT, "model_id": model_id, "image_key": image_key,
                "input_size": list(map(int, input_size)), "original_size": list(map(int, original_size)),
                "shape": list(features.shape)}
        try:
            with self._lock, AtomicBatch() as batch:
                batch.stage(data, buf.getvalue())
                batch.stage(meta, json.dumps(info).encode("utf-8"))
                batch.commit()
                self._trim()
        except Exception as err:  # a full or read-only disk must not stop segmentation
            from ..io.cache_files import cache_unusable

            cache_unusable(self.folder, "SAM embeddings", err)

    def cache_info(self) -> CacheInfo:
        """Hits and misses of :meth:`get` (a damaged entry is a miss) and the entries on disk (0 when off)."""
        entries = 0
        if self.max_bytes > 0:
            try:
                entries = sum(1 for _ in self.folder.glob("*.npy"))
            except OSError:
                entries = 0
        return self._counts.info(entries)

    def total_bytes(self) -> int:
        """Bytes of every file in the folder: entries, sidecars and any temporaries killed writers left."""
        from ..io.cache_files import folder_bytes

        return folder_bytes(self.folder)

    def _trim(self) -> None:
        entries = []
        for p in self.folder.glob("*.npy"):
            try:
                size = p.stat().st_size
                mtime = p.stat().st_mtime_ns
                side = p.with_suffix(".json")
                size += side.stat().st_size if side.exists() else 0
            except FileNotFoundError:
                continue
            entries.append((mtime, size, p))
        total = self.total_bytes()
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            total -= size
