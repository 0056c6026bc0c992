"""The napari plugin's dock widget (:class:`ClipSAMWidget`) and its parts.

``ClipSAMWidget`` is imported lazily, so the Qt-free helpers here (``labels_export``, ``settings``) can be used,
e.g. by napari's writer, without building any Qt class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ClipSAMWidget"]

if TYPE_CHECKING:  # pragma: no cover
    from .clipsam_widget import ClipSAMWidget


def __getattr__(name: str):
    if name == "ClipSAMWidget":
        from .clipsam_widget import ClipSAMWidget

        return ClipSAMWidget
    raise AttributeError(f"module 'napari_clipsam.widget' has no attribute {name!r}")
