"""Tensor helpers for batches of per-layer features (a tensor, or a list with one tensor per feature layer)."""
from __future__ import annotations

import torch


def transformer_blocks(module, *path: str):
    """The transformer blocks at ``module.<path>`` (for per-block progress), or () when the model has none."""
    for name in path:
        module = getattr(module, name, None)
    return module if module is not None else ()


def take(feats, j):
    """Image ``j`` of a batch, kept as a batch of one."""
    return [f[j:j + 1] for f in feats] if isinstance(feats, list) else feats[j:j + 1]


def stack(items):
    """The batch made of per-image items (the inverse of :func:`take`)."""
    if isinstance(items[0], list):
        return [torch.cat([it[i] for it in items]) for i in range(len(items[0]))]
    return torch.cat(items)
