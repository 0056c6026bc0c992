"""The Qt-free ClipSAM engine that scripts, the CLI, the tests and the widget all call the same way.

:class:`ClipSAM` (:mod:`.clipsam`) runs the method's stages (:mod:`napari_clipsam.clip`, :mod:`napari_clipsam.mmr`)
and returns a :class:`ClipSAMResult` (:mod:`.result`, a plain value). Around it: run stages and progress
(:mod:`.progress`), the per-image cache (:mod:`.cache`), identity and device (:mod:`.identity`), model loading
(:mod:`.loading`) and the encoders' runners, torch or OpenVINO (:mod:`.backends`).

Importing this package loads nothing heavy: ``ClipSAM`` (torch) loads on first use of the name, so the widget can
use :mod:`.progress` and :mod:`.backends` without torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_LAZY = {"ClipSAM": "napari_clipsam.engine.clipsam", "ClipSAMResult": "napari_clipsam.engine.result"}
__all__ = list(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .clipsam import ClipSAM
    from .result import ClipSAMResult


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_clipsam.engine' has no attribute {name!r}")
