"""A tiny SAM whose masks mean something: the dark pixels of its input, at its own mask resolution.

A random SAM's masks carry no image content, so no test can measure with it how well a path *resolves* a defect.
This one is built from the real ``segment_anything`` modules with the tiny 256-px geometry of the test SAM, its
weights set by hand instead of trained: the patch embedding measures the darkness of each 4×4-pixel cell of a
16-px patch, every transformer block and attention update is switched off (zero output projections), the mask
decoder's upscaling puts each cell's darkness at its low-resolution mask pixel (64² for the 256-px input, so one
mask pixel is 4 input pixels) and every mask token reads ``darkness - threshold``; the predicted IoU is 0.9 for
every mask. Prompts do not change the masks: the engine's own filter (area outside the grown box) and merge
decide what is kept. What SAM's input sees is what the masks resolve, which is what crops change.
"""
from __future__ import annotations

import numpy as np

DARK_THRESHOLD = 0.8
"""The mask is on where a 4×4 cell of SAM's input is darker than a flat image of this darkness (0 = white,
1 = black; the LayerNorms make it relative to the patch's mean): chosen (measured on 1280² metal crops) so that no
metal cell is on and the cells a 2-px dark scratch crosses are."""
_K = 32.0  # a constant channel that dominates each LayerNorm, so the darkness channels pass through it linearly


def make_dark_sam(threshold: float = DARK_THRESHOLD):
    """The tiny SAM (``napari_clipsam.testing.make_tiny_sam`` geometry) with the hand-set weights above."""
    import torch

    from napari_clipsam.testing import make_tiny_sam

    sam = make_tiny_sam(0)
    enc, dec = sam.image_encoder, sam.mask_decoder
    with torch.no_grad():
        for p in sam.parameters():
            p.zero_()
        # patch embedding: channel j < 16 = darkness of cell j (row-major 4×4 cells of the 16-px patch) from the
        # normalised input x = (rgb - mean) / std; darkness = 1 - mean(rgb) / 255; channel 16 = the constant _K
        w = enc.patch_embed.proj.weight  # (32, 3, 16, 16)
        mean, std = sam.pixel_mean.flatten(), sam.pixel_std.flatten()
        bias = torch.zeros(32)
        for j in range(16):
            r, c = divmod(j, 4)
            for ch in range(3):  # rgb = x·std + mean; darkness = 1 - Σ_ch mean over the cell of rgb / (3·255)
                w[j, ch, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = -std[ch] / (3 * 255.0 * 16)
            bias[j] = 1.0 - float(mean.sum()) / (3 * 255.0)
        bias[16] = _K
        enc.patch_embed.proj.bias.copy_(bias)
        for blk in enc.blocks:  # identity blocks (the LayerNorms stay at their defaults)
            for norm in (blk.norm1, blk.norm2):
                norm.weight.fill_(1.0)
        neck_conv1, neck_ln1, neck_conv3, neck_ln2 = enc.neck
        neck_conv1.weight.copy_(torch.eye(32)[:, :, None, None])
        neck_conv3.weight[:, :, 1, 1] = torch.eye(32)
        for ln in (neck_ln1, neck_ln2):
            ln.weight.fill_(1.0)
        for ln in (dec.transformer.layers[0].norm1, dec.transformer.layers[0].norm2, dec.transformer.layers[0].norm3,
                   dec.transformer.layers[0].norm4, dec.transformer.norm_final_attn):
            ln.weight.fill_(1.0)
        # upscaling: ConvTranspose2d(32 → 8, 2, 2): quadrant (a, b) carries its 4 cells in channels 0-3 and the
        # constant in channel 4; LayerNorm2d(8) (+2 on the cells keeps them where GELU is nearly linear); then
        # ConvTranspose2d(8 → 4, 2, 2): sub-position (u, v) gives its cell in channel 0, the constant in channel 1
        up1, ln, _, up2, _ = dec.output_upscaling
        for a in range(2):
            for b in range(2):
                for u in range(2):
                    for v in range(2):
                        up1.weight[4 * (2 * a + u) + (2 * b + v), 2 * u + v, a, b] = 1.0
                        up2.weight[2 * u + v, 0, u, v] = 1.0
                        up2.weight[4, 1, u, v] = 1.0
                up1.weight[16, 4, a, b] = 1.0
        ln.weight.fill_(1.0)
        ln.bias[:4] = 2.0
        for mlp in dec.output_hypernetworks_mlps:  # mask logit = gain · (cell - threshold·constant)
            mlp.layers[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        dec.iou_prediction_head.layers[-1].bias.fill_(0.9)
    sam.calibrate = lambda: _calibrate(sam, threshold)
    _calibrate(sam, threshold)
    return sam.eval()


def _calibrate(sam, threshold: float) -> None:
    """Set the mask tokens' read-out so that a cell of darkness ``threshold`` gives logit 0: measured through the
    model itself on two flat images (the channel values are linear in darkness there)."""
    import torch

    def cell_and_const(level: float):
        img = np.full((256, 256, 3), round(255 * (1 - level)), np.uint8)
        x = sam.preprocess(torch.as_tensor(img).permute(2, 0, 1)[None].float())
        with torch.no_grad():
            emb = sam.image_encoder(x)
            src = emb + sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            tokens = torch.cat([sam.mask_decoder.iou_token.weight, sam.mask_decoder.mask_tokens.weight])[None]
            _, keys = sam.mask_decoder.transformer(src, sam.prompt_encoder.get_dense_pe(), tokens)
            up = sam.mask_decoder.output_upscaling(keys.transpose(1, 2).view(1, 32, 16, 16))
        return float(up[0, 0].mean()), float(up[0, 1].mean())

    (d0, k0), (d1, k1) = cell_and_const(0.0), cell_and_const(1.0)
    level_at = d0 + threshold * (d1 - d0)  # channel 0 at the threshold (the constant channel hardly moves)
    gain = 40.0 / max(d1 - d0, 1e-6)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.copy_(torch.tensor([gain, -gain * level_at / ((k0 + k1) / 2), 0.0, 0.0]))
