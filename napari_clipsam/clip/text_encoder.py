"""Text embeddings of the prompt ensemble, with the causal-truncation fast path and two caches.

CLIP's text transformer is causal: the end-of-text token only attends to tokens before it, so the
padding after it never changes its output. :func:`encode_text` therefore runs the transformer on the
shortest context that holds every prompt's end token (about 20 of the 77 positions for the ensemble),
which gives the same embeddings as the full computation at a fraction of the cost.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..io.atomic import atomic_file
from .text_prompts import clean_object_name, expand_prompts

log = logging.getLogger(__name__)
TEXT_CACHE_FORMAT = 2
"""Part of every text-cache key: bump when what an entry holds changes, so older entries are never misread."""


def supports_truncation(clip_model) -> bool:
    """True for open_clip's ``CLIP`` text tower (causal, argmax pooling), where truncation is exact."""
    return (
        hasattr(clip_model, "token_embedding")
        and hasattr(clip_model, "attn_mask")
        and getattr(clip_model, "text_pool_type", "argmax") == "argmax"
        and getattr(clip_model, "attn_mask", None) is not None
    )


@torch.no_grad()
def encode_text(clip_model, tokens: torch.Tensor, truncate: bool = True, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` float32 of tokenised prompts ``(N, context)`` int64.

    ``truncate=True`` sorts the prompts by length and runs the causal transformer on each batch only up to its
    longest prompt's end token (exact for open_clip's CLIP text tower; other towers use ``encode_text``).
    """
    fast = truncate and supports_truncation(clip_model)
    order = torch.argsort(tokens.argmax(dim=-1).cpu()) if fast else torch.arange(tokens.shape[0])
    chunks = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[order[start:start + batch_size].to(tokens.device)]
        chunks.append((_encode_truncated(clip_model, chunk) if fast else clip_model.encode_text(chunk)).float())
    out = torch.cat(chunks)[torch.argsort(order).to(chunks[0].device)]  # back to the input order
    return F.normalize(out, dim=-1)


def _encode_truncated(m, tokens: torch.Tensor) -> torch.Tensor:
    eot = tokens.argmax(dim=-1)  # the end token has the largest id in CLIP's vocabulary
    length = int(eot.max()) + 1
    cast = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens[:, :length]).to(cast) + m.positional_embedding[:length].to(cast)
    x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
    x = m.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = m.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """A cheap content fingerprint of a module's weights: per tensor its name, shape, float32 sum and 64 evenly
    spaced values.

    Sums and samples are taken where the weights are, and only they (two small tensors) reach the host: a model
    on a GPU is not copied to the host. Cost: one pass over the weights on their device (about 1 s for CLIP
    ViT-L/14 + SAM vit_b on 2 CPU cores). GPU reductions may sum in another order than the CPU, so the same
    weights can fingerprint differently on another device; that only costs a cache miss. The engine fingerprints
    only weights its loader did not identify (:func:`~napari_clipsam.engine.identity.complete_identity`).
    """
    h = hashlib.sha256()
    state = [(name, t.detach().reshape(-1)) for name, t in module.state_dict().items()]
    if not state:
        return h.hexdigest()[:16]
    sums = torch.stack([t.sum(dtype=torch.float32) if t.is_floating_point() else t.float().sum()
                        for _, t in state]).cpu().tolist()  # float weights summed without a float copy
    samples = [t[:: max(1, t.numel() // 64)][:64].float() for _, t in state]
    flat = torch.cat(samples).cpu().numpy()
    start = 0
    for (name, t), total, sample in zip(state, sums, samples):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(np.float64(total).tobytes())
        h.update(flat[start:start + sample.numel()].tobytes())
        start += sample.numel()
    return h.hexdigest()[:16]


class TextEmbeddingCache:
    """Normal/anomalous class embeddings ``T`` (2, D) per object name, cached in memory and on disk.

    The key is (format, model id, weights id, architecture, object name, prompt-set hash), so a new model, new
    weights, the same weights in another architecture (QuickGELU vs GELU) or edited prompt lists never reuse
    stale embeddings. ``architecture`` defaults to the model's
    :func:`~napari_clipsam.io.cache_files.architecture_fingerprint`. A disk entry is used only when it is a finite
    float32 ``(2, D)`` array; anything else is a miss (logged) and is rewritten.
    """

    def __init__(self, clip_model, tokenizer, model_id: str, weights_id: str, cache_dir: Path | None,
                 device: torch.device, memory_items: int = 64, architecture: str | None = None):
        from ..io.cache_files import HitCounter, architecture_fingerprint, sweep_stale

        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.weights_id = weights_id
        self.architecture = architecture or architecture_fingerprint(clip_model)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            sweep_stale(self.cache_dir)
        self.device = device
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memory_items = memory_items
        self._counts = HitCounter()

    def key(self, object_name: str, prompt_hash: str, version: int | None = None) -> str:
        """The cache key (also the file name) of one object's ``T``: :data:`TEXT_CACHE_FORMAT` and the CLIP model,
        weights and architecture ids, the object name and the prompt set's hash."""
        from ..io.cache_files import cache_key

        return cache_key({"cache": "text-embedding", "clip_model": str(self.model_id),
                          "clip_weights": str(self.weights_id), "clip_architecture": self.architecture,
                          "object_name": clean_object_name(object_name), "prompt_set": prompt_hash},
                         TEXT_CACHE_FORMAT if version is None else version)

    def get(self, object_name: str, config, truncate: bool = True) -> torch.Tensor:
        """``T`` (2, D) float32 on the engine's device: row 0 normal, row 1 anomalous."""
        key = self.key(object_name, config.prompt_set_hash())
        if key in self._memory:
            self._memory.move_to_end(key)
            self._counts.hit()
            return self._memory[key]
        T = self._load(key) if config.text_cache else None
        if T is None:
            self._counts.miss()  # the text tower runs
            T = self.compute(object_name, config, truncate=truncate)
            if config.text_cache:
                self._save(key, T)
        else:
            self._counts.hit()
        T = T.to(self.device)
        self._memory[key] = T
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)
        return T

    def cache_info(self):
        """:class:`~napari_clipsam.io.cache_files.CacheInfo` of :meth:`get`: hits (memory or disk), misses (the text
        tower ran) and the embeddings held in memory."""
        return self._counts.info(len(self._memory))

    def compute(self, object_name: str, config, truncate: bool = True) -> torch.Tensor:
        """Encode both state groups and average each (method §1): returns (2, D) float32, L2-normalised."""
        rows = []
        for states in (config.normal_states, config.abnormal_states):
            prompts = expand_prompts(object_name, states, config.templates)
            tokens = self.tokenizer(prompts).to(self.device)
            emb = encode_text(self.clip_model, tokens, truncate=truncate)
            rows.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(rows).float()

    def _path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.npy"

    def _load(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            T = np.load(path, allow_pickle=False)
            if not isinstance(T, np.ndarray) or T.dtype != np.float32 or T.ndim != 2 or T.shape[0] != 2:
                raise ValueError(f"holds {getattr(T, 'dtype', type(T).__name__)} {getattr(T, 'shape', '')}, "
                                 "not float32 (2, D)")
            if not np.isfinite(T).all():
                raise ValueError("holds NaN or infinite values")
            return torch.from_numpy(T)
        except (OSError, ValueError, EOFError) as exc:  # a corrupt cache entry is recomputed, never fatal
            log.warning("Ignoring unusable text-embedding cache %s (%s); it will be rewritten.", path, exc)
            return None

    def _save(self, key: str, T: torch.Tensor) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            with atomic_file(path) as f:
                np.save(f, T.detach().cpu().numpy())
        except OSError as exc:  # a read-only cache folder costs speed, not correctness
            from ..io.cache_files import cache_unusable

            cache_unusable(path.parent, "text embeddings", exc)
