"""Visual QA of a folder, Qt-free: walk the images, accept / reject / skip, resume later, prefetch the next.

* :class:`QASession` — the images of an input folder, the current position, verdicts and exports
  (:mod:`.session`).
* :class:`Verdict` and the manifest file kept in the output folder (:mod:`.manifest`).
* :class:`Prefetcher` — segments the next image in a background thread to warm the engine's caches
  (:mod:`.prefetch`).

The napari widget, the CLI and scripts all drive these the same way; nothing here imports Qt, napari or torch.
"""
from __future__ import annotations

from ..io.folders import DEFAULT_EXTENSIONS
from .manifest import CSV_NAME, MANIFEST_NAME, Entry, Manifest, Verdict
from .prefetch import Prefetcher
from .session import QASession

__all__ = [
    "CSV_NAME",
    "DEFAULT_EXTENSIONS",
    "MANIFEST_NAME",
    "Entry",
    "Manifest",
    "Prefetcher",
    "QASession",
    "Verdict",
]
