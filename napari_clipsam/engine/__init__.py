"""The Qt-free ClipSAM engine that scripts, the CLI, the tests and the widget all call the same way.

:class:`ClipSAM` (:mod:`.clipsam`) runs the method's stages (:mod:`napari_clipsam.clip`, :mod:`napari_clipsam.mmr`)
and returns a :class:`ClipSAMResult` (:mod:`.result`, a plain value). Around it: run stages and progress
(:mod:`.progress`), the per-image cache (:mod:`.cache`), identity and device (:mod:`.identity`), model loading
(:mod:`.loading`) and the encoders' runners, torch or OpenVINO (:mod:`.backends`). Importing this package loads torch.
"""
from .clipsam import ClipSAM
from .result import ClipSAMResult

__all__ = ["ClipSAM", "ClipSAMResult"]
