"""Normal reference sets of the engine (issue 11): encoding references into a :class:`~.fewshot.NormalBank`,
the on-disk bank cache, and the per-object sets the engine consults when it segments.

The bank is cached under ``<napari-clipsam cache>/references/<hash>.npz``, keyed by the references' content
hashes (order and duplicates do not matter), the CLIP model, weights and architecture ids, the encoder backend,
CLIP precision and (OpenVINO) the converted graph that ran, and every setting that changes the bank (input size,
layers, dtype, bank size, neighbourhood, augmentation); about bank size × CLIP width × 4 bytes per layer (64 MiB
for ViT-L with 4 layers at 4096). Written atomically; an unreadable file is rebuilt.
"""
from __future__ import annotations

import logging
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError
from .fewshot import FORMAT_VERSION, NormalBank, augmented_views

log = logging.getLogger(__name__)


class ReferenceSets:
    """Thread-safe map object name → :class:`NormalBank` (``None``: the set for every object without its own)."""

    def __init__(self):
        self._banks: dict[str | None, NormalBank] = {}
        self._lock = threading.Lock()

    def put(self, object_name: str | None, bank: NormalBank) -> None:
        with self._lock:
            self._banks[object_name] = bank

    def clear(self) -> None:
        with self._lock:
            self._banks.clear()

    def bank(self, object_name: str | None) -> NormalBank | None:
        """The bank that applies to ``object_name``: its own, else the one for every object, else None."""
        with self._lock:
            return self._banks.get(object_name, self._banks.get(None))

    def __len__(self) -> int:
        """How many sets are in use."""
        with self._lock:
            return len(self._banks)

    def describe(self, object_name: str | None, config) -> dict[str, Any] | None:
        """What the references applying to ``object_name`` are (content hashes, weight, bank), or None."""
        bank = self.bank(object_name)
        if bank is None:
            return None
        return {"references": list(bank.reference_keys), "count": len(bank.reference_keys),
                "weight": float(config.fewshot_weight), "layers": list(bank.layers),
                "bank_patches_per_layer": bank.patches_per_layer, "views": bank.views,
                "augment": bool(config.fewshot_augment), "neighbourhood": bank.neighbourhood}

    def describe_all(self, config) -> dict[str, Any]:
        """Every set: object name (``"*"`` for every object) → :meth:`describe`."""
        with self._lock:
            names = list(self._banks)
        return {("*" if n is None else n): self.describe(n, config) for n in names}


def bank_cache_path(folder, identity: dict, config, reference_keys: list[str], version: int | None = None,
                    clip_graph=None) -> Path:
    """Where the bank of these references (content hashes), this CLIP (model, weights and architecture ids), this
    encoder backend and CLIP precision (``identity["encoders"]``: an OpenVINO bf16 bank is not a torch fp32 one),
    the converted graph that computed the tokens (``clip_graph``, :func:`clip_graph_of`: two OpenVINO graphs of the
    same blocks round differently) and these settings (input size, layers, bank size, neighbourhood, augmentation)
    is cached:
    ``folder/<key>.npz``, the :func:`~napari_clipsam.io.cache_files.cache_key` of these fields and
    :data:`~.fewshot.FORMAT_VERSION` (``version``: another format's, for tests)."""
    from ..io.cache_files import cache_key

    encoders = identity.get("encoders") or {}
    setting = {"cache": "reference-bank", "clip_model": identity.get("clip_model"),
               "clip_weights": identity.get("clip_weights"), "clip_architecture": identity.get("clip_architecture"),
               "backend": encoders.get("backend", "torch"),
               "clip_graph": None if clip_graph is None else [list(clip_graph[0]), clip_graph[1], clip_graph[2]],
               "clip_precision": encoders.get("clip_precision", config.dtype),
               "image_size": int(config.image_size), "layers": [int(i) for i in config.feature_layers],
               "dtype": config.dtype, "bank_size": int(config.fewshot_bank_size),
               "neighbourhood": int(config.fewshot_neighbourhood),
               "augment": bool(config.fewshot_augment), "references": sorted(reference_keys)}
    return Path(folder) / f"{cache_key(setting, FORMAT_VERSION if version is None else version)}.npz"


def load_bank(path: Path) -> NormalBank | None:
    """The cached bank at ``path``, or None when it is absent or unreadable (then it is simply rebuilt)."""
    try:
        return NormalBank.from_bytes(Path(path).read_bytes())
    except (OSError, ValueError, KeyError, SyntaxError, EOFError, zipfile.BadZipFile) as exc:
        if Path(path).exists():
            log.warning("ignoring unreadable reference bank %s (%s); it will be rebuilt", path, exc)
        return None


def save_bank(path: Path, bank: NormalBank) -> None:
    """Write the bank atomically (all or nothing); a failure is logged, not raised (the cache is optional)."""
    from ..io.atomic import AtomicBatch, ExportError

    try:
        with AtomicBatch() as batch:
            batch.stage(path, bank.to_bytes())
            batch.commit()
    except (ExportError, OSError) as exc:
        from ..io.cache_files import cache_unusable

        cache_unusable(Path(path).parent, "reference banks", exc)


def clip_graph_of(vision, layers: tuple[int, ...]):
    """The converted graph that computes the patch tokens of ``layers`` (``(blocks, format, extra)``, see
    :meth:`~napari_clipsam.engine.backends.openvino_encoders.OpenVinoClipTower.graph_for`), or None when torch
    runs the tower (its tokens do not depend on what else is asked for)."""
    graph_for = getattr(getattr(vision, "tower", None), "graph_for", None)
    return None if graph_for is None else graph_for([int(i) - 1 for i in layers], "NCHW", False)


def reference_tokens(vision, views: list[np.ndarray], layers: tuple[int, ...], batch_size: int,
                     autocast=None, step=None) -> list[torch.Tensor]:
    """Patch tokens of the reference views at ``layers``: one (V, C, h, w) float32 tensor per layer.

    ``vision`` is a :class:`~napari_clipsam.clip.vision.ClipVision`; ``step(i, n)`` (optional) is called before
    each batch and may raise to cancel.
    """
    import contextlib

    chunks: list[list[torch.Tensor]] = []
    for s in range(0, len(views), batch_size):
        if step is not None:
            step(s, len(views))
        x = vision.preprocess(views[s:s + batch_size])
        with torch.no_grad(), (autocast() if autocast is not None else contextlib.nullcontext()):
            chunks.append([t.float() for t in vision.patch_tokens(x, layers)])
    return [torch.cat([c[i] for c in chunks]) for i in range(len(layers))]


def bank_from_images(images, vision, identity: dict, config, autocast=None, *, batch_size: int = 1,
                     cache: bool = True, step=None, counter=None, prepare=None) -> NormalBank:
    """The :class:`NormalBank` of reference images (any input :func:`~napari_clipsam.io.images.normalise_image`
    accepts; duplicates count once, order does not matter), read from or written to the on-disk cache
    (``<cache>/references``) unless ``cache`` is False. ``counter`` (optional, a
    :class:`~napari_clipsam.io.cache_files.HitCounter`) hears a hit for a bank read from the cache and a miss for
    one CLIP built. ``prepare()`` (optional) runs once the references are checked, before the bank is read or
    built: the engine converts or compiles there the CLIP graph that the references and few-shot segments run,
    so neither a bank read from the cache nor the first few-shot segment leaves that work to a later step.
    Raises ValueError naming a reference that is not an image.
    """
    from ..io.images import image_key, normalise_image
    from ..weights.registry import cache_dir
    from .fewshot import check_settings

    check_settings(config)
    if isinstance(images, np.ndarray) or len(images) == 0:
        raise InvalidInputError("set_normal_references needs a list of one or more defect-free images "
                         f"(got {type(images).__name__}{'' if isinstance(images, np.ndarray) else ' of 0'}); "
                         "call clear_normal_references() to stop using references.")
    rgbs: dict[str, np.ndarray] = {}
    for i, im in enumerate(images):
        try:
            rgb, _ = normalise_image(im)
        except ValueError as exc:
            raise InvalidInputError(f"Normal reference {i}: {exc}") from None
        rgbs.setdefault(image_key(rgb), rgb)
    keys = sorted(rgbs)
    layers = tuple(int(i) for i in config.feature_layers)
    vision.check_layers(layers)
    if prepare is not None:
        prepare()
    path = bank_cache_path(cache_dir() / "references", identity, config, keys,
                           clip_graph=clip_graph_of(vision, layers))
    if cache:
        from ..io.cache_files import sweep_stale

        sweep_stale(path.parent)
    bank = load_bank(path) if cache else None
    if counter is not None:
        (counter.miss if bank is None else counter.hit)()
    if bank is None:
        views = [v for k in keys for v in augmented_views(rgbs[k], config.fewshot_augment)]
        tokens = reference_tokens(vision, views, layers, max(int(batch_size), 1), autocast, step)
        bank = NormalBank.build(tokens, layers, keys, bank_size=int(config.fewshot_bank_size),
                                neighbourhood=int(config.fewshot_neighbourhood))
        if cache:
            save_bank(path, bank)
    return bank
