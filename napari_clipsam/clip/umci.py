"""UMCI: Unified Multi-scale Cross-modal Interaction (method §2), one trainable head per CLIP layer.

Notation per layer: patch tokens ``(B, C, h, w)`` from frozen CLIP, text ``T`` ``(2, D)`` (row 0 normal,
row 1 anomalous), ``D`` the joint embedding width (768 for ViT-L/14).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(owner: str, **args) -> None:
    """InvalidInputError naming the first constructor argument of ``owner`` that cannot build the module:
    widths and heads are whole numbers from 1, layers a non-empty list of distinct block numbers from 1,
    kernels pooling sizes from 1 (none: no Scale path), temperature a finite number above 0."""
    for name, value in args.items():
        if name in ("in_dim", "dim", "heads"):
            ok, accepted = _whole(value) and value >= 1, "a whole number from 1"
        elif name in ("layers", "kernels"):
            items = None if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__") else list(value)
            ok = items is not None and all(_whole(v) and v >= 1 for v in items) and len(set(items)) == len(items)
            ok = ok and (bool(items) or name == "kernels")
            accepted = ("a non-empty list of distinct CLIP block numbers from 1" if name == "layers"
                        else "a list of distinct pooling sizes from 1 (empty: no Scale path)")
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            accepted = "a finite number above 0"
        if not ok:
            raise InvalidInputError(f"{owner}({name}={value!r}) is not accepted: {name} must be {accepted}.")


class UMCILayer(nn.Module):
    """The Strip path, the Scale path and their fusion for one CLIP layer.

    ``forward(tokens (B, C, h, w), T (2, D)) -> logits (B, 2, h, w)`` with
    ``logits = normalize(F) · Tᵀ / temperature``.
    """

    def __init__(self, in_dim: int, dim: int, heads: int = 8, kernels: tuple[int, ...] = (2, 4),
                 temperature: float = 0.01):
        super().__init__()
        _check_args("UMCILayer", in_dim=in_dim, dim=dim, heads=heads, kernels=kernels, temperature=temperature)
        if dim % heads:
            raise InvalidInputError(f"UMCI width {dim} is not divisible by {heads} attention heads; choose umci_heads "
                                    f"that divides {dim}.")
        self.kernels = tuple(int(k) for k in kernels)
        self.temperature = float(temperature)
        self.project = nn.Linear(in_dim, dim)
        # Strip path: text attends to the image's row/column strips, then strips attend to that text.
        self.text_from_strips = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.text_norm = nn.LayerNorm(dim)
        self.strips_from_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        # Scale path: pooled patches attend to the text, one attention per kernel.
        self.scale_from_text = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True)
                                             for _ in self.kernels)
        self.fuse = nn.Linear(3 * dim, dim)

    def strip_path(self, V: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """``V`` (B, h, w, D), ``T`` (B, 2, D) → (B, h, w, D): R'[y] + C'[x]."""
        rows, cols = V.mean(dim=2), V.mean(dim=1)  # (B, h, D), (B, w, D)
        strips = torch.cat([rows, cols], dim=1)
        T2 = self.text_norm(T + self.text_from_strips(T, strips, strips, need_weights=False)[0])
        r = self.strips_from_text(rows, T2, T2, need_weights=False)[0]
        c = self.strips_from_text(cols, T2, T2, need_weights=False)[0]
        return r[:, :, None, :] + c[:, None, :, :]

    def scale_path(self, V: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """``V`` (B, h, w, D), ``T`` (B, 2, D) → (B, h, w, D): Σ_k up(MHA(pool_k(V), T, T))."""
        B, h, w, D = V.shape
        grid = V.permute(0, 3, 1, 2)
        out = torch.zeros_like(V)
        for k, attn in zip(self.kernels, self.scale_from_text):
            k = max(1, min(k, h, w))
            pooled = F.avg_pool2d(grid, kernel_size=k, stride=k, ceil_mode=True)  # (B, D, h', w')
            hp, wp = pooled.shape[-2:]
            q = pooled.flatten(2).transpose(1, 2)  # (B, h'w', D)
            a = attn(q, T, T, need_weights=False)[0].transpose(1, 2).reshape(B, D, hp, wp)
            out = out + F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        return out

    def forward(self, tokens: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        V = self.project(tokens.permute(0, 2, 3, 1))  # (B, h, w, D) = V_ori
        Tb = T.to(V.dtype).unsqueeze(0).expand(B, -1, -1)
        fused = V + self.fuse(torch.cat([V, self.strip_path(V, Tb), self.scale_path(V, Tb)], dim=-1))
        fused = F.normalize(fused, dim=-1)
        logits = fused @ F.normalize(Tb, dim=-1).transpose(1, 2).unsqueeze(1) / self.temperature  # (B,h,w,2)
        return logits.permute(0, 3, 1, 2)


class UMCI(nn.Module):
    """One :class:`UMCILayer` per selected CLIP layer (no weight sharing across layers).

    Args:
        in_dim: CLIP vision width ``C``; dim: joint embedding width ``D``; layers: the 1-based CLIP blocks.
    """

    def __init__(self, in_dim: int, dim: int, layers: tuple[int, ...], heads: int = 8,
                 kernels: tuple[int, ...] = (2, 4), temperature: float = 0.01):
        super().__init__()
        _check_args("UMCI", in_dim=in_dim, dim=dim, layers=layers, heads=heads, kernels=kernels,
                    temperature=temperature)
        self.in_dim, self.dim, self.layers = int(in_dim), int(dim), tuple(int(i) for i in layers)
        self.heads, self.kernels, self.temperature = int(heads), tuple(int(k) for k in kernels), float(temperature)
        self.heads_per_layer = nn.ModuleList(UMCILayer(in_dim, dim, heads, kernels, temperature) for _ in layers)

    def hparams(self) -> dict:
        """What is needed to rebuild this module (stored in checkpoints)."""
        return dict(in_dim=self.in_dim, dim=self.dim, layers=list(self.layers), heads=self.heads,
                    kernels=list(self.kernels), temperature=self.temperature)

    def forward(self, tokens: list[torch.Tensor], T: torch.Tensor) -> list[torch.Tensor]:
        """``tokens``: one (B, C, h, w) per layer; ``T`` (2, D). Returns per-layer logits (B, 2, h, w)."""
        if len(tokens) != len(self.heads_per_layer):
            raise InvalidInputError(f"UMCI expects {len(self.heads_per_layer)} feature layers, got {len(tokens)}.")
        return [head(t, T) for head, t in zip(self.heads_per_layer, tokens)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
