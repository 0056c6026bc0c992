"""From CLIP features to the rough anomaly map (method §2 steps 5–6), for both UMCI and training-free modes."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def anomaly_from_logits(logits: list[torch.Tensor], size: int) -> torch.Tensor:
    """Per-layer two-class logits (B, 2, h, w) → mean anomalous probability (B, size, size) in [0, 1]."""
    maps = [F.interpolate(torch.softmax(lg.float(), dim=1)[:, 1:2], size=(size, size), mode="bilinear",
                          align_corners=False) for lg in logits]
    return torch.stack(maps).mean(dim=0)[:, 0]


def training_free_logits(tokens: torch.Tensor, T: torch.Tensor, temperature: float) -> torch.Tensor:
    """Training-free dense tokens (B, h, w, D) and text T (2, D) → logits (B, 2, h, w)."""
    z = F.normalize(tokens.float(), dim=-1) @ F.normalize(T.float(), dim=-1).T / temperature
    return z.permute(0, 3, 1, 2)


def to_image_resolution(rough: torch.Tensor, shape: tuple[int, int], sigma_at_518: float = 0.0) -> np.ndarray:
    """One rough map (S, S) at CLIP resolution → (H, W) float32 in [0, 1] at image resolution.

    ``sigma_at_518`` is the Gaussian σ in pixels at a 518-px CLIP input (scaled to ``S``); 0 disables it.
    """
    S = rough.shape[-1]
    m = rough.detach().float().cpu().numpy()
    if sigma_at_518 > 0:
        m = gaussian_filter(m, sigma=sigma_at_518 * S / 518.0)
    t = torch.from_numpy(m)[None, None]
    out = F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.clip(out, 0.0, 1.0).astype(np.float32)
