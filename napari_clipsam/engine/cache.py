"""The engine's per-image cache (CLIP features, SAM embeddings and decoded prompts in one store, under one lock and
one byte bound) and the hit/miss counts :meth:`~napari_clipsam.engine.clipsam.ClipSAM.cache_info` reports."""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

import torch

from ..io.cache_files import CacheInfo, HitCounter

__all__ = ["CacheInfo", "EngineCache", "EngineCacheInfo", "HitCounter", "nbytes"]


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


@dataclasses.dataclass(frozen=True)
class EngineCacheInfo:
    """What :meth:`~napari_clipsam.engine.clipsam.ClipSAM.cache_info` returns: one :class:`CacheInfo` per cache,
    counted since the engine was built, and the in-memory store's size.

    A miss is exactly a run of the model behind the cache; a hit is an answer without it.
    """

    sam_embeddings: CacheInfo
    """SAM image embeddings, in memory or on disk: a miss is one image through SAM's image encoder;
    ``currsize`` counts the embeddings in memory."""
    sam_embedding_store: CacheInfo
    """The on-disk part alone (``<cache>/embeddings``): lookups the memory could not answer; ``currsize`` counts
    the entries on disk (0 when the store is off)."""
    clip_features: CacheInfo
    """CLIP vision features per image (memory, and for ``segment_folder`` the on-disk store): a miss is one image
    through CLIP's vision tower."""
    clip_feature_store: CacheInfo
    """The on-disk CLIP features of folder mutual scoring (``<cache>/features``): lookups the memory could not
    answer; ``currsize`` counts the entries on disk (0 when the store is off: ``feature_cache_bytes`` 0, or weights
    not identified by content)."""
    text_embeddings: CacheInfo
    """Prompt-ensemble text embeddings per object name (memory, then ``<cache>/text``): a miss is one run of
    CLIP's text tower."""
    reference_banks: CacheInfo
    """Few-shot normal-reference banks (``<cache>/references``): a miss is one bank built by CLIP from the
    references' views; ``currsize`` counts the sets in use."""
    sam_decoder: CacheInfo
    """Decoded prompts (memory): a miss is one prompt through SAM's mask decoder."""
    entries: int
    """Entries in the engine's in-memory store (features, embeddings, decoded prompts and merged components
    together)."""
    bytes: int
    """Bytes the in-memory store holds."""
    max_bytes: int
    """Its bound, ``config.cache_bytes``."""
    merged_components: CacheInfo = CacheInfo(0, 0, 0)
    """Components' merged maps made from decoded prompts (memory): a miss is one component filtered and merged
    (its prompts then decoded or taken from ``sam_decoder``); a hit answers its prompts (counted there too)."""


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
        self.counts: dict[str, HitCounter] = {}
        """Hits and misses of :meth:`get` per kind (the engine reads the ``"decoded"`` ones)."""

    def _counter(self, kind) -> HitCounter:
        counter = self.counts.get(kind)
        if counter is None:
            counter = self.counts.setdefault(kind, HitCounter())
        return counter

    def get(self, key):
        """The value stored under ``key`` (now the most recently used), or None; counted per kind."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
        (self._counter(key[0]).miss if item is None else self._counter(key[0]).hit)()
        return None if item is None else item[0]

    def count_hits(self, kind: str, n: int) -> None:
        """Count ``n`` hits of ``kind`` answered without a :meth:`get` of their own (a component's merged map
        answers its decoded prompts: :func:`~napari_clipsam.mmr.levels.placed_component_maps`)."""
        if n:
            self._counter(kind).hit(n)

    def peek(self, key):
        """The value stored under ``key`` or None, neither counted nor marked as used."""
        with self._lock:
            item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key, value) -> None:
        """Store ``value`` under ``key``, then drop the least recently used entries beyond ``max_bytes``."""
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

    def count(self, kind: str) -> int:
        """Entries of one kind held now."""
        with self._lock:
            return sum(1 for k in self._items if k[0] == kind)

    def __len__(self) -> int:
        return len(self._items)
