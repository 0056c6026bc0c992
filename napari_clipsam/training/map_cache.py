"""Evaluated maps kept on disk, so that a second evaluation of the same images with the same engine is cheap.

One folder per engine and evaluation setting (model identities, the UMCI weights as they are now, every
threshold, the evaluation resolution, rough-only or not); one compressed ``.npz`` per image and object name,
holding the squashed float32 maps exactly as the metrics saw them, so a cached run gives the same figures.
Folder and file names come from :func:`~napari_clipsam.io.cache_files.cache_key` with :data:`MAP_CACHE_FORMAT`, so
an entry of an older format is never read. About 0.4 MB per image and map at 336 px. Delete the folder
(``<cache>/eval``) to reclaim the space.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_file
from ..io.cache_files import CacheInfo, HitCounter, cache_key
from ..io.images import image_key

MAP_CACHE_FORMAT = 1
"""Part of every folder's and file's key: bump when what an entry holds changes, so older entries are never read."""


class MapCache:
    """Squashed rough (and final) maps per image for one engine and evaluation setting."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._counts = HitCounter()

    @classmethod
    def for_run(cls, engine, *, resolution: int, rough_only: bool, root: str | os.PathLike | None = None) -> MapCache:
        """The cache of this engine (as configured now) at this resolution, under ``root`` (default:
        ``<napari-clipsam cache>/eval``)."""
        from .._version import __version__
        from ..clip.text_encoder import weights_fingerprint
        from ..weights.registry import cache_dir

        umci = None if engine.umci is None else weights_fingerprint(engine.umci)  # as trained now, not as loaded
        setting = {"cache": "eval-maps", "package": __version__, "identity": engine.identity, "umci": umci,
                   "mode": engine.mode, "thresholds": engine.config.thresholds(),
                   "prompts": engine.config.prompt_set_hash(), "resolution": int(resolution),
                   "rough_only": bool(rough_only), "fewshot": engine.reference_sets()}
        return cls(Path(root) if root is not None else
                   cache_dir() / "eval" / cache_key(setting, MAP_CACHE_FORMAT, length=20))

    def _path(self, rgb: np.ndarray, object_name: str, version: int | None = None) -> Path:
        fields = {"image": image_key(rgb), "object_name": object_name}
        return self.folder / f"{cache_key(fields, MAP_CACHE_FORMAT if version is None else version)}.npz"

    def get(self, rgb: np.ndarray, object_name: str) -> dict[str, np.ndarray] | None:
        """The cached maps of a normalised image, or None (an unreadable file counts as absent)."""
        path = self._path(rgb, object_name)
        try:
            with np.load(path) as data:
                maps = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError):
            self._counts.miss()
            return None
        self._counts.hit()
        return maps

    def cache_info(self) -> CacheInfo:
        """Counts of :meth:`get` since this cache was opened, like :func:`functools.lru_cache`'s: ``hits`` (maps
        read from disk), ``misses`` (absent or unreadable: the engine runs) and ``currsize`` (entries in the
        folder now)."""
        return self._counts.info(sum(1 for _ in self.folder.glob("*.npz")) if self.folder.is_dir() else 0)

    def put(self, rgb: np.ndarray, object_name: str, maps: dict[str, np.ndarray]) -> None:
        """Store maps atomically (a temporary file in the same folder, then a rename)."""
        with atomic_file(self._path(rgb, object_name)) as f:
            np.savez_compressed(f, **{k: np.asarray(v, np.float32) for k, v in maps.items()})
