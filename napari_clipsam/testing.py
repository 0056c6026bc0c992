"""Tiny random-initialised models built with the real open_clip and segment_anything classes.

For tests, examples and the README screenshot: they load through exactly the same code paths as real
weights (``local-dir:`` folders read by :meth:`ClipSAM.from_config`) and run in milliseconds on a CPU.
:func:`tiny_config` and :func:`tiny_engine` choose ``backend="torch"`` unless told otherwise: converting even a
tiny encoder to OpenVINO takes seconds, more than it saves (``tests/test_backends.py`` covers OpenVINO).
"""
from __future__ import annotations

from pathlib import Path

from .weights.tiny import (TINY_CLIP_CFG, TINY_CLIP_NAME, TINY_SAM_CFG, make_tiny_clip, make_tiny_sam,  # noqa: F401
                           seeded, write_tiny_clip, write_tiny_sam)


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
