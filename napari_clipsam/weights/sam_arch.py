"""SAM architectures described as data, so custom or tiny geometries load through the same code as Meta's.

A ``local-dir:`` SAM is a folder with ``sam_config.json`` (the keys of :data:`DEFAULTS`) and ``sam.pth``
(a state dict). Meta's three official models are :data:`OFFICIAL` entries of the same form.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from ..errors import InvalidInputError, MissingFileError

DEFAULTS = dict(image_size=1024, patch_size=16, encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                encoder_global_attn_indexes=[2, 5, 8, 11], window_size=14, prompt_embed_dim=256,
                decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256)

OFFICIAL = {
    "vit_b": dict(DEFAULTS),
    "vit_l": dict(DEFAULTS, encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=[5, 11, 17, 23]),
    "vit_h": dict(DEFAULTS, encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=[7, 15, 23, 31]),
}
CONFIG_FILE, WEIGHTS_FILE = "sam_config.json", "sam.pth"


def build_sam(cfg: dict):
    """A randomly initialised ``segment_anything.modeling.Sam`` with the given geometry."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise InvalidInputError(f"Unknown SAM config keys {sorted(unknown)}; known keys: {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}
    grid = c["image_size"] // c["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=c["image_size"], patch_size=c["patch_size"], embed_dim=c["encoder_embed_dim"],
            depth=c["encoder_depth"], num_heads=c["encoder_num_heads"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(c["encoder_global_attn_indexes"]), window_size=c["window_size"],
            out_chans=c["prompt_embed_dim"]),
        prompt_encoder=PromptEncoder(embed_dim=c["prompt_embed_dim"], image_embedding_size=(grid, grid),
                                     input_image_size=(c["image_size"], c["image_size"]), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=c["decoder_depth"], embedding_dim=c["prompt_embed_dim"],
                                          mlp_dim=c["decoder_mlp_dim"], num_heads=c["decoder_num_heads"]),
            transformer_dim=c["prompt_embed_dim"], iou_head_depth=3, iou_head_hidden_dim=c["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def save_local_dir(folder: str | Path, sam, cfg: dict) -> Path:
    """Write a ``local-dir:`` SAM folder (config + state dict)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({**DEFAULTS, **cfg}, indent=1))
    torch.save(sam.state_dict(), folder / WEIGHTS_FILE)
    return folder


def read_local_dir(folder: Path) -> tuple[dict, Path]:
    """The geometry and weights path of a ``local-dir:`` SAM folder (FileNotFoundError naming what is missing)."""
    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights):
        if not p.is_file():
            raise MissingFileError(f"SAM folder {folder} lacks {p.name}; a local-dir SAM holds {CONFIG_FILE} "
                                   f"and {WEIGHTS_FILE}.")
    return json.loads(cfg_path.read_text()), weights
