"""The engine actor: loads the models once, reads images from their paths (``segment``'s items: files, or frames of
multi-frame TIFFs) and returns compact per-image results; in mutual mode one call scores one whole group.

The class is plain Python; :mod:`.pool` makes it a Ray actor. Results are small dicts of plain values (the
instance map zlib-compressed), so they travel cheaply back to the driver, which alone writes the outputs.
"""
from __future__ import annotations

import os
import time
import traceback
import zlib

import numpy as np


def pack_instances(instances: np.ndarray) -> dict:
    """(H, W) integer ids → ``{"shape", "dtype", "data"}`` with the bytes zlib-compressed (lossless)."""
    a = np.ascontiguousarray(instances)
    return {"shape": a.shape, "dtype": a.dtype.str, "data": zlib.compress(a.tobytes(), 1)}


def unpack_instances(packed: dict) -> np.ndarray:
    """The inverse of :func:`pack_instances`."""
    return np.frombuffer(zlib.decompress(packed["data"]), np.dtype(packed["dtype"])).reshape(packed["shape"])


def _failure(exc: BaseException) -> dict:
    """What the driver needs to report a failed image as the local command does."""
    from ...errors import ClipSAMUserError

    user = isinstance(exc, ClipSAMUserError)
    return {"error": f"{type(exc).__name__}: {exc}",
            "trace": None if user else "".join(traceback.format_exception(exc))}


class EngineWorker:
    """One engine (:meth:`~napari_clipsam.engine.clipsam.ClipSAM.from_config`) in a Ray worker process.

    Args:
        config: the :class:`~napari_clipsam.config.ClipSAMConfig` (local model paths must exist on every node).
        threads: torch threads (the CPUs the actor reserved).
        normal: ``segment --normal``'s references, ``{"images": [(H, W[, C]) arrays], "object_name"}`` (read
            by the driver and put in Ray's object store once): set here with
            :meth:`~napari_clipsam.engine.clipsam.ClipSAM.set_normal_references`, as the local command does, so an
            actor Ray restarts has them again. None: no references.
    """

    def __init__(self, config, threads: int, normal: dict | None = None):
        import torch

        from ..common import build_engine

        torch.set_num_threads(int(threads))
        self.engine = build_engine(config, progress=False)
        self.datasets: dict = {}
        self.references: tuple | None = None  # the eval reference sets now set (see :meth:`eval_maps`)
        if normal is not None:
            self.engine.set_normal_references(normal["images"], normal["object_name"])

    def ready(self) -> dict:
        """Where this actor runs and what it loaded: node id, pid, a one-line engine description, whether the
        rough map is training-free, and the engine's provenance (for ``eval``'s report)."""
        import ray

        from ..common import describe_engine

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "engine": describe_engine(self.engine), "training_free": self.engine.umci is None,
                "provenance": self.engine.provenance("")}

    def segment(self, items: list, object_name: str) -> list[dict]:
        """Segment each of ``items`` (:class:`~napari_clipsam.cli.segment_items.Item`: a file or one frame of a
        multi-frame TIFF, read here as the local command reads it): per item, ``{"item", "instances": packed,
        "provenance", "node", "pid", "seconds"}`` or ``{"item", "error", "trace", ...}``. The encoders run on all
        readable images at once (the engine's batch size); an image that fails alone is reported alone."""
        import ray

        from ..segment_items import ItemReader

        node, pid = ray.get_runtime_context().get_node_id(), os.getpid()
        t0 = time.perf_counter()
        out: dict[int, dict] = {}
        images: dict[int, np.ndarray] = {}
        reader = ItemReader()
        for i, item in enumerate(items):
            try:
                images[i] = reader.read(item)
            except Exception as exc:  # reported per image, as the local command does
                out[i] = _failure(exc)
        reader.release()
        try:
            results = dict(zip(images, self.engine.segment_many(list(images.values()), object_name)))
        except Exception:  # one bad image spoils a batch: run them one by one to tell which
            results = {}
            for i, image in images.items():
                try:
                    results[i] = self.engine.segment(image, object_name)
                except Exception as exc:
                    out[i] = _failure(exc)
        for i, r in results.items():
            out[i] = {"instances": pack_instances(r.instances), "provenance": r.provenance}
        seconds = (time.perf_counter() - t0) / max(len(items), 1)
        return [{"item": it, "node": node, "pid": pid, "seconds": seconds, **out[i]} for i, it in enumerate(items)]

    def segment_group(self, items: list, wanted: list[bool], group: dict, object_name: str) -> list[dict]:
        """Score one mutual-scoring group as the local command does (``segment``'s
        :func:`~napari_clipsam.cli.segment_groups.read_group` and
        :func:`~napari_clipsam.cli.segment_groups.score_group`, on the group's
        :class:`~napari_clipsam.cli.segment_items.Item` s read here): every image of the group is scored, and the
        results of those whose ``wanted`` is true (the images to do; a resumed run keeps the others) come back as
        :meth:`segment`'s dicts: first the unreadable ones, then the others,
        each in group order (the order in which the local command reports them). A group whose scoring fails
        returns that error for each of its readable images."""
        import ray

        from ..segment_groups import read_group, score_group

        node, pid = ray.get_runtime_context().get_node_id(), os.getpid()
        t0 = time.perf_counter()
        todo = {item for item, w in zip(items, wanted) if w}
        readable, pixels, unreadable = read_group(items)
        out = [(item, _failure(exc)) for item, exc in unreadable if item in todo]
        try:
            results = score_group(self.engine, pixels, object_name, group)
            out += [(item, {"instances": pack_instances(r.instances), "provenance": r.provenance})
                    for item, r in zip(readable, results) if item in todo]
        except Exception as exc:  # the group's images are reported failed, as the local command does
            out += [(item, _failure(exc)) for item in readable if item in todo]
        seconds = (time.perf_counter() - t0) / max(len(items), 1)
        return [{"item": item, "node": node, "pid": pid, "seconds": seconds, **res} for item, res in out]

    def _split(self, dataset: dict, split: str):
        """The ``split`` of the dataset ``{"root", "layout", "categories"}``, opened here once."""
        from ...data import open_dataset

        key = (dataset["root"], dataset["layout"], tuple(dataset["categories"] or ()), split)
        if key not in self.datasets:
            self.datasets[key] = open_dataset(dataset["root"], dataset["layout"], dataset["categories"],
                                              split=split)
        return self.datasets[key]

    def _use_references(self, dataset: dict, references: tuple | None) -> None:
        """Make the engine's reference sets those of ``references`` (``((category, object name, train indices),
        ...)``, every category of one few-shot draw, as the local ``eval --shots`` sets them; None: none)."""
        if references == self.references:
            return
        self.engine.clear_normal_references()
        self.references = None
        if references:
            train = self._split(dataset, "train")
            for category, name, indices in references:
                subset = train.category(category)
                self.engine.set_normal_references([subset[i][0] for i in indices], name)
        self.references = references

    def eval_maps(self, category: str, indices: list[int], name: str, references: tuple | None = None, *,
                  dataset: dict, resolution: int, batch_size: int | None, rough_only: bool,
                  map_cache: bool) -> list[dict]:
        """The evaluated maps of samples ``indices`` of ``category`` (the dataset opened here from ``dataset``:
        ``{"root", "layout", "categories"}``), with the normal ``references`` of one few-shot draw (see
        :meth:`_use_references`; None: zero-shot): per sample ``{"maps": {"rough"[, "final"]}, "mask": squashed
        bool, "label", "cached", "node"}``. The engine was built with the evaluation config."""
        import ray

        from ...training.evaluation import squashed_maps
        from ...training.map_cache import MapCache
        from ...training.resize import squash_mask

        self._use_references(dataset, references)
        subset = self._split(dataset, "test").category(category)
        items = [subset[i] for i in indices]
        cache = MapCache.for_run(self.engine, resolution=resolution, rough_only=rough_only) if map_cache else None
        hits = 0 if cache is None else cache.cache_info().hits
        maps = squashed_maps(self.engine, [im for im, _, _ in items], name, resolution, batch_size, rough_only,
                             cache)
        cached = 0 if cache is None else cache.cache_info().hits - hits
        node = ray.get_runtime_context().get_node_id()
        return [{"maps": m, "mask": squash_mask(mask, resolution), "label": int(sample.label), "node": node,
                 "cached": cached if j == 0 else 0} for j, (m, (_, mask, sample)) in enumerate(zip(maps, items))]

    def eval_mutual(self, category: str, indices: list[int], name: str, references: tuple | None = None, *,
                    dataset: dict, resolution: int, max_fpr: float, curves: bool) -> dict:
        """``eval --mutual`` of one category: its samples ``indices`` (in that order) scored as one folder by
        :func:`~napari_clipsam.training.mutual_eval.mutual_category`, the function the local evaluation runs, with
        the normal ``references`` of one few-shot draw (None: none); returns its metrics dict (and ``"node"``).
        The engine was built with the evaluation config."""
        import ray

        from ...training.mutual_eval import mutual_category

        class _NoBar:
            def update(self, _n) -> None:
                pass

        self._use_references(dataset, references)
        subset = self._split(dataset, "test").category(category)
        out = mutual_category(self.engine, subset, list(indices), name, resolution, max_fpr, _NoBar(), curves)
        return {**out, "node": ray.get_runtime_context().get_node_id()}
