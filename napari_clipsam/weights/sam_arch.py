"""SAM architectures described as data, so custom or tiny geometries load through the same code as Meta's.

A ``local-dir:`` SAM is a folder with ``sam_config.json`` (the keys of :data:`DEFAULTS`) and ``sam.pth``
(a state dict). Meta's three official models are :data:`OFFICIAL` entries of the same form.
"""
from __future__ import annotations

import contextlib
import json
from functools import partial
from pathlib import Path

import torch

from ..errors import WeightsUnavailableError

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


def build_sam(cfg: dict, encoder_on_meta: bool = False):
    """A randomly initialised ``segment_anything.modeling.Sam`` with the given geometry.

    ``encoder_on_meta``: the image encoder (97 % of vit_b's weights) is built on torch's ``meta`` device, without
    drawing its random weights (1.6 s of vit_b's 1.7 s on 2 cores), for a caller that assigns a checkpoint's
    tensors next (:func:`load_checkpoint`); the model cannot run before that.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    check_geometry(cfg)
    c = {**DEFAULTS, **cfg}
    grid = c["image_size"] // c["patch_size"]
    with torch.device("meta") if encoder_on_meta else contextlib.nullcontext():
        encoder = ImageEncoderViT(
            img_size=c["image_size"], patch_size=c["patch_size"], embed_dim=c["encoder_embed_dim"],
            depth=c["encoder_depth"], num_heads=c["encoder_num_heads"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(c["encoder_global_attn_indexes"]), window_size=c["window_size"],
            out_chans=c["prompt_embed_dim"])
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=c["prompt_embed_dim"], image_embedding_size=(grid, grid),
                                     input_image_size=(c["image_size"], c["image_size"]), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=c["decoder_depth"], embedding_dim=c["prompt_embed_dim"],
                                          mlp_dim=c["decoder_mlp_dim"], num_heads=c["decoder_num_heads"]),
            transformer_dim=c["prompt_embed_dim"], iou_head_depth=3, iou_head_hidden_dim=c["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def load_checkpoint(cfg: dict, state: dict[str, torch.Tensor]):
    """SAM of geometry ``cfg`` holding the tensors of ``state`` (a state dict), as float32 where floating.

    Equal to ``build_sam(cfg).load_state_dict(state, strict=True)`` without drawing random weights first for the
    image encoder: it is built empty and the checkpoint's tensors are assigned. Raises RuntimeError (torch's
    message) for missing, unexpected or mis-shaped keys, as ``load_state_dict`` does.
    """
    sam = build_sam(cfg, encoder_on_meta=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    sam.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:  # strict loading fills every parameter and persistent buffer: this would be a new kind of module
        raise RuntimeError(f"the checkpoint left {left[:3]} without values")
    return sam.eval()


def save_local_dir(folder: str | Path, sam, cfg: dict) -> Path:
    """Write a ``local-dir:`` SAM folder (config + state dict)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({**DEFAULTS, **cfg}, indent=1))
    torch.save(sam.state_dict(), folder / WEIGHTS_FILE)
    return folder


def read_local_dir(folder: Path) -> tuple[dict, Path]:
    """The geometry and weights path of a ``local-dir:`` SAM folder.

    Raises WeightsUnavailableError naming the file: a missing, empty or folder ``sam.pth``/``sam_config.json``,
    or a config that is not a JSON object of the known keys with whole-number values.
    """
    if not folder.is_dir():
        raise WeightsUnavailableError(f"SAM folder {folder} {'is a file' if folder.exists() else 'does not exist'}; "
                                      f"a local-dir SAM is a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}.")
    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for p in (cfg_path, weights):
        if not p.is_file():
            raise WeightsUnavailableError(f"SAM folder {folder} lacks the file {p.name}; a local-dir SAM holds "
                                          f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
        if p.stat().st_size == 0:
            raise WeightsUnavailableError(f"{p} is empty (0 bytes): an interrupted copy? Copy it again.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsUnavailableError(f"{cfg_path} is not valid JSON ({err}); it must be a JSON object such as "
                                      f"{json.dumps(DEFAULTS)}.") from err
    if not isinstance(cfg, dict):
        raise WeightsUnavailableError(f"{cfg_path} must hold a JSON object of SAM geometry keys "
                                      f"({', '.join(DEFAULTS)}), got {type(cfg).__name__}.")
    check_geometry(cfg, str(cfg_path))
    return cfg, weights


def check_geometry(cfg: dict, where: str = "SAM config") -> None:
    """Refuse unknown keys and values that are not positive whole numbers (lists of them for the attention
    indexes), naming the key; ``where`` names the file."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise WeightsUnavailableError(f"{where}: unknown SAM config keys {sorted(unknown)}; known keys: "
                                      f"{sorted(DEFAULTS)}")
    for key, value in cfg.items():
        items = value if isinstance(value, list) and key == "encoder_global_attn_indexes" else [value]
        if isinstance(value, list) != (key == "encoder_global_attn_indexes") or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= (0 if isinstance(value, list) else 1)
                for v in items):
            raise WeightsUnavailableError(f"{where}: {key} = {value!r} is not valid; expected "
                                          + ("a list of block indexes" if key == "encoder_global_attn_indexes"
                                             else "a positive whole number") + f" (default {DEFAULTS[key]!r}).")
