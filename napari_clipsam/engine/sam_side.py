"""The engine's SAM side: refining a result with a person's prompts, and the one way SAM embeddings are got.

:class:`SamSide` is a base of :class:`~napari_clipsam.engine.clipsam.ClipSAM`; it uses the engine's ``sam``,
``config``, caches (``_cache``, ``_stored``, ``_counts``), ``autocast`` and ``provenance``, set up there.
Kept apart so each file reads at once: ``clipsam.py`` runs images through the stages, this one decodes prompts on
an image's embedding (segment's last step, and every refine).
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from ..errors import EngineMismatchError, InvalidInputError
from ..io.images import image_key, normalise_image
from ..mmr.levels import refine_from_prompts
from ..mmr.merge import check_rough_map
from ..mmr.prompts import group_user_prompts, prompts_from_map
from ..mmr.sam_decoder import SamEmbedding
from .result import ClipSAMResult
from .sam_crops import crops_apply, finish_on_crops

ROUGH_MAP_PROVENANCE = ("mode", "rough_map", "clip_model", "clip_weights", "clip_architecture", "umci_weights",
                        "umci_usage_mismatch", "prompt_set", "config_replaced", "clip_mode", "folder", "image_score")
"""Provenance keys that describe how a result's rough map was made; :meth:`SamSide.refine` keeps them."""


class SamSide:
    """Refine and SAM embeddings for :class:`~napari_clipsam.engine.clipsam.ClipSAM` (see the module notes)."""

    @torch.no_grad()
    def refine(self, result: ClipSAMResult, points=None, point_labels=None, boxes=None, *, image=None,
               contrast_limits: tuple[float, float] | None = None, settings: dict | None = None) -> ClipSAMResult:
        """Re-run SAM decoding and the merge (method §3 steps 3–6) with user prompts replacing the derived ones.

        ``points`` (N, 2) (row, col), ``point_labels`` (N,) 1/0 (default all positive), ``boxes`` (M, 4)
        (row0, col0, row1, col1); wrong shapes, non-numbers, NaN/inf and labels other than 0/1 (e.g. 0.5) raise
        ValueError naming the argument. Decodes on this engine's cached SAM embedding of the result's image (in
        memory, else the on-disk store): no image encoder runs.

        When neither holds it (evicted from ``cache_bytes``, a result made by another engine, or one made with
        ``embed_without_prompts=False`` and no prompts), ``image`` (the image the result was made from) is
        embedded again; without ``image``, :class:`~napari_clipsam.errors.EngineMismatchError` says so.
        ``settings``: per-call changes of :data:`PER_CALL_FIELDS` (e.g. ``{"mask_threshold": 0.6}``).
        """
        with self.using(**(settings or {})):
            return self._refine(result, points, point_labels, boxes, image, contrast_limits)

    @torch.no_grad()
    def remask(self, result: ClipSAMResult, *, image=None, contrast_limits: tuple[float, float] | None = None,
               settings: dict | None = None) -> ClipSAMResult:
        """MMR again on ``result``'s own rough map (method §3 steps 2–6): prompts derived anew with this call's
        thresholds, SAM decoded and merged; no CLIP runs and the rough map is not made again.

        The way to change ``prompt_threshold``, ``mask_threshold`` or ``alpha`` on a result whose rough map came
        from somewhere a plain :meth:`segment` cannot reproduce: a folder's mutual map (``segment_folder``) keeps
        its map, its mode and its image score. The SAM embedding is found as in :meth:`refine` (``image`` is
        embedded again when the caches no longer hold it). ``settings``: per-call changes of
        :data:`PER_CALL_FIELDS`; those that make the rough map (CLIP, few-shot, mutual fields) have no effect here.
        """
        with self.using(**(settings or {})):
            check_rough_map(result.rough_map, np.shape(result.instances), "result's rough_map")
            prompts = prompts_from_map(result.rough_map, self.config, _view_area(result))
            return self._decode_on(result, prompts, image, contrast_limits)

    def _refine(self, result, points, point_labels, boxes, image, contrast_limits) -> ClipSAMResult:
        check_rough_map(result.rough_map, np.shape(result.instances), "result's rough_map")
        prompts = group_user_prompts(points, point_labels, boxes, result.rough_map.shape)
        return self._decode_on(result, prompts, image, contrast_limits)

    def _decode_on(self, result, prompts, image, contrast_limits) -> ClipSAMResult:
        """SAM decoding and the merge of ``prompts`` on ``result``'s image and rough map (refine and remask)."""
        if prompts.num_components and crops_apply(self, result.rough_map.shape):  # SAM on crops (sam_crops.py)
            rgb = None if image is None else self._checked_image(result, image, contrast_limits)
            out = finish_on_crops(self, result.rough_map, prompts, result.valid, result.image_key, rgb,
                                  result.provenance.get("object_name", ""))
        else:
            emb = self._embedding_for(result, prompts.num_components > 0, image, contrast_limits)
            out = self._finish(result.rough_map, prompts, result.valid, result.image_key, emb,
                               result.provenance.get("object_name", ""))
        # the rough map (and so its CLIP, UMCI and prompt set) is the one the result came with
        out.provenance.update({k: result.provenance[k] for k in ROUGH_MAP_PROVENANCE if k in result.provenance})
        if "folder" in result.provenance:  # a folder result keeps its mutual image score
            out.image_score = result.image_score
        else:  # otherwise the score of the refined final map
            out.provenance["image_score"] = out.image_score
        return out

    def sam_embedding(self, result: ClipSAMResult, image=None, contrast_limits=None):
        """This engine's :class:`~napari_clipsam.mmr.sam_decoder.SamEmbedding` of ``result``'s image (from the
        cache, the on-disk store, or ``image`` embedded again; see :meth:`refine`), for tools and benchmarks."""
        return self._embedding_for(result, True, image, contrast_limits)

    def _embedding_for(self, result: ClipSAMResult, needed: bool, image, contrast_limits):
        """This engine's SAM embedding of ``result``'s image, to refine on (see :meth:`refine`)."""
        key = result.image_key
        cached = self._cache.get(("embedding", key)) if key else None
        if cached is not None:  # a correction loop's hot path: no work on the image
            self._counts["sam"].hit()
            return cached
        # checked before the disk store is read: a wrong image is a caller's mistake
        rgb = None if image is None else self._checked_image(result, image, contrast_limits)
        own = self._stored_embedding(key) if key else None
        if own is not None or not needed:
            return own
        if rgb is not None:
            return self._embeddings({key: rgb})[key]
        if not result.sam_id:
            why = "this result has no SAM embedding (it was made with embed_without_prompts=False and had no prompts)"
        elif result.sam_id != self.sam.model_id:
            why = (f"this result was made by another SAM ({result.sam_id}) than this engine's ({self.sam.model_id}), "
                   "whose embedding cannot be decoded here")
        else:
            why = ("this image's SAM embedding is no longer in the engine's cache (config.cache_bytes "
                   f"{self.config.cache_bytes} bytes; results do not hold embeddings)")
        raise EngineMismatchError(f"Cannot refine: {why}. Pass image= (the same image) to refine so that it is "
                                  "embedded with this SAM, or run segment again.")

    @staticmethod
    def _checked_image(result: ClipSAMResult, image, contrast_limits) -> np.ndarray:
        """``image`` normalised, when it is the image ``result`` was made from; else InvalidInputError."""
        rgb, _ = normalise_image(image, contrast_limits)
        if image_key(rgb) != result.image_key:
            raise InvalidInputError("image is not the image this result was made from (its content differs); "
                                    "pass the same image and contrast_limits as to segment().")
        return rgb

    def _finish(self, rough, prompts, valid, key, emb, object_name) -> ClipSAMResult:
        with self.autocast():
            maps, _ = refine_from_prompts(self.sam, emb, prompts, rough, self.config, valid, memo=self._cache,
                                          memo_tag=(self.sam.model_id, key, self.config.dtype), with_maps=False)
        provenance = {**self.provenance(object_name, prompts.source), "image_score": float(maps.score),
                      "sam_input": "whole image"}
        return ClipSAMResult(
            rough_map=rough, final_map=maps.final_map, mask=maps.mask, instances=maps.instances, score=maps.score,
            provenance=provenance, image_score=float(maps.score),
            prompts=dataclasses.replace(prompts, components=None),  # the full-size map only served the merge
            instance_component=maps.instance_component, valid=valid, image_key=key,
            sam_id="" if emb is None else emb.model_id)

    def _embeddings(self, rgb_of: dict[str, np.ndarray], encoding=contextlib.nullcontext) -> dict[str, SamEmbedding]:
        """SAM embeddings of images (image key → normalised RGB), the one way segment and refine get them: the
        engine's cache, then the on-disk store, then SAM's image encoder for the rest in one batch (inside
        ``encoding()``, e.g. per-block progress); what the encoder made is kept in memory and on disk."""
        embs = {k: e for k in rgb_of if (e := self._cache.get(("embedding", k))) is not None}
        self._counts["sam"].hit(len(embs))
        embs.update({k: e for k in rgb_of if k not in embs and (e := self._stored_embedding(k)) is not None})
        need = [k for k in rgb_of if k not in embs]
        if need:
            self._counts["sam"].miss(len(need))  # SAM's image encoder runs for these images
            with self.autocast(), encoding():
                embs.update(zip(need, self.sam.embed_many([rgb_of[k] for k in need])))
        for k in need:
            e = embs[k]
            self._cache.put(("embedding", k), e)
            self._stored.put(k, self.sam.model_id, e.features.float().cpu().numpy(), e.input_size, e.original_size)
        return embs

    def _stored_embedding(self, key: str):
        """The SAM embedding of image ``key`` from the on-disk store (then also kept in memory), or None."""
        found = self._stored.get(key, self.sam.model_id)
        if found is None:
            return None
        self._counts["sam"].hit()
        features, input_size, original_size = found
        emb = SamEmbedding(torch.from_numpy(features).to(self.device), input_size, original_size,
                           model_id=self.sam.model_id)
        self._cache.put(("embedding", key), emb)
        return emb


def _view_area(result: ClipSAMResult) -> int | None:
    """The area the size rule of ``result``'s map is relative to (see
    :func:`~napari_clipsam.mmr.prompts.prompts_from_map`): one tile's for a folder mutual map of tiled images (from
    its provenance), else None (the whole image)."""
    side = (((result.provenance or {}).get("folder") or {}).get("tiles") or {}).get("side")
    return None if side is None else int(side) ** 2
