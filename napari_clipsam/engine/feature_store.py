"""Per-image CLIP features kept on disk, so a resumed or repeated folder run (``segment_folder``) does not run CLIP's
vision tower again for images it has seen.

One ``.npz`` file per image under ``<cache>/features`` (``NAPARI_CLIPSAM_CACHE`` moves it), named by the
:func:`~napari_clipsam.io.cache_files.cache_key` of :data:`STORE_FORMAT` and of everything that determines the
tokens (:func:`feature_fields`): the CLIP model, weights and architecture ids, the encoder backend and precision,
the input size and preprocessing, the feature layers, the engine's mode (which tokens the rough map uses) and the
image's content hash. An entry holds the float32 arrays exactly as the encoder made them, plus its fields, which are
checked on reading (another format, image or model, a missing, non-finite or mis-shaped array: a miss, logged, and
rewritten). Written atomically (:class:`~napari_clipsam.io.atomic.AtomicBatch`); the folder is bounded by bytes, least
recently used entries going first (reading an entry marks it used). Weights not identified by content (``random``)
never meet their features again: the store is off for them. Failures to write are logged, never raised.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.atomic import AtomicBatch
from ..io.cache_files import CacheInfo, HitCounter, cache_key

log = logging.getLogger(__name__)
STORE_FORMAT = 1
"""Part of every entry's name and content: bump when what an entry holds changes."""
UNIDENTIFIED = ("random", "None", "")


def feature_fields(identity: dict[str, Any], vision, config, mode: str) -> dict[str, Any] | None:
    """What determines one engine's CLIP features of an image (the image's hash aside), or None when the weights
    are not identified by content (the store is then off)."""
    weights = str(identity.get("clip_weights"))
    if weights in UNIDENTIFIED:
        return None
    encoders = identity.get("encoders") or {}
    return {"cache": "clip-features", "clip_model": identity.get("clip_model"), "clip_weights": weights,
            "clip_architecture": identity.get("clip_architecture"), "backend": encoders.get("backend", "torch"),
            "clip_precision": encoders.get("clip_precision", config.dtype), "dtype": config.dtype,
            "image_size": int(config.image_size),
            "preprocess": {"resize": "squash-bicubic-antialias", "mean": [float(v) for v in vision.mean],
                           "std": [float(v) for v in vision.std]},
            "layers": [int(i) for i in config.feature_layers], "mode": mode}


def _to_arrays(value) -> dict[str, np.ndarray]:
    """(rough-map tokens, per-layer tokens) → named float32 arrays; a list of per-layer tensors keeps its order."""
    rough, layers = value
    out = {}
    for name, part in (("rough", rough), ("layer", layers)):
        if isinstance(part, torch.Tensor):
            out[f"{name}"] = part.detach().float().cpu().numpy()
        elif part is not None:
            out.update({f"{name}{i}": t.detach().float().cpu().numpy() for i, t in enumerate(part)})
    return out


def _from_arrays(arrays: dict[str, np.ndarray], layout: dict[str, Any], device) -> tuple:
    def part(name):
        kind = layout[name]
        if kind is None:
            return None
        if kind == "tensor":
            return torch.from_numpy(arrays[name]).to(device)
        return [torch.from_numpy(arrays[f"{name}{i}"]).to(device) for i in range(int(kind))]

    return part("rough"), part("layer")


def _layout(value) -> dict[str, Any]:
    return {name: (None if part is None else "tensor" if isinstance(part, torch.Tensor) else len(part))
            for name, part in zip(("rough", "layer"), value)}


class FeatureStore:
    """CLIP features on disk in ``folder``, at most ``max_bytes`` in all (0 disables the store), for one engine
    (``fields``: :func:`feature_fields`, None disables it too)."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int, fields: dict[str, Any] | None, device="cpu"):
        self.folder, self.max_bytes, self.fields = Path(folder), int(max_bytes), fields
        self.device = device
        self._lock = threading.Lock()
        self._counts = HitCounter()
        if self.enabled:
            from ..io.cache_files import sweep_stale

            sweep_stale(self.folder)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.fields is not None

    def _path(self, image_key: str) -> Path:
        return self.folder / f"{cache_key({**self.fields, 'image': image_key}, STORE_FORMAT, length=40)}.npz"

    def __contains__(self, image_key: str) -> bool:
        """Whether an entry for the image is on disk (not read, not counted: :meth:`get` checks it)."""
        return self.enabled and self._path(image_key).is_file()

    def get(self, image_key: str):
        """``(rough-map tokens, per-layer tokens or None)`` of image ``image_key``, or None (absent, unusable, off)."""
        if not self.enabled:
            return None
        path = self._path(image_key)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
            if meta.get("format") != STORE_FORMAT or meta.get("fields") != self.fields \
                    or meta.get("image") != image_key:
                raise ValueError("the entry belongs to another format, image or model")
            for name, a in arrays.items():
                if a.dtype != np.float32 or list(a.shape) != meta["shapes"].get(name) or not np.isfinite(a).all():
                    raise ValueError(f"its array {name} is {a.dtype} {a.shape}, not finite float32 "
                                     f"{meta['shapes'].get(name)}")
            value = _from_arrays(arrays, meta["layout"], self.device)
            os.utime(path)  # most recently used
        except FileNotFoundError:
            self._counts.miss()
            return None
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            log.warning("Ignoring unusable CLIP feature cache entry %s (%s); it will be rewritten.", path, err)
            self._counts.miss()
            return None
        self._counts.hit()
        return value

    def put(self, image_key: str, value) -> None:
        """Store one image's features (atomically), then trim the folder to ``max_bytes``."""
        if not self.enabled:
            return
        arrays = _to_arrays(value)
        if not all(np.isfinite(a).all() for a in arrays.values()):
            log.warning("Not storing CLIP features with NaN or infinite values.")
            return
        meta = {"format": STORE_FORMAT, "fields": self.fields, "image": image_key, "layout": _layout(value),
                "shapes": {k: list(a.shape) for k, a in arrays.items()}}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8), **arrays)
        try:
            with self._lock, AtomicBatch() as batch:
                batch.stage(self._path(image_key), buf.getvalue())
                batch.commit()
                self._trim()
        except Exception as err:  # a full or read-only disk must not stop segmentation
            from ..io.cache_files import cache_unusable

            cache_unusable(self.folder, "CLIP features", err)

    def cache_info(self) -> CacheInfo:
        """Hits and misses of :meth:`get` (a damaged entry is a miss) and the entries on disk (0 when off)."""
        entries = 0
        if self.enabled:
            try:
                entries = sum(1 for _ in self.folder.glob("*.npz"))
            except OSError:
                entries = 0
        return self._counts.info(entries)

    def _trim(self) -> None:
        from ..io.cache_files import folder_bytes

        entries = []
        for p in self.folder.glob("*.npz"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, p))
        total = folder_bytes(self.folder)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
