"""Verified or pseudo, per instance: which objects a person checked and which are ClipSAM's unreviewed output.

An instance is *verified* when a person vouched for it: the image was accepted in a folder review, or in the dock
the object was locked or its pixels were painted, erased or filled by hand. Every other instance is a *pseudo*
label. Each export writes the flag per instance (keys documented in docs/export-formats.md):

* COCO: ``"clipsam_verified": true/false`` in every annotation (pycocotools keeps unknown keys and ignores them);
* label TIFF sidecar ``labels/<stem>.json``: ``"verified": {"<id>": true/false}``;
* provenance ``provenance/<stem>.json`` (YOLO's sidecar: its label lines follow the ids ascending):
  ``"verified": {"<id>": ...}``, ``"yolo_line_ids"`` and the counts ``"n_verified"`` / ``"n_pseudo"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import ExportError

__all__ = ["COCO_VERIFIED_KEY", "resolve_verified"]

COCO_VERIFIED_KEY = "clipsam_verified"


def resolve_verified(ids: list[int], verified) -> dict[int, bool]:
    """``{id: verified}`` for every present id from ``None`` (none verified), one bool (all or none) or a mapping
    ``{id: bool}`` (ids missing from it are pseudo labels; ids not present are ignored)."""
    if verified is None:
        return dict.fromkeys(ids, False)
    if isinstance(verified, (bool, np.bool_)):
        return dict.fromkeys(ids, bool(verified))
    if not isinstance(verified, Mapping):
        raise ExportError(f"verified must be True, False or a mapping instance id -> bool, got "
                          f"{type(verified).__name__}")
    given: dict[int, bool] = {}
    for key, flag in verified.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise ExportError(f"verified keys must be integer instance ids, got {key!r}")
        if not isinstance(flag, (bool, np.bool_)):
            raise ExportError(f"verified[{key!r}] must be True or False, got {flag!r}")
        given[int(key)] = bool(flag)
    return {i: given.get(i, False) for i in ids}
