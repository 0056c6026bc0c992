"""``napari-clipsam report LABELS_FOLDER [--out FILE]``: one self-contained HTML page of a labels folder.

Lists the images worst first (highest image score first) with their thumbnail, mask overlay, score, review verdict
(``unreviewed`` without a review manifest), number of objects and classes, plus counts per verdict and class and a
histogram of scores. Every picture is embedded, so the file opens offline.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write an HTML report of a labels folder (worst images first)",
                              description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None)
    p.add_argument("folder", type=Path, metavar="LABELS_FOLDER",
                   help="the --out folder of `napari-clipsam segment` or of the folder review")
    p.add_argument("--out", type=Path, default=None,
                   help="HTML file to write (default: LABELS_FOLDER/clipsam_report.html)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..report import collect_rows, render_report
    from ..io.atomic import AtomicBatch

    out = args.out if args.out is not None else args.folder / "clipsam_report.html"
    if out.is_dir():
        from ..errors import PathKindError

        raise PathKindError(f"--out {out} is a folder; give the HTML file to write, e.g. {out / 'report.html'}.")
    rows = collect_rows(args.folder)
    html = render_report(args.folder, rows)
    with AtomicBatch() as batch:
        batch.stage(out, html.encode("utf-8"))
        batch.commit()
    print(f"report: {len(rows)} image(s) -> {out}")
    return 0
