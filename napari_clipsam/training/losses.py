"""Losses of UMCI training (method §2): focal loss on the two-class map plus dice on each channel.

Shapes: ``logits`` (B, 2, H, W) (channel 0 normal, 1 anomalous), ``target`` (B, H, W) with values 0/1
(float or bool). All losses return a scalar tensor averaged over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Mean over pixels of ``-(1 - p_t)^gamma · log p_t``, with ``p_t`` the softmax probability of the true class.

    Computed from logits (``log_softmax``) for numerical stability. ``gamma = 0`` gives cross-entropy.

    >>> z = torch.tensor([[[[0.0]], [[0.0]]]])                # p = (0.5, 0.5) for one pixel
    >>> round(float(focal_loss(z, torch.ones(1, 1, 1))), 4)     # 0.25 · log 2
    0.1733
    """
    if logits.ndim != 4 or logits.shape[1] != 2:
        raise ValueError(f"logits must be (B, 2, H, W), got {tuple(logits.shape)}")
    labels = target.long().unsqueeze(1)
    log_pt = torch.log_softmax(logits.float(), dim=1).gather(1, labels)
    pt = log_pt.exp()
    return -((1.0 - pt) ** gamma * log_pt).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Soft dice loss ``1 - (2 Σ p·t + s) / (Σ p + Σ t + s)`` per image, averaged over the batch.

    ``prob`` and ``target`` are (B, H, W) in [0, 1]. The smoothing ``s`` (1 pixel) makes an empty target
    predicted as empty cost 0 (normal images).

    >>> t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    >>> float(dice_loss(t, t))
    0.0
    >>> round(float(dice_loss(torch.full_like(t, 0.5), t)), 4)   # 1 - (2·0.5 + 1) / (2 + 1 + 1)
    0.5
    """
    p = prob.float().flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(dim=1)
    return (1.0 - (2.0 * inter + smooth) / (p.sum(dim=1) + t.sum(dim=1) + smooth)).mean()


def anomaly_map_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """One layer's loss: focal(softmax map) + dice(anomalous channel, mask) + dice(normal channel, 1 - mask).

    ``logits`` (B, 2, H, W) must already be at the mask's resolution (upsample them first).
    """
    prob = torch.softmax(logits.float(), dim=1)
    t = target.float()
    return focal_loss(logits, t, gamma) + dice_loss(prob[:, 1], t) + dice_loss(prob[:, 0], 1.0 - t)


def umci_loss(layer_logits: list[torch.Tensor], masks: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Method §2 loss: per-layer logits (B, 2, h, w) are bilinearly upsampled to the masks' (B, S, S) size and
    :func:`anomaly_map_loss` is summed over layers."""
    size = tuple(masks.shape[-2:])
    total = masks.new_zeros((), dtype=torch.float32)
    for logits in layer_logits:
        up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        total = total + anomaly_map_loss(up, masks, gamma)
    return total
