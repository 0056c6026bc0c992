"""napari-clipsam: ClipSAM zero-shot anomaly segmentation (CLIP + SAM) for semi-automatic defect labelling.

Heavy libraries (torch, open_clip, segment_anything, napari) load lazily, on first use of a name below.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ._version import __version__

_LAZY = {
    "ClipSAMConfig": "napari_clipsam.config",
    "ClipSAM": "napari_clipsam.engine",
    "ClipSAMResult": "napari_clipsam.engine",
    "WeightsUnavailableError": "napari_clipsam.errors",
    "Cancelled": "napari_clipsam.errors",
    "IncompatibleCheckpointError": "napari_clipsam.errors",
    "ClipSAMWidget": "napari_clipsam.widget",
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from .config import ClipSAMConfig
    from .errors import Cancelled, IncompatibleCheckpointError, WeightsUnavailableError
    from .engine import ClipSAM, ClipSAMResult
    from .widget import ClipSAMWidget


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_clipsam' has no attribute {name!r}")
