"""Multi-level decoding (method §3 steps 3–6): per prompt level, every component in one SAM batch.

Levels: ``point`` (the component's points), ``box`` (its grown box), ``box+point`` (both). Each SAM call uses
multimask output, so a component gathers up to 3 × levels candidates before filtering and merging.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from .merge import FinalMaps, check_rough_map, fuse_placed, keep_candidates, merge_component
from .prompts import Prompts


@dataclass
class ComponentPrompt:
    """One component's prompts: points (P, 2) (row, col) with labels (P,), and an optional box (4,)."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None

    def level_inputs(self, level: str):
        """(points, labels, box) for a level, or None when the level does not apply to this component."""
        has_pos = bool((self.labels == 1).any())
        if level == "point":
            return (self.points, self.labels, None) if has_pos else None
        if level == "box":
            return (None, None, self.box) if self.box is not None else None
        if level == "box+point":
            return (self.points, self.labels, self.box) if self.box is not None and has_pos else None
        raise ValueError(f"unknown prompt level {level!r}")


def component_prompts(prompts: Prompts) -> list[ComponentPrompt]:
    """Split flat prompts into per-component groups (negatives with component -1 join every component)."""
    out = []
    for c in range(prompts.num_components):
        sel = (prompts.point_component == c) | ((prompts.point_component == -1) & (prompts.point_labels == 0))
        boxes = prompts.boxes[prompts.box_component == c]
        out.append(ComponentPrompt(prompts.points[sel], prompts.point_labels[sel],
                                   boxes[0] if len(boxes) else None))
    return out


def _memo_key(memo_tag: tuple, level: str, inp) -> tuple:
    return ("decoded", *memo_tag, level) + tuple(None if a is None else np.asarray(a, np.float32).tobytes()
                                                 for a in inp)


def decode_levels(runner, emb, comps: list[ComponentPrompt], levels: tuple[str, ...], batched: bool = True,
                  max_batch: int | None = None, memo=None, memo_tag: tuple = ()):
    """Candidates per component, in level order: lists of ``(masks, scores, key)``.

    A prompt decoded now gives SAM's low-resolution logits (n, 256, 256) and predicted IoUs (n,) as tensors on
    the device, with its memo ``key``; a prompt found in ``memo`` gives its masks (n, H, W) bool at image
    resolution and IoUs as arrays, with key None (it is not decoded again, so a correction re-decodes only the
    components it changed). ``memo`` is the engine's cache (``get``/``put``); ``memo_tag`` names the SAM, the
    image and the precision; :func:`candidate_masks` turns a component's candidates into masks and fills it.

    With ``batched`` every level is one decoder call per group of components with equally many points
    (exactly one per level for derived prompts), split into calls of at most ``max_batch`` prompts when given;
    otherwise one call per component and level (the plain path the batched one is tested against).
    """
    cands: list[list] = [[] for _ in comps]
    width = emb.original_size[1]
    for level in levels:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, cp in enumerate(comps):
            inp = cp.level_inputs(level)
            if inp is None:
                continue
            hit = memo.get(_memo_key(memo_tag, level, inp)) if memo is not None else None
            if hit is not None:
                cands[i].append((np.unpackbits(hit[0], axis=-1, count=width).astype(bool), hit[1], None))
                continue
            key = (0 if inp[0] is None else len(inp[0]), inp[2] is not None)
            groups[key if batched else (key, i)].append(i)
        chunks = []
        for members in groups.values():
            size = max_batch or len(members)
            chunks += [members[i:i + size] for i in range(0, len(members), size)]
        for members in chunks:
            inputs = [comps[i].level_inputs(level) for i in members]
            pts = None if inputs[0][0] is None else np.stack([x[0] for x in inputs])
            lab = None if inputs[0][1] is None else np.stack([x[1] for x in inputs])
            box = None if inputs[0][2] is None else np.stack([x[2] for x in inputs])
            low_res, scores = runner.decode_logits(emb, pts, lab, box)
            for j, i in enumerate(members):
                cands[i].append((low_res[j], scores[j], _memo_key(memo_tag, level, inputs[j])))
    return cands


def candidate_masks(runner, emb, cands: list, memo=None) -> tuple[np.ndarray, np.ndarray]:
    """One component's candidates (from :func:`decode_levels`) → masks (n, H, W) bool and scores (n,).

    The logits decoded now go through one upsampling together (on the device); their masks are then kept in
    ``memo``, bit-packed (3·H·W/8 bytes a prompt)."""
    new = [c for c in cands if c[2] is not None]
    if new:
        masks = iter(np.split(runner.masks_at_image(emb, torch.cat([low for low, _, _ in new])), len(new)))
    out_masks, out_scores = [], []
    for m, score, key in cands:
        if key is not None:
            m, score = next(masks), score.cpu().numpy()
            if memo is not None:
                memo.put(key, (np.packbits(m, axis=-1), score))
        out_masks.append(m)
        out_scores.append(score)
    return np.concatenate(out_masks), np.concatenate(out_scores)


def refine_from_prompts(runner, emb, prompts: Prompts, rough: np.ndarray, config,
                        valid: np.ndarray | None = None, batched: bool = True,
                        memo=None, memo_tag: tuple = (), with_maps: bool = True) -> tuple[FinalMaps, np.ndarray | None]:
    """Steps 3–6 on a cached SAM embedding. Returns the final maps and the component maps (K, H, W) (None
    without ``with_maps``: the engine only needs the final maps, which are fused from the maps' boxes).

    Candidates stay SAM's low-resolution logits on the device until their component is merged: one upsampling
    per component, then the filter and the merge (steps 4–5) on masks at image resolution, as the method
    defines them. ``memo``/``memo_tag``: see :func:`decode_levels` and :func:`placed_component_maps` (None: the
    plain path, everything decoded afresh)."""
    rough = check_rough_map(rough, None if valid is None else np.shape(valid))
    placed = placed_component_maps(runner, emb, prompts, rough.shape, config, batched, memo, memo_tag)
    maps = fuse_placed(rough, placed, config, valid)  # the same maps as fuse_maps of the pasted ones
    return maps, (pasted(placed, rough.shape) if with_maps else None)


def component_maps(runner, emb, prompts: Prompts, shape: tuple[int, int], config, batched: bool = True,
                   memo=None, memo_tag: tuple = ()) -> np.ndarray:
    """Steps 3–5: the merged map M_c of every component, (K, H, W) float32 in [0, 1], ``shape`` (H, W) being the
    embedding's image (the whole image, or the crop it was made of: :mod:`.crops`)."""
    return pasted(placed_component_maps(runner, emb, prompts, shape, config, batched, memo, memo_tag), shape)


def pasted(placed: list, shape: tuple[int, int]) -> np.ndarray:
    """``[(box, map), ...]`` (see :func:`placed_component_maps`) → (K, H, W) float32, 0 outside each box."""
    out = np.zeros((len(placed), *shape), np.float32)
    for k, ((r0, c0, r1, c1), m) in enumerate(placed):
        out[k, r0:r1, c0:c1] = m
    return out


def _cropped(m: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A component map as ``(box, map inside the box)``, the box bounding its non-zero pixels (empty: 0 × 0)."""
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0), np.zeros((0, 0), np.float32)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return (r0, c0, r1, c1), np.ascontiguousarray(m[r0:r1, c0:c1], np.float32)


def _component_key(memo_tag: tuple, cp: ComponentPrompt, shape, config, fallback) -> tuple:
    """What a component's merged map depends on: its prompts at each level, the filter's settings and its
    fallback mask (the binarised component, when there is one)."""
    inputs = []
    for level in config.levels:
        inp = cp.level_inputs(level)
        inputs.append(None if inp is None else _memo_key((), level, inp)[1:])
    fb = None if fallback is None else hashlib.blake2b(np.packbits(fallback).tobytes(), digest_size=16).digest()
    return ("component", *memo_tag, tuple(shape), tuple(inputs), float(config.min_predicted_iou),
            float(config.max_outside_box), fb)


def placed_component_maps(runner, emb, prompts: Prompts, shape: tuple[int, int], config, batched: bool = True,
                          memo=None, memo_tag: tuple = ()) -> list:
    """Steps 3–5 as ``[(box, map), ...]``, one per component: M_c inside the box bounding its non-zero pixels.

    With ``memo`` each component's map is kept (kind ``"component"``, keyed by its prompts, the filter's settings
    and its fallback): a correction that touched one component decodes, filters and merges that one alone; the
    others are taken as they were (their prompts count as answered by the memo, see :func:`decode_levels`)."""
    comps = component_prompts(prompts)
    H, W = shape
    max_batch = config.decoder_batch_size
    if max_batch is None:  # auto: one call per level on a GPU; small chunks on a CPU (see config docs)
        max_batch = None if runner.device.type == "cuda" else 2
    fallbacks = [None if prompts.components is None else prompts.components == (c + 1) for c in range(len(comps))]
    placed: list = [None] * len(comps)
    keys: list = [None] * len(comps)
    if memo is not None:
        for c, cp in enumerate(comps):
            keys[c] = _component_key(memo_tag, cp, shape, config, fallbacks[c])
            placed[c] = memo.get(keys[c])
            if placed[c] is not None and hasattr(memo, "count_hits"):
                memo.count_hits("decoded", sum(cp.level_inputs(lv) is not None for lv in config.levels))
    todo = [c for c in range(len(comps)) if placed[c] is None]
    cands = (decode_levels(runner, emb, [comps[c] for c in todo], tuple(config.levels), batched=batched,
                           max_batch=max_batch, memo=memo, memo_tag=memo_tag)
             if todo else [])
    for c, cc in zip(todo, cands):
        fallback = fallbacks[c]
        if not cc:
            m = fallback.astype(np.float32) if fallback is not None else np.zeros((H, W), np.float32)
        else:
            masks, scores = candidate_masks(runner, emb, cc, memo)
            m = merge_component(masks, scores, keep_candidates(masks, scores, comps[c].box, config), fallback)
        placed[c] = _cropped(m)
        if memo is not None:
            memo.put(keys[c], placed[c])
    return placed
