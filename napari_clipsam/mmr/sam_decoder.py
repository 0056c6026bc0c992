"""SAM, embed once and prompt many (method §3 steps 3 and 7).

:class:`SamRunner` runs Meta's ``Sam`` modules: the image encoder once per image (:class:`SamEmbedding`),
then the prompt encoder and mask decoder for a whole batch of prompts on that cached embedding.
The library works in (row, col); SAM in (x, y): :func:`rc_to_xy` is the one place that converts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from ..errors import EngineMismatchError


def rc_to_xy(coords: np.ndarray) -> np.ndarray:
    """(row, col) points ``(..., 2)`` or (row0, col0, row1, col1) boxes ``(..., 4)`` → SAM's (x, y) order."""
    a = np.asarray(coords, dtype=np.float32)
    return np.ascontiguousarray(a.reshape(*a.shape[:-1], -1, 2)[..., ::-1].reshape(a.shape))


@dataclass
class SamEmbedding:
    """SAM's image embedding and the geometry needed to map masks back to the image.

    features: (1, 256, 64, 64) on the model's device; input_size: (h, w) after resizing the longest side to
    the encoder size; original_size: (H, W) of the image.
    """

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    model_id: str = ""
    """Identity of the SAM (model, weights, device, precision) that computed ``features``: a runner refuses to
    decode on an embedding another SAM made."""


class SamRunner:
    """Wraps a ``segment_anything.modeling.Sam``: its image encoder and prompt decoder (the engine caches both and
    counts their runs, see :meth:`~napari_clipsam.engine.clipsam.ClipSAM.cache_info`)."""

    def __init__(self, sam_model, model_id: str = ""):
        self.model = sam_model
        self.model_id = model_id
        """Stamped on every embedding this runner computes (see :attr:`SamEmbedding.model_id`)."""
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.encoder = None
        """What runs the image encoder: None = the torch module; else a callable with the same contract
        ``(B, 3, S, S)`` → ``(B, 256, 64, 64)`` (an OpenVINO encoder, see :mod:`napari_clipsam.engine.backends`)."""
        self.decoder = None
        """What runs the mask decoder after the prompt encoder: None = the torch modules; else a callable
        ``(features (1, C, h, w), sparse (B, N, C))`` → ``(logits (B, 3, 4h, 4w), ious (B, 3))`` with multimask
        output and no mask input (:class:`~napari_clipsam.engine.backends.openvino_decoder.OpenVinoSamDecoder`)."""
        self._dense_pe = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (H, W, 3) RGB → SAM's normalised, padded (1, 3, 1024, 1024) input and its unpadded size."""
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(x.float()), tuple(resized.shape[:2])

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> SamEmbedding:
        """Run the image encoder on one uint8 (H, W, 3) RGB image."""
        return self.embed_many([image])[0]

    @torch.no_grad()
    def embed_many(self, images: list[np.ndarray]) -> list[SamEmbedding]:
        """Run the image encoder on a batch of uint8 RGB images (any sizes) in one forward pass."""
        prepared = [self.prepare(im) for im in images]
        encoder = self.encoder if self.encoder is not None else self.model.image_encoder
        feats = encoder(torch.cat([p[0] for p in prepared])).float()
        return [SamEmbedding(feats[i:i + 1], prepared[i][1], tuple(im.shape[:2]), model_id=self.model_id)
                for i, im in enumerate(images)]

    @torch.no_grad()
    def decode(self, emb: SamEmbedding, points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
               boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode a batch of K prompts with multimask output: masks (K, 3, H, W) bool at image resolution and
        predicted IoUs (K, 3) float32 (arguments as :meth:`decode_logits`)."""
        low_res, iou = self.decode_logits(emb, points, point_labels, boxes)
        masks = self.masks_at_image(emb, low_res.flatten(0, 1)).reshape(*low_res.shape[:2], *emb.original_size)
        return masks, iou.float().cpu().numpy()

    @torch.no_grad()
    def decode_logits(self, emb: SamEmbedding, points: np.ndarray | None = None,
                      point_labels: np.ndarray | None = None,
                      boxes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode a batch of K prompts on one embedding with multimask output, staying on the device.

        Args:
            points: (K, P, 2) (row, col) or None; point_labels: (K, P) with 1 positive / 0 negative;
            boxes: (K, 4) (row0, col0, row1, col1) or None. At least one of points and boxes.
        Returns:
            SAM's low-resolution mask logits (K, 3, 256, 256) float32 and predicted IoUs (K, 3), on the device
            (:meth:`masks_at_image` turns logits into masks).
        """
        if points is None and boxes is None:
            raise ValueError("decode needs points, boxes or both")
        if emb.model_id != self.model_id:
            raise EngineMismatchError(f"This SAM embedding was made by another SAM ({emb.model_id or 'unknown'}), "
                                      f"not this one ({self.model_id or 'unknown'}); embed the image again.")
        H, W = emb.original_size
        pts = None
        if points is not None:
            coords = self.transform.apply_coords(rc_to_xy(points), (H, W))
            pts = (torch.as_tensor(coords, dtype=torch.float32, device=self.device),
                   torch.as_tensor(np.asarray(point_labels), dtype=torch.int64, device=self.device))
        bxs = None
        if boxes is not None:
            b = self.transform.apply_boxes(rc_to_xy(boxes), (H, W))
            bxs = torch.as_tensor(b, dtype=torch.float32, device=self.device)
        sparse, dense = self.model.prompt_encoder(points=pts, boxes=bxs, masks=None)
        if self.decoder is not None:
            low_res, iou = self.decoder(emb.features, sparse)
            return low_res.to(self.device), iou.to(self.device)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=emb.features.to(sparse.dtype),
            image_pe=self.dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        return low_res.float(), iou.float()

    @torch.no_grad()
    def dense_pe(self) -> torch.Tensor:
        """The prompt encoder's ``get_dense_pe()`` (1, C, h, w): it depends on the model's weights alone, so it is
        computed once (again when the weights change, or under autocast, whose precision it would take)."""
        pe = self.model.prompt_encoder
        if torch.is_autocast_enabled(self.device.type):
            return pe.get_dense_pe()
        gauss = pe.pe_layer.positional_encoding_gaussian_matrix
        stamp = (gauss.data_ptr(), gauss._version, gauss.device, gauss.dtype)
        cached = self._dense_pe
        if cached is None or cached[0] != stamp:
            cached = self._dense_pe = (stamp, pe.get_dense_pe())
        return cached[1]

    @torch.no_grad()
    def masks_at_image(self, emb: SamEmbedding, low_res: torch.Tensor) -> np.ndarray:
        """Low-resolution logits (n, 256, 256) → masks (n, H, W) bool at the image's resolution: one upsampling
        for all n (SAM's own ``postprocess_masks``: to the encoder size, crop the padding, to the image size)."""
        if len(low_res) == 0:
            return np.zeros((0, *emb.original_size), bool)
        logits = self.model.postprocess_masks(low_res[:, None], emb.input_size, emb.original_size)[:, 0]
        return (logits > self.model.mask_threshold).cpu().numpy()
