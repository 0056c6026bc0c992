"""A self-contained HTML report of a labels folder (``napari-clipsam report``): images worst first.

Reads what ``napari-clipsam segment`` or the folder review wrote (``provenance/<stem>.json``, ``labels/<stem>.tif``
or ``masks/<stem>_mask.png``, and the review manifest ``clipsam_manifest.json`` when present) and renders one HTML
file with every picture embedded as a base64 PNG data URI, so it opens offline. Qt-free.
"""
from __future__ import annotations

from .collect import ImageRow, collect_rows
from .render import render_report, write_report

__all__ = ["ImageRow", "collect_rows", "render_report", "write_report"]
