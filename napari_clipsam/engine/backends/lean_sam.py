"""SAM's image encoder with its global attention computed a band of query rows at a time, for conversion.

SAM ViT's global-attention blocks (4 of 12 in vit_b) attend over all 64 × 64 tokens of the 1024-px input: the
score matrix is heads × 4096 × 4096 (805 MB in float32 for vit_b's 12 heads), and ``add_decomposed_rel_pos``
makes a second tensor of that size. Compiled by OpenVINO these intermediates become working memory the compiled
model keeps for as long as it lives (vit_b fp32, compiled for its one input shape: 899 MiB).

Softmax runs along the keys, so each query's row of the attention is independent of the others: computing the
rows in bands (the config's ``sam_attention_bands``, 8 bands of 8 grid rows by default) gives the same output
with band-sized intermediates (227 MiB of working memory at 8 bands; docs/performance.md).
:class:`BandedSamImageEncoder` is ``ImageEncoderViT.forward`` with the global blocks' attention computed that
way and everything else (patch embedding, windowed blocks, MLPs, neck) the library's own modules, sharing their
parameters; it is what the OpenVINO SAM encoder converts (``attention_bands`` in its cache key).
``tests/test_lean_sam.py`` checks it equals the library's encoder.
"""
from __future__ import annotations

import torch
from torch import nn


def _band_edges(rows: int, bands: int) -> list[tuple[int, int]]:
    """``bands`` contiguous ``(top, bottom)`` row ranges covering ``0..rows`` once, as even as integers allow."""
    rows = int(rows)  # a traced shape is a tensor; the bands are fixed for the converted input size
    bands = max(1, min(int(bands), rows))
    cuts = [i * rows // bands for i in range(bands + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class BandedAttention(nn.Module):
    """``segment_anything``'s ``Attention`` (its parameters shared) computed ``bands`` query-row bands at a time;
    the same inputs and outputs, ``(B, H, W, C)``."""

    def __init__(self, attn: nn.Module, bands: int):
        super().__init__()
        self.attn, self.bands = attn, int(bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segment_anything.modeling.image_encoder import get_rel_pos

        a = self.attn
        b, h, w, _ = x.shape
        qkv = a.qkv(x).reshape(b, h * w, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * a.num_heads, h * w, -1).unbind(0)
        kt = k.transpose(-2, -1)
        if a.use_rel_pos:
            r_q = q.reshape(b * a.num_heads, h, w, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, a.rel_pos_h))
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, a.rel_pos_w))
        outs = []
        for top, bottom in _band_edges(h, self.bands):
            n = bottom - top
            scores = (q[:, top * w:bottom * w] * a.scale) @ kt
            if a.use_rel_pos:
                scores = (scores.view(-1, n, w, h, w) + rel_h[:, top:bottom, :, :, None]
                          + rel_w[:, top:bottom, :, None, :]).view(-1, n * w, h * w)
            outs.append(scores.softmax(dim=-1) @ v)
        out = torch.cat(outs, dim=1).view(b, a.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return a.proj(out)


class BandedSamImageEncoder(nn.Module):
    """``ImageEncoderViT`` (its modules shared, not copied) whose global-attention blocks run
    :class:`BandedAttention`; windowed blocks run as they are."""

    def __init__(self, encoder: nn.Module, bands: int):
        super().__init__()
        self.encoder, self.img_size = encoder, encoder.img_size
        self.banded = nn.ModuleList(BandedAttention(blk.attn, bands) if blk.window_size == 0 else nn.Identity()
                                    for blk in encoder.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.patch_embed(x)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for blk, banded in zip(enc.blocks, self.banded):
            if blk.window_size > 0:
                x = blk(x)
                continue
            x = x + banded(blk.norm1(x))  # Block.forward without windows
            x = x + blk.mlp(blk.norm2(x))
        return enc.neck(x.permute(0, 3, 1, 2))
