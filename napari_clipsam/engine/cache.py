"""The engine's per-image cache: CLIP features, SAM embeddings and decoded prompts in one store, under one lock and
one byte bound."""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch


def nbytes(value) -> int:
    """Bytes held by a cached value: tensors and arrays (also inside lists, tuples and dataclasses)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if hasattr(value, "nbytes") and not isinstance(value, type):
        return int(value.nbytes)
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


class EngineCache:
    """Every per-image cache of an engine — CLIP features, SAM embeddings, decoded prompts — in one
    least-recently-used store, under one lock and one byte bound (``config.cache_bytes``).

    Keys are tuples whose first item names the kind (``("embedding", image_key)``). The least recently used
    entries go first once the bytes held exceed ``max_bytes``; the entry just stored always stays, so one image
    larger than the bound still runs. Thread-safe: the widget prefetches and refines on other threads.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key, value) -> None:
        size = nbytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            self.bytes += size - (old[1] if old is not None else 0)
            self._items[key] = (value, size)
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, (_, freed) = self._items.popitem(last=False)
                self.bytes -= freed

    def clear(self, kind: str | None = None) -> None:
        """Forget every entry, or those of one kind (``"features"``, ``"embedding"``, ``"decoded"``)."""
        with self._lock:
            for key in [k for k in self._items if kind is None or k[0] == kind]:
                self.bytes -= self._items.pop(key)[1]

    def __len__(self) -> int:
        return len(self._items)
