"""How the engine runs SAM on crops of a large image (issue 24; the geometry is in :mod:`..mmr.crops`).

For an image the ``sam_crops`` setting applies to (:func:`crops_apply`), each prompt component is given a window
of the image (:func:`~napari_clipsam.mmr.crops.choose_window`); every distinct window is embedded once by SAM's
image encoder (progress per crop, a cancel seen between crops and inside the encoder), its embedding kept in the
engine's cache and the on-disk store under :func:`~napari_clipsam.mmr.crops.crop_key` (the image's content key,
the crop format and the window; the store adds the SAM's identity and its own format). The components of a
window are decoded together on its embedding with their prompts moved into its coordinates, merged there (steps
3–5) and the component maps placed back into the image for the fusion with the rough map (step 6,
:func:`~napari_clipsam.mmr.merge.fuse_placed`). Prompts, masks and every map of the result are in image
coordinates; the provenance names the crops (``sam_input``, ``sam_crops``).

Components take a window already chosen for another component when one fits (one encoder run for both). A
refine prefers windows whose embedding is cached, so an edit near a component reuses its crop's embedding;
without the image's pixels it decodes on the smallest cached window that contains the component (the whole
image's embedding included) and otherwise asks for ``image=``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..clip.tiling import tile_side
from ..errors import EngineMismatchError
from ..mmr.crops import choose_window, component_regions, crop_key, group_by_window, prompts_in_window
from ..mmr.levels import component_maps
from ..mmr.merge import fuse_placed
from .batching import transformer_blocks
from .progress import PartStepper, Stepper
from .result import ClipSAMResult

AUTO_MIN_FACTOR = 1.5
"""``sam_crops="auto"`` crops only images whose long side is at least this many SAM input sizes."""


def sam_input_size(engine) -> int:
    """SAM's input side in pixels (1024 for Meta's SAMs): a window of this side is seen at full resolution."""
    return int(engine.sam.transform.target_length)


def crops_apply(engine, shape: tuple[int, int]) -> bool:
    """Whether SAM refines the components of an image of ``shape`` on crops under the call's settings."""
    cfg = engine.config
    size = sam_input_size(engine)
    if cfg.sam_crops == "off" or max(shape[:2]) <= size:
        return False
    if cfg.sam_crops == "on":
        return True
    return (tile_side(shape[:2], cfg.tiling, cfg.image_size) is not None
            and max(shape[:2]) >= AUTO_MIN_FACTOR * size)


def finish_on_crops(engine, rough, prompts, valid, key: str, rgb, object_name: str, step: Stepper | None = None,
                    done: float = 0.0, span: float = 0.0) -> ClipSAMResult:
    """MMR steps 3–6 with each component decoded on its crop (see the module notes). ``rgb``: the normalised
    image, or None (a refine without it: cached windows only)."""
    cfg = engine.config
    step = step or Stepper(None, None)
    shape = rough.shape
    size = sam_input_size(engine)
    model_id = engine.sam.model_id

    def held(window) -> bool:
        k = crop_key(key, window, shape)
        return engine._cache.peek(("embedding", k)) is not None or engine._stored.has(k, model_id)

    regions = component_regions(prompts, cfg.sam_crop_context, shape)
    windows: list = []
    for r in regions:  # a window chosen for an earlier component is shared like a cached one
        windows.append(choose_window(r, shape, size, lambda w: w in windows or held(w), only_cached=rgb is None))
    if any(w is None for w in windows):
        raise EngineMismatchError(
            "Cannot refine: no SAM embedding of a crop around these prompts is in the engine's cache (config."
            f"cache_bytes {cfg.cache_bytes} bytes) or on disk. Pass image= (the same image) to refine so that the "
            "crop is embedded, or run segment again.")
    groups = list(group_by_window(windows).items())
    blocks = transformer_blocks(engine.sam.model, "image_encoder", "blocks")
    embs = []
    for i, (window, _) in enumerate(groups):
        part = PartStepper(step, i, len(groups))
        part("sam encoder", done, span)  # a cancel is seen between crops
        k = crop_key(key, window, shape)
        if rgb is None:
            emb = engine._cache.get(("embedding", k))
            if emb is not None:
                engine._counts["sam"].hit()
            else:
                emb = engine._stored_embedding(k)
        else:
            r0, c0, r1, c1 = window
            crop = np.ascontiguousarray(rgb[r0:r1, c0:c1])
            emb = engine._embeddings({k: crop}, lambda: part.per_block(blocks, "sam encoder", done, span))[k]
        embs.append(emb)
    placed: list = [None] * len(windows)
    for i, ((window, members), emb) in enumerate(zip(groups, embs)):
        PartStepper(step, i, len(groups))("sam decoder", done, span)
        r0, c0, r1, c1 = window
        sub = prompts_in_window(prompts, members, window)
        with engine.autocast():
            maps = component_maps(engine.sam, emb, sub, (r1 - r0, c1 - c0), cfg, memo=engine._cache,
                                  memo_tag=(model_id, crop_key(key, window, shape), cfg.dtype))
        for c, m in zip(members, maps):
            placed[c] = (window, m)
    fused = fuse_placed(rough, placed, cfg, valid)
    provenance = {**engine.provenance(object_name, prompts.source), "image_score": float(fused.score),
                  "sam_input": "crops",
                  "sam_crops": [{"box": [int(v) for v in w], "components": [int(c) for c in members],
                                 "scale": round(max(w[2] - w[0], w[3] - w[1]) / size, 4)} for w, members in groups]}
    return ClipSAMResult(
        rough_map=rough, final_map=fused.final_map, mask=fused.mask, instances=fused.instances, score=fused.score,
        provenance=provenance, image_score=float(fused.score),
        prompts=dataclasses.replace(prompts, components=None), instance_component=fused.instance_component,
        valid=valid, image_key=key, sam_id=model_id)
