"""Tiny random-initialised models built with the real open_clip and segment_anything classes.

For tests, examples and the README screenshot: they load through exactly the same code paths as real
weights (``local-dir:`` folders read by :meth:`ClipSAM.from_config`) and run in milliseconds on a CPU.
:func:`tiny_config` and :func:`tiny_engine` choose ``backend="torch"`` unless told otherwise: converting even a
tiny encoder to OpenVINO takes seconds, more than it saves (``tests/test_backends.py`` covers OpenVINO).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .heavy_imports import prepare_heavy_imports

TINY_CLIP_NAME = "clipsam-tiny"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 56, "layers": 4, "width": 64, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TINY_SAM_CFG = dict(image_size=256, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                    encoder_global_attn_indexes=[1], window_size=4, prompt_embed_dim=32, decoder_depth=1,
                    decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


@contextmanager
def seeded(seed: int):
    """torch's global (CPU) RNG seeded with ``seed`` inside the block and given back as it was afterwards, so
    building a tiny model gives the same weights every time and does not reseed the code that builds it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write a ``local-dir:`` CLIP folder (open_clip_config.json + open_clip_pytorch_model.bin)."""
    prepare_heavy_imports()
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    with seeded(seed):
        model = open_clip.CLIP(**TINY_CLIP_CFG)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def make_tiny_clip(seed: int = 0, image_size: int = 56):
    """(model, tokenizer): an open_clip ``CLIP`` with the tiny config, random weights, QuickGELU."""
    prepare_heavy_imports()
    import open_clip

    cfg = json.loads(json.dumps(TINY_CLIP_CFG))
    cfg["vision_cfg"]["image_size"] = image_size
    with seeded(seed):
        model = open_clip.CLIP(**cfg).eval()
    return model, open_clip.get_tokenizer("ViT-B-32")


def make_tiny_sam(seed: int = 0, **overrides):
    """A ``segment_anything.modeling.Sam`` with a tiny 256-px geometry and random weights."""
    prepare_heavy_imports()
    from .weights.sam_arch import build_sam

    with seeded(seed):
        return build_sam({**TINY_SAM_CFG, **overrides})


def write_tiny_sam(folder: str | Path, seed: int = 0) -> Path:
    """Write a ``local-dir:`` SAM folder (sam_config.json + sam.pth) with the tiny geometry."""
    from .weights.sam_arch import save_local_dir

    return save_local_dir(folder, make_tiny_sam(seed), TINY_SAM_CFG)


def run_cli(*args) -> tuple[int, str, str]:
    """Run ``napari-clipsam ARGS`` in this process: ``(exit code, stdout, stderr)`` (argparse exits included)."""
    import contextlib
    import io

    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def tiny_config(folder: str | Path, seed: int = 0, **overrides):
    """Write tiny CLIP and SAM folders under ``folder`` and return a ClipSAMConfig that loads them."""
    from .config import ClipSAMConfig

    folder = Path(folder)
    clip_dir = write_tiny_clip(folder / "clip", seed)
    sam_dir = write_tiny_sam(folder / "sam", seed)
    base = dict(clip_model=f"local-dir:{clip_dir}", clip_weights=None, image_size=56, feature_layers=(1, 2, 3, 4),
                sam_model=f"local-dir:{sam_dir}", device="cpu", backend="torch")
    base.update(overrides)
    return ClipSAMConfig(**base)


def tiny_engine(seed: int = 0, umci: bool = False, **config_overrides):
    """A ClipSAM engine on tiny in-memory models (optionally with a random UMCI)."""
    from .clip.umci import UMCI
    from .config import ClipSAMConfig
    from .engine.clipsam import ClipSAM

    clip, tok = make_tiny_clip(seed)
    sam = make_tiny_sam(seed)
    with seeded(seed):
        head = UMCI(64, 32, (1, 2, 3, 4), heads=4) if umci else None
    config_overrides.setdefault("backend", "torch")
    cfg = ClipSAMConfig(image_size=56, feature_layers=(1, 2, 3, 4), device="cpu", umci_heads=4,
                        **config_overrides)
    return ClipSAM.from_models(clip, tok, sam, head, cfg)
