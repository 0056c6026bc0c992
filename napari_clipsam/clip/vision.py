"""Frozen CLIP vision features: squash preprocessing, multi-layer patch tokens, training-free tokens.

Shapes use ``B`` images, CLIP input size ``S`` (e.g. 336 or 518), patch grid ``h = w = S / patch`` and
vision width ``C`` (1024 for ViT-L/14). The caller runs these under ``torch.no_grad()``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipVision:
    """Thin view of an open_clip ``CLIP`` model's vision tower.

    Args:
        clip_model: an open_clip ``CLIP`` (its ``visual`` is a ``VisionTransformer``).
    """

    def __init__(self, clip_model):
        self.visual = clip_model.visual
        if not hasattr(self.visual, "forward_intermediates") or not hasattr(self.visual, "transformer"):
            raise InvalidInputError("ClipSAM needs an open_clip ViT vision tower (VisionTransformer); "
                                    f"got {type(self.visual).__name__}.")
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        patch = self.visual.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.depth = len(self.visual.transformer.resblocks)
        self.width = int(self.visual.transformer.width)
        cfg = getattr(self.visual, "preprocess_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", OPENAI_MEAN))
        self.std = tuple(cfg.get("std", OPENAI_STD))
        self.tower = None
        """What runs the tower: None = the torch module; else a callable ``tower(x, indices, fmt, extra)`` with
        the contract of :meth:`intermediates` (an OpenVINO tower, see :mod:`napari_clipsam.engine.backends`)."""

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def device(self) -> torch.device:
        return self.visual.conv1.weight.device

    def preprocess(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """uint8 RGB images (each H×W×3, any size) → normalised ``(B, 3, S, S)`` float32, squashed
        (aspect ratio not kept) with antialiased bicubic resize (method §1)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        batch = []
        for im in images:
            arr = np.ascontiguousarray(im)
            if not arr.flags.writeable:  # a read-only (e.g. memory-mapped) image: torch warns on wrapping it
                arr = arr.copy()
            t = torch.from_numpy(arr).to(self.device).permute(2, 0, 1)[None].float() / 255.0
            t = F.interpolate(t, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0.0, 1.0)
            batch.append(t)
        x = torch.cat(batch)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def check_layers(self, layers: tuple[int, ...]) -> None:
        bad = [i for i in layers if not 1 <= int(i) <= self.depth]
        if bad:
            raise InvalidInputError(f"feature_layers {tuple(layers)} are 1-based block numbers, but this CLIP vision "
                                    f"tower has {self.depth} blocks; choose numbers from 1 to {self.depth}.")

    def intermediates(self, x: torch.Tensor, indices: list[int], fmt: str, extra: bool) -> dict:
        """``visual.forward_intermediates(x, indices, stop_early=True, intermediates_only=True, output_fmt=fmt,
        output_extra_tokens=extra)`` (0-based indices), run by :attr:`tower` when one is set."""
        if self.tower is not None:
            return self.tower(x, indices, fmt, extra)
        return self.visual.forward_intermediates(x, indices=indices, stop_early=True, intermediates_only=True,
                                                 output_fmt=fmt, output_extra_tokens=extra)

    def patch_tokens(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Patch tokens (CLS dropped) of the residual stream after each 1-based block in ``layers``.

        Returns one ``(B, C, h, w)`` tensor per layer. Blocks after the last requested one are not run.
        """
        self.check_layers(layers)
        return self.intermediates(x, [int(i) - 1 for i in layers], "NCHW", False)["image_intermediates"]

    def training_free_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Training-free dense features (method §2, fallback): the final block's value-value attention.

        The last block's input is projected to values, attended with value-value attention (queries and keys
        replaced by the values, as in MaskCLIP / CLIP Surgery, which keeps each token local), passed through the
        block's output projection, CLIP's ``ln_post`` and ``proj``. The residual and MLP of that block are skipped.
        Returns ``(B, h, w, D)`` in CLIP's joint embedding space (not normalised).
        """
        self._check_training_free()
        out = self.intermediates(x, [self.depth - 2], "NLC", True)
        return self._value_value(out["image_intermediates_prefix"][0], out["image_intermediates"][0])

    def training_free_and_patch_tokens(self, x: torch.Tensor,
                                       layers: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`training_free_tokens` and :meth:`patch_tokens` of the same images from one forward pass:
        ``((B, h, w, D), [(B, C, h, w) per layer])`` (few-shot references in training-free mode)."""
        self._check_training_free()
        self.check_layers(layers)
        wanted = sorted({int(i) - 1 for i in layers} | {self.depth - 2})
        out = self.intermediates(x, wanted, "NLC", True)
        by_index = dict(zip(wanted, zip(out["image_intermediates_prefix"], out["image_intermediates"])))
        tf = self._value_value(*by_index[self.depth - 2])
        g = self.grid
        patch = [by_index[int(i) - 1][1].reshape(x.shape[0], g, g, -1).permute(0, 3, 1, 2).contiguous()
                 for i in layers]
        return tf, patch

    def _check_training_free(self) -> None:
        if self.depth < 2:
            raise InvalidInputError("The training-free rough map needs a CLIP vision tower with at least 2 blocks.")
        if not isinstance(getattr(self.visual.transformer.resblocks[-1], "attn", None), torch.nn.MultiheadAttention):
            raise InvalidInputError("The training-free rough map needs open_clip's standard residual attention "
                                    "blocks.")

    def _value_value(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """The last block's value-value attention on the tokens entering it: (B, 1, C) class token and
        (B, L, C) patch tokens → (B, h, w, D)."""
        last = self.visual.transformer.resblocks[-1]
        attn = last.attn
        tokens = torch.cat([prefix, patches], dim=1)
        y = last.ln_1(tokens)
        width = y.shape[-1]
        v = F.linear(y, attn.in_proj_weight[2 * width:], None if attn.in_proj_bias is None
                     else attn.in_proj_bias[2 * width:])
        B, L, _ = v.shape
        heads = attn.num_heads
        vh = v.view(B, L, heads, width // heads).transpose(1, 2)
        vv = F.scaled_dot_product_attention(vh, vh, vh).transpose(1, 2).reshape(B, L, width)
        z = attn.out_proj(vv)[:, 1:]
        z = self.visual.ln_post(z)
        if self.visual.proj is not None:
            z = z @ self.visual.proj
        g = self.grid
        return z.reshape(B, g, g, -1)
