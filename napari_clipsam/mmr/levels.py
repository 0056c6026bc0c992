"""Multi-level decoding (method §3 steps 3–6): per prompt level, every component in one SAM batch.

Levels: ``point`` (the component's points), ``box`` (its grown box), ``box+point`` (both). Each SAM call uses
multimask output, so a component gathers up to 3 × levels candidates before filtering and merging.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .merge import FinalMaps, fuse_maps, keep_candidates, merge_component
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


MEMO_ENTRIES = 64
MEMO_BYTES = 96 << 20
"""Decoded prompts remembered per SAM embedding: at most this many, and this many bytes of bit-packed masks
(3 × H × W / 8 bytes a prompt: all 3 levels of 10 components of a 5-megapixel image fit)."""


def _memo_key(tag: str, level: str, inp) -> tuple:
    return (tag, level) + tuple(None if a is None else np.asarray(a, np.float32).tobytes() for a in inp)


def decode_levels(runner, emb, comps: list[ComponentPrompt], levels: tuple[str, ...], batched: bool = True,
                  max_batch: int | None = None, memo: dict | None = None, memo_tag: str = ""):
    """Candidates per component: lists of (masks (n, H, W) bool, scores (n,)).

    With ``batched`` every level is one decoder call per group of components with equally many points
    (exactly one per level for derived prompts), split into calls of at most ``max_batch`` prompts when given;
    otherwise one call per component and level (the plain path the batched one is tested against).
    ``memo`` (an ordered dict kept with the embedding, ``memo_tag`` naming the precision) holds decoded prompts:
    a prompt found there is not decoded again, so a correction re-decodes only the components it changed.
    """
    cands: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in comps]
    width = emb.original_size[1]
    for level in levels:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, cp in enumerate(comps):
            inp = cp.level_inputs(level)
            if inp is None:
                continue
            if memo is not None:
                key = _memo_key(memo_tag, level, inp)
                hit = memo.pop(key, None)  # pop and put back: most recent last (each step atomic across threads)
                if hit is not None:
                    memo[key] = hit
                    cands[i].append((np.unpackbits(hit[0], axis=-1, count=width).astype(bool), hit[1]))
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
            masks, scores = runner.decode(emb, pts, lab, box)
            for j, i in enumerate(members):
                cands[i].append((masks[j], scores[j]))
                if memo is not None:
                    memo[_memo_key(memo_tag, level, inputs[j])] = (np.packbits(masks[j], axis=-1), scores[j])
                    _trim(memo)
    return cands


def _trim(memo: dict) -> None:
    """Forget the least recently used decoded prompts beyond :data:`MEMO_ENTRIES` / :data:`MEMO_BYTES`."""
    with contextlib.suppress(KeyError, RuntimeError):  # another thread trimming or touching the same memo
        while len(memo) > MEMO_ENTRIES or (len(memo) > 1 and sum(v[0].nbytes for v in memo.values()) > MEMO_BYTES):
            memo.popitem(last=False)


def refine_from_prompts(runner, emb, prompts: Prompts, rough: np.ndarray, config,
                        valid: np.ndarray | None = None, batched: bool = True,
                        reuse: bool = False) -> tuple[FinalMaps, np.ndarray]:
    """Steps 3–6 on a cached SAM embedding. Returns the final maps and the component maps (K, H, W).

    ``reuse``: take prompts decoded before on this embedding from its memo (``emb.decoded``) instead of decoding
    them again (the engine's default; the plain path decodes everything)."""
    comps = component_prompts(prompts)
    H, W = rough.shape
    max_batch = config.decoder_batch_size
    if max_batch is None:  # auto: one call per level on a GPU; small chunks on a CPU (see config docs)
        max_batch = None if runner.device.type == "cuda" else 2
    cands = (decode_levels(runner, emb, comps, tuple(config.levels), batched=batched, max_batch=max_batch,
                           memo=emb.decoded if reuse else None, memo_tag=f"{emb.model_id}|{config.dtype}")
             if comps else [])
    maps = []
    for c, (cp, cc) in enumerate(zip(comps, cands)):
        fallback = None if prompts.components is None else prompts.components == (c + 1)
        if not cc:
            maps.append(fallback.astype(np.float32) if fallback is not None else np.zeros((H, W), np.float32))
            continue
        masks = np.concatenate([m for m, _ in cc])
        scores = np.concatenate([s for _, s in cc])
        keep = keep_candidates(masks, scores, cp.box, config)
        maps.append(merge_component(masks, scores, keep, fallback))
    comp_maps = np.stack(maps) if maps else np.zeros((0, H, W), np.float32)
    return fuse_maps(rough, comp_maps, config, valid), comp_maps
