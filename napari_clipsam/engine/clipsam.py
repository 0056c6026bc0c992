"""The ClipSAM engine: image → CLIP features → rough map → prompts → SAM masks → final map.

One object, used the same way by scripts, the CLI, the tests and the napari widget::

    engine = ClipSAM.from_config(ClipSAMConfig.preset("cpu"))
    result = engine.segment(image, "metal plate")
    result = engine.refine(result, points=[[40, 60]], point_labels=[1])   # SAM decoder only
"""
from __future__ import annotations

import contextlib
import logging
import numbers
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..heavy_imports import prepare_heavy_imports

prepare_heavy_imports()  # before torch & co.: napari may have mapped a GL driver's LLVM already

import torch  # noqa: E402

from .._version import __version__  # noqa: E402
from ..clip.references import ReferenceSets, bank_from_images  # noqa: E402
from ..clip.rough_map import anomaly_from_logits, to_image_resolution, training_free_logits
from ..clip.text_encoder import TextEmbeddingCache
from ..clip.text_prompts import clean_object_name
from ..clip.umci import UMCI
from ..clip.vision import ClipVision
from ..config import PER_CALL_FIELDS, ClipSAMConfig
from ..errors import InvalidInputError
from ..io.images import image_key, normalise_image
from ..mmr.prompts import prompts_from_map
from ..mmr.embedding_store import EmbeddingStore
from ..mmr.sam_decoder import SamRunner
from .cache import EngineCache, EngineCacheInfo, HitCounter
from .feature_store import FeatureStore, feature_fields
from .identity import (_WHY_DEPTH, complete_identity, fit_config_to_models, layers_for_depth, on_cpu, resolve_device,
                       sam_identity)
from .batching import stack, take, transformer_blocks
from .result import ClipSAMResult  # noqa: E402
from .progress import Stepper  # noqa: E402
from .sam_crops import crops_apply, finish_on_crops  # noqa: E402
from .sam_side import SamSide  # noqa: E402
from .tiled import TiledReferences, rough_maps as tiled_rough_maps  # noqa: E402

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]


class ClipSAM(SamSide):
    """The engine. Build it with :meth:`from_config` (real weights) or :meth:`from_models` (modules you built).

    Per-image caches (CLIP features, SAM embedding, decoded prompts) live in one engine-wide cache bounded in
    bytes (``config.cache_bytes``), keyed by the normalised image's content; SAM embeddings also on disk
    (``embedding_cache_bytes``); text embeddings by (model, weights, object name, prompt set), in memory and on
    disk. Results hold none of it.

    The models fix ``image_size`` (CLIP's input) and, with a UMCI head, ``feature_layers``: a config left at the
    default value is changed to the models' with a warning and ``config_replaced`` in every result's provenance;
    a config that asks for another value raises :class:`~napari_clipsam.errors.ConfigError`
    (:func:`~napari_clipsam.engine.identity.fit_config_to_models`). ``identity`` (what the loader knows: file
    hashes, tags) is used as given; only weights it does not name are fingerprinted
    (:func:`~napari_clipsam.engine.identity.complete_identity`).
    """

    def __init__(self, clip_model, tokenizer, sam_model, umci: UMCI | None = None,
                 config: ClipSAMConfig | None = None, *, identity: dict[str, Any] | None = None):
        self._local = threading.local()  # per-call settings of the calling thread (see `using`)
        config = config or ClipSAMConfig()
        self.device = resolve_device(config.device)
        self.clip_model = clip_model.to(self.device).eval().requires_grad_(False)
        self.vision = ClipVision(self.clip_model)
        self.sam = SamRunner(sam_model.to(self.device).eval().requires_grad_(False))
        self.umci = umci.to(self.device).eval() if umci is not None else None
        if self.umci is not None:
            self.vision.check_layers(self.umci.layers)
        layers = umci.layers if umci is not None else layers_for_depth(config.feature_layers, self.vision.depth)
        self._config, replaced = fit_config_to_models(
            config, {"image_size": self.vision.image_size, "feature_layers": layers},
            why=None if umci is not None else {"feature_layers": _WHY_DEPTH})
        self.identity = complete_identity(identity, clip_model, sam_model, umci)  # hashes only unnamed weights
        if replaced:
            self.identity["config_replaced"] = replaced
        from .backends import attach_backend

        self.backend = attach_backend(self)  # the encoders' runner (torch or OpenVINO), see napari_clipsam.engine.backends
        self.identity["encoders"] = self.backend.plan.describe()
        self.sam.model_id = sam_identity(self.identity, self.device, self.config.dtype, self.backend.plan.stamp)
        from ..weights.registry import cache_dir

        self.text = TextEmbeddingCache(self.clip_model, tokenizer, self.identity["clip_model"],
                                       self.identity["clip_weights"], cache_dir() / "text", self.device,
                                       architecture=self.identity.get("clip_architecture"))
        self._cache = EngineCache(self.config.cache_bytes)  # CLIP features, SAM embeddings, decoded prompts
        # SAMs not identified by their weights' content (random weights) can never meet their embeddings again
        stored = 0 if "#" in self.sam.model_id else self.config.embedding_cache_bytes
        self._stored = EmbeddingStore(cache_dir() / "embeddings", stored)
        self._features_stored = FeatureStore(cache_dir() / "features", self.config.feature_cache_bytes,
                                             feature_fields(self.identity, self.vision, self.config, self.mode),
                                             self.device)  # segment_folder's CLIP features on disk
        self._references = ReferenceSets()
        self._tiled_references = TiledReferences()  # the references' images, for tiled banks (engine/tiled.py)
        self._counts = {"sam": HitCounter(), "clip": HitCounter(), "references": HitCounter()}

    @property
    def config(self) -> ClipSAMConfig:
        """The engine's settings; inside :meth:`using` (or a call given ``settings=``), with that call's changes.

        Fixed once the engine is built (the models were loaded for them): build a new engine to change models,
        image size or device, and pass thresholds per call. Each thread sees its own per-call settings, so a
        prefetch in the background and a refine in the foreground never see each other's.
        """
        return getattr(self._local, "config", None) or self._config

    @config.setter
    def config(self, value) -> None:
        raise AttributeError("An engine's settings are fixed when it is built. Pass per-call settings "
                             "(segment(..., settings={'prompt_threshold': 0.3}), engine.using(...)) or build a new "
                             "engine with ClipSAM.from_config(config).")

    @contextlib.contextmanager
    def using(self, **changes: Any):
        """Within the block, this thread's calls run with ``changes`` (fields of :data:`PER_CALL_FIELDS` only)."""
        bad = sorted(set(changes) - set(PER_CALL_FIELDS))
        if bad:
            raise InvalidInputError(f"{bad} cannot change per call (the engine's models depend on them); per-call "
                                    f"settings are {sorted(PER_CALL_FIELDS)}. Build a new engine for the others.")
        before = getattr(self._local, "config", None)
        self._local.config = (before or self._config).replace(**changes) if changes else before
        try:
            yield self.config
        finally:
            self._local.config = before

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_models(cls, clip_model, tokenizer, sam_model, umci: UMCI | None = None,
                    config: ClipSAMConfig | None = None) -> ClipSAM:
        """Build from modules already built (small test models, custom checkpoints).

        Without a config, the image size is this CLIP's and the feature layers the UMCI head's or four evenly
        spaced blocks of this CLIP.
        """
        if config is None:
            depth = len(clip_model.visual.transformer.resblocks)
            layers = tuple(umci.layers) if umci is not None else tuple(
                sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)}))
            config = ClipSAMConfig(image_size=ClipVision(clip_model).image_size, feature_layers=layers,
                                   device="cpu" if on_cpu(clip_model) else "auto")
        return cls(clip_model, tokenizer, sam_model, umci, config)

    @classmethod
    def from_config(cls, config: ClipSAMConfig | None = None, progress: Progress | None = None,
                    cancelled: Callable[[], bool] | None = None, prepare_sam: bool = True) -> ClipSAM:
        """Load real weights (CLIP via open_clip, SAM from Meta's checkpoints, UMCI from a local file).

        With the OpenVINO backend the encoders are converted (once, cached) or loaded here, reported through
        ``progress`` ("preparing the fast CPU model, once: …"); ``prepare_sam=False`` leaves SAM's encoder to its
        first use (work that never calls SAM: training, rough-only evaluation).

        Raises :class:`~napari_clipsam.WeightsUnavailableError` when a file cannot be found, downloaded or
        verified; its message names the file, the folder searched, the URL and how to place it by hand.
        """
        from .loading import load_models

        config = config or ClipSAMConfig()
        device = resolve_device(config.device)
        clip_model, tokenizer, sam_model, umci, config, identity = load_models(config, progress, cancelled)
        engine = cls(clip_model.to(device), tokenizer, sam_model.to(device), umci, config, identity=identity)
        # converts an OpenVINO encoder once (cached); once compiled, its torch copy is memory-mapped from disk
        engine.backend.prepare(progress, sam=prepare_sam, release=True)
        return engine

    # ------------------------------------------------------------------ stages
    @property
    def mode(self) -> str:
        return "umci" if self.umci is not None else "training-free"

    def autocast(self):
        """bf16 autocast when ``config.dtype == "bfloat16"`` (CUDA, or CPU as an opt-in); else a no-op."""
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def text_embeddings(self, object_name: str) -> torch.Tensor:
        """T (2, D): normal and anomalous prompt-ensemble embeddings (cached)."""
        return self.text.get(object_name, self.config)

    def clip_features(self, images: Sequence[np.ndarray]) -> list[torch.Tensor] | torch.Tensor:
        """Frozen CLIP features of uint8 RGB images: UMCI mode → per-layer (B, C, h, w) tokens;
        training-free mode → (B, h, w, D) value-value tokens."""
        x = self.vision.preprocess(list(images))
        self._counts["clip"].miss(len(x))  # not cached: the tower runs for every image
        with self.autocast():
            if self.umci is not None:
                return [t.float() for t in self.vision.patch_tokens(x, self.config.feature_layers)]
            return self.vision.training_free_tokens(x).float()

    def rough_maps(self, features, T: torch.Tensor) -> torch.Tensor:
        """Rough maps at CLIP resolution (B, S, S) from cached features and text."""
        with self.autocast():
            if self.umci is not None:
                logits = self.umci(features, T)
            else:
                logits = [training_free_logits(features, T, self.config.temperature)]
        return anomaly_from_logits(logits, self.config.image_size)

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def segment(self, image, object_name: str, *, progress: Progress | None = None,
                cancelled: Callable[[], bool] | None = None,
                contrast_limits: tuple[float, float] | None = None, settings: dict | None = None) -> ClipSAMResult:
        """Run ClipSAM on one image (H×W, H×W×3 or H×W×4; uint8/uint16/float). See :class:`ClipSAMResult`.
        ``settings``: per-call changes of :data:`PER_CALL_FIELDS` (e.g. ``{"prompt_threshold": 0.3}``)."""
        return self.segment_many([image], object_name, progress=progress, cancelled=cancelled,
                                 contrast_limits=contrast_limits, settings=settings)[0]

    @property
    def default_batch_size(self) -> int:
        """Images per encoder batch in :meth:`segment_many` by default: 4 on CUDA, 1 on the CPU."""
        return 4 if self.device.type == "cuda" else 1

    @torch.no_grad()
    def segment_many(self, images: Sequence, object_name: str, *, batch_size: int | None = None,
                     progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                     contrast_limits: tuple[float, float] | None = None,
                     settings: dict | None = None) -> list[ClipSAMResult]:
        """Run ClipSAM on several images, batching the CLIP and SAM encoders ``batch_size`` images at a time.

        ``batch_size`` None: 4 on CUDA; 1 on the CPU, where batched encoders measured slower than one image at a
        time (`napari-clipsam bench`: 0.67× at batch 4 for the cpu preset on a 2-core machine).
        """
        with self.using(**(settings or {})):
            return self._segment_many(images, object_name, batch_size, progress, cancelled, contrast_limits)

    @torch.no_grad()
    def segment_folder(self, images: Sequence, object_name: str, *, progress: Progress | None = None,
                       cancelled: Callable[[], bool] | None = None, settings: dict | None = None,
                       contrast_limits=None) -> list[ClipSAMResult]:
        """Zero-shot masks for a folder of images of one object, by mutual scoring (method §5): each patch of
        each image is scored against the other images' patches (no training, references or text), calibrated
        to [0, 1], fused with the CLIP rough map and, when normal references apply, the few-shot map
        (``mutual_*`` weights), and MMR runs unchanged on the fused map.

        Returns one result per image, in order: ``rough_map`` is the fused map, ``image_score`` the image's mutual
        score, or its fused map's maximum when normal references take part (``mutual_image_score``; also in
        provenance), provenance ``mode`` is ``"mutual"`` with the folder's size and settings.
        Needs at least ``mutual_min_images`` (5) images; fewer raise an InvalidInputError that says so. Adding
        images changes the others' scores. ``cancelled`` is checked in CLIP's encoder, between scoring subsets
        and between images. ``contrast_limits``: one ``(low, high)`` pair for every image, or one pair (or None)
        per image. See :mod:`napari_clipsam.engine.folder`.
        """
        from .folder import segment_folder

        with self.using(**(settings or {})):
            return segment_folder(self, images, object_name, Stepper(progress, cancelled), contrast_limits)

    def _segment_many(self, images, object_name, batch_size, progress, cancelled,
                      contrast_limits) -> list[ClipSAMResult]:
        if batch_size is None:
            batch_size = self.default_batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a whole number ≥ 1 (or None for automatic), got "
                                    f"{batch_size!r}.")
        if not isinstance(images, (Sequence, np.ndarray)) or isinstance(images, np.ndarray) and (
                images.ndim == 2 or images.ndim == 3 and images.shape[-1] in (3, 4)):
            raise InvalidInputError("images must be a list of images (or an N×H×W[×C] stack); for one image use "
                                    f"segment(), got {type(images).__name__}"
                                    f"{'' if not isinstance(images, np.ndarray) else f' of shape {images.shape}'}.")
        step = Stepper(progress, cancelled)
        clean_object_name(object_name)
        prepared = [normalise_image(im, contrast_limits) for im in images]  # validate everything first
        step("text", 0.0)
        T = self.text_embeddings(object_name)
        results: list[ClipSAMResult] = []
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start:start + batch_size]
            results += self._segment_chunk(chunk, T, object_name, step, start / len(prepared),
                                           len(chunk) / len(prepared))
        step("merge", 1.0)
        return results

    def _segment_chunk(self, prepared, T, object_name, step, done: float, span: float) -> list[ClipSAMResult]:
        keys = [image_key(rgb) for rgb, _ in prepared]
        roughs = self._rough_maps_for(prepared, keys, T, object_name, step, done, span)
        return self._masks_for(prepared, keys, roughs, object_name, step, done, span)

    def _masks_for(self, prepared, keys, roughs, object_name, step, done: float, span: float,
                   view_sides=None) -> list[ClipSAMResult]:
        """MMR (prompts, SAM encoder from the caches or run, decoder, merge) on given rough maps. ``view_sides``:
        per map, the tile side its size rule is relative to (folder mutual maps of tiled images), None for the
        whole image (see :func:`~napari_clipsam.mmr.prompts.prompts_from_map`)."""
        step("prompts", done, span)
        sides = view_sides if view_sides is not None else [None] * len(roughs)
        prompts = [prompts_from_map(r, self.config, None if s is None else s * s) for r, s in zip(roughs, sides)]
        cropped = {k for (rgb, _), k, p in zip(prepared, keys, prompts)
                   if p.num_components and crops_apply(self, rgb.shape[:2])}  # SAM on crops (engine/sam_crops.py)
        step("sam encoder", done, span)
        embs = {k: v for k in keys if k not in cropped and (v := self._cache.get(("embedding", k))) is not None}
        wanted = list(dict.fromkeys(k for k, p in zip(keys, prompts) if k not in cropped
                                    and (p.num_components or self.config.embed_without_prompts)))
        self._counts["sam"].hit(sum(k in embs for k in wanted))
        need = [k for k in wanted if k not in embs]
        if need:
            rgb_of = {k: rgb for k, (rgb, _) in zip(keys, prepared)}
            blocks = transformer_blocks(self.sam.model, "image_encoder", "blocks")
            embs.update(self._embeddings({k: rgb_of[k] for k in need},
                                         lambda: step.per_block(blocks, "sam encoder", done, span)))
        step("sam decoder", done, span)
        return [finish_on_crops(self, rough, pr, valid, key, rgb, object_name, step, done, span) if key in cropped
                else self._finish(rough, pr, valid, key, embs.get(key), object_name)
                for (rgb, valid), key, rough, pr in zip(prepared, keys, roughs, prompts)]

    def _rough_maps_for(self, prepared, keys, T, object_name, step, done: float = 0.0,
                        span: float = 0.0) -> list[np.ndarray]:
        """Rough maps at image resolution (fused with the few-shot map when references apply), from cached or
        new CLIP features of the prepared ``(rgb, valid)`` images; large images tiled per ``config.tiling``."""
        if self.config.tiling != "off":
            def untiled(p, k):
                with self.using(tiling="off"):
                    return self._rough_maps_for(p, k, T, object_name, step, done, span)
            tiled = tiled_rough_maps(self, prepared, keys, T, object_name, step, done, span, untiled)
            if tiled is not None:
                return tiled
        bank = self.normal_bank(object_name)
        fuse = bank is not None and self.config.fewshot_weight > 0
        feats = self._features_for(prepared, keys, fuse, step, done, span)
        step("rough map", done, span)
        w = float(self.config.fewshot_weight) if fuse else 0.0
        rough_small = self.rough_maps(stack([feats[k][0] for k in keys]), T) if w < 1.0 else 0.0
        if fuse:
            step("few-shot", done, span)
            few = bank.anomaly_map(stack([feats[k][1] for k in keys]), self.config.image_size)
            rough_small = (1.0 - w) * rough_small + w * few.to(self.device)
        roughs = []
        for (rgb, valid), r in zip(prepared, rough_small):
            rough = to_image_resolution(r, rgb.shape[:2], self.config.rough_sigma)
            rough[~valid] = 0.0
            roughs.append(rough)
        return roughs

    def _features_for(self, prepared, keys, fuse: bool, step, done: float = 0.0, span: float = 0.0,
                      stored: bool = False) -> dict:
        """image key → (rough-map tokens, per-layer patch tokens or None) from the cache or one CLIP pass over the
        images not cached; ``fuse``: the per-layer patch tokens are needed too (few-shot, mutual scoring);
        ``stored``: the on-disk feature store is read and written too (``segment_folder``)."""
        step("clip", done, span)
        feats = {k: v for k in keys
                 if (v := self._cache.get(("features", self.mode, k))) is not None and (v[1] is not None or not fuse)}
        if stored:  # what an earlier segment kept in memory (config.keep_patch_tokens) goes on disk too
            for k, v in feats.items():
                if v[1] is not None and k not in self._features_stored:
                    self._features_stored.put(k, v)
            for k in dict.fromkeys(k for k in keys if k not in feats):
                if (v := self._features_stored.get(k)) is not None and (v[1] is not None or not fuse):
                    feats[k] = v
                    self._cache.put(("features", self.mode, k), v)
        todo = list(dict.fromkeys(k for k in keys if k not in feats))
        self._counts["clip"].hit(len(feats))
        if todo:
            self._counts["clip"].miss(len(todo))  # the tower runs for these images
            rgb_of = {k: rgb for k, (rgb, _) in zip(keys, prepared)}
            x = self.vision.preprocess([rgb_of[k] for k in todo])
            layers = tuple(self.config.feature_layers)
            blocks = transformer_blocks(self.clip_model.visual, "transformer", "resblocks")
            with self.autocast(), step.per_block(blocks, "clip", done, span):
                if self.umci is not None:
                    rough_in = layer_in = [t.float() for t in self.vision.patch_tokens(x, layers)]
                elif fuse or self.config.keep_patch_tokens:
                    rough_in, layer_in = self.vision.training_free_and_patch_tokens(x, layers)
                    rough_in, layer_in = rough_in.float(), [t.float() for t in layer_in]
                else:
                    rough_in, layer_in = self.vision.training_free_tokens(x).float(), None
            for j, k in enumerate(todo):
                feats[k] = (take(rough_in, j), None if layer_in is None else take(layer_in, j))
                self._cache.put(("features", self.mode, k), feats[k])  # the mode decides which tokens
                if stored:
                    self._features_stored.put(k, feats[k])
        return feats

    @torch.no_grad()
    def rough_maps_for_images(self, images: Sequence, object_name: str) -> list[np.ndarray]:
        """Rough maps (H, W) float32 in [0, 1] of images as :meth:`segment` computes them (few-shot fusion
        included), without SAM."""
        clean_object_name(object_name)
        prepared = [normalise_image(im) for im in images]
        bank = self.normal_bank(object_name)
        few_only = bank is not None and self.config.fewshot_weight >= 1.0  # the text is not needed
        T = None if few_only else self.text_embeddings(object_name)
        return self._rough_maps_for(prepared, [image_key(rgb) for rgb, _ in prepared], T, object_name,
                                    Stepper(None, None))

    # ------------------------------------------------------------------ few-shot normal references
    @torch.no_grad()
    def set_normal_references(self, images: Sequence, object_name: str | None = None, *,
                              progress: Progress | None = None,
                              cancelled: Callable[[], bool] | None = None, cache: bool = True) -> dict[str, Any]:
        """Use defect-free images as normal references: from now on :meth:`segment` fuses a few-shot map
        (nearest-reference patch distances, ``clip/fewshot.py``) into the rough map with ``fewshot_weight``.

        ``images``: a sequence of images (each as :meth:`segment` accepts); duplicates count once.
        ``object_name``: the references apply to this object only (None: to every object without its own).
        The bank is cached on disk by the references' content, the CLIP model and the few-shot settings, so
        setting the same references again costs no CLIP pass (``cache=False``: neither read nor written).
        With OpenVINO, CLIP's one graph (:func:`~napari_clipsam.engine.backends.clip_graph`, the one few-shot
        segments run) is converted or compiled here if it is not yet, reported through ``progress``
        ("preparing the fast CPU model, once: …"), so the first few-shot segment costs what later ones do.
        Returns :meth:`normal_references` for them.
        """
        if object_name is not None:
            clean_object_name(object_name)
        stepper = Stepper(progress, cancelled)
        blocks = transformer_blocks(self.clip_model.visual, "transformer", "resblocks")
        with stepper.per_block(blocks, "references", 0.0, 0.0):  # a cancel is seen inside CLIP's encoder too
            bank = bank_from_images(images, self.vision, self.identity, self.config, self.autocast,
                                    batch_size=self.default_batch_size, cache=cache,
                                    step=lambda i, n: stepper("references", i / n),
                                    counter=self._counts["references"],
                                    prepare=lambda: self.backend.prepare(progress, sam=False))
        self._references.put(object_name, bank.to(self.device))
        self._tiled_references.remember(object_name, images)
        return self.normal_references(object_name)

    def clear_normal_references(self) -> None:
        """Stop using normal references (for every object): rough maps are zero-shot again."""
        self._references.clear()
        self._tiled_references.clear()

    def normal_bank(self, object_name: str | None):
        """The :class:`~napari_clipsam.clip.fewshot.NormalBank` that applies to ``object_name``, or None."""
        return self._references.bank(object_name)

    def normal_references(self, object_name: str | None = None) -> dict[str, Any] | None:
        """What the references applying to ``object_name`` are (recorded in provenance), or None."""
        return self._references.describe(object_name, self.config)

    def reference_sets(self) -> dict[str, Any]:
        """Every reference set in use: object name (``"*"`` for every object) → :meth:`normal_references`."""
        return self._references.describe_all(self.config)

    # ------------------------------------------------------------------ internals
    def provenance(self, object_name: str, prompt_source: str = "clip") -> dict[str, Any]:
        """What made a result: versions, model identities, mode, prompt set and every threshold."""
        refs = self.normal_references(object_name or None)
        rough = ("UMCI (trained)" if self.umci is not None else
                 "training-free (CLIP value-value attention; lower quality than a trained UMCI)")
        if refs is not None and refs["weight"] > 0:
            rough += f" + few-shot ({refs['count']} normal references, weight {refs['weight']:g})"
        return {
            "package": "napari-clipsam", "version": __version__, "mode": self.mode, "rough_map": rough,
            "fewshot": refs,
            **self.identity, "object_name": object_name, "prompt_set": self.config.prompt_set_hash(),
            "prompt_source": prompt_source, "device": str(self.device), "thresholds": self.config.thresholds(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def cache_info(self) -> EngineCacheInfo:
        """Hits, misses and size of each of the engine's caches since it was built, and the in-memory store's
        ``entries``, ``bytes`` and ``max_bytes`` (``config.cache_bytes``); see
        :class:`~napari_clipsam.engine.cache.EngineCacheInfo`.

        A miss is exactly a run of the model behind the cache (one image through SAM's or CLIP's encoder, one
        object's prompts through the text tower, one reference bank built, one prompt decoded), so
        ``cache_info().sam_embeddings.misses`` is how many images SAM's image encoder has embedded.
        """
        decoded = self._cache.counts.get("decoded")
        return EngineCacheInfo(
            sam_embeddings=self._counts["sam"].info(self._cache.count("embedding")),
            sam_embedding_store=self._stored.cache_info(),
            clip_features=self._counts["clip"].info(self._cache.count("features")),
            clip_feature_store=self._features_stored.cache_info(),
            text_embeddings=self.text.cache_info(),
            reference_banks=self._counts["references"].info(len(self._references)),
            sam_decoder=(decoded or HitCounter()).info(self._cache.count("decoded")),
            entries=len(self._cache), bytes=self._cache.bytes, max_bytes=self._cache.max_bytes,
            merged_components=self._cache.counts.get("component", HitCounter()).info(self._cache.count("component")))

    def clear_caches(self, kind: str | None = None) -> None:
        """Forget cached CLIP features, SAM embeddings and decoded prompts, or one kind of them (``"features"``,
        ``"embedding"``, ``"decoded"``); text embeddings and the on-disk stores stay. The components' merged maps
        made from decoded prompts go with them."""
        self._cache.clear(kind)
        if kind == "decoded":
            self._cache.clear("component")
