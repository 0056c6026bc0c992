"""SAM image embeddings kept on disk, so reopening an image does not run the 10–60 s encoder again.

One ``.npy`` file per (image content, SAM identity) under ``<cache>/embeddings`` (``NAPARI_CLIPSAM_CACHE``
moves it): the float32 features as they came from the encoder, plus a small JSON sidecar with the geometry and
the SAM stamp. Files are written atomically; a file that cannot be read, or whose sidecar names another SAM, is
ignored and replaced. The folder is bounded by bytes: after each write, the least recently used entries go
until the total fits (reading an entry marks it used).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..io.atomic import AtomicBatch

log = logging.getLogger(__name__)


class EmbeddingStore:
    """Embeddings on disk in ``folder``, at most ``max_bytes`` in all (0 disables the store)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _paths(self, image_key: str, model_id: str) -> tuple[Path, Path]:
        name = hashlib.sha256(f"{model_id}\n{image_key}".encode()).hexdigest()[:40]
        return self.folder / f"{name}.npy", self.folder / f"{name}.json"

    def get(self, image_key: str, model_id: str):
        """``(features (1, C, h, w) float32, input_size, original_size)`` or None when absent or unusable."""
        if self.max_bytes <= 0:
            return None
        data, meta = self._paths(image_key, model_id)
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            if info.get("model_id") != model_id or info.get("image_key") != image_key:
                raise ValueError("the entry belongs to another image or SAM")
            features = np.load(data, allow_pickle=False)
            os.utime(data)  # most recently used
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError) as err:
            log.warning("Ignoring unusable SAM embedding cache entry %s (%s); it will be rewritten.", data, err)
            self.misses += 1
            return None
        self.hits += 1
        return features, tuple(info["input_size"]), tuple(info["original_size"])

    def put(self, image_key: str, model_id: str, features: np.ndarray, input_size, original_size) -> None:
        """Store one embedding (atomically), then trim the folder to ``max_bytes``. Failures are only logged."""
        if self.max_bytes <= 0:
            return
        data, meta = self._paths(image_key, model_id)
        buf = io.BytesIO()
        np.save(buf, np.asarray(features, np.float32), allow_pickle=False)
        info = {"model_id": model_id, "image_key": image_key, "input_size": list(map(int, input_size)),
                "original_size": list(map(int, original_size))}
        try:
            with self._lock, AtomicBatch() as batch:
                batch.stage(data, buf.getvalue())
                batch.stage(meta, json.dumps(info).encode("utf-8"))
                batch.commit()
                self._trim()
        except Exception as err:  # a full or read-only disk must not stop segmentation
            log.warning("Could not store the SAM embedding in %s: %s", self.folder, err)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy")) if self.folder.is_dir() else 0

    def _trim(self) -> None:
        entries = []
        for p in self.folder.glob("*.npy"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            total -= size
