"""The engine's runtime plumbing (no method here): device choice, the small per-image LRU caches, the stamp of a
SAM's embeddings, and tensor helpers for batches of per-layer features."""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LRU:
    """A small thread-safe least-recently-used cache (the widget prefetches in a background thread)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def transformer_blocks(module, *path: str):
    """The transformer blocks at ``module.<path>`` (for per-block progress), or () when the model has none."""
    for name in path:
        module = getattr(module, name, None)
    return module if module is not None else ()


def sam_identity(identity: dict[str, Any], device: torch.device, dtype: str, backend: str = "torch") -> str:
    """The stamp of a SAM's embeddings: model, weights, device, precision and backend (``torch`` or e.g.
    ``openvino-bfloat16``). Weights that are not identified by content (``random``) get a token unique to this
    engine, as two random SAMs differ."""
    weights = str(identity.get("sam_weights"))
    if weights in ("random", "None", ""):
        weights = f"{weights}#{uuid.uuid4().hex[:12]}"
    return f"{identity.get('sam_model')}/{weights}/{device}/{dtype}/{backend}"


def on_cpu(module) -> bool:
    return next(module.parameters()).device.type == "cpu"


def take(feats, j):
    return [f[j:j + 1] for f in feats] if isinstance(feats, list) else feats[j:j + 1]


def stack(items):
    if isinstance(items[0], list):
        return [torch.cat([it[i] for it in items]) for i in range(len(items[0]))]
    return torch.cat(items)
