"""The ``napari-clipsam`` command line: ``segment``, ``train``, ``eval``, ``weights``, ``bench``, ``report`` and
``demo``.

Every subcommand module has ``add_parser(subparsers)`` (which sets ``func``) and ``run(args) -> int``;
:func:`main` parses, runs the chosen one through :func:`.common.run_guarded` and returns its exit code
(0 ok, 1 some items failed, 2 bad input or unavailable weights, 130 interrupted).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from .._version import __version__
from . import bench, demo, evaluate, report, segment, train, weights
from .common import run_guarded

SUBCOMMANDS = (segment, train, evaluate, weights, bench, report, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-clipsam",
        description="ClipSAM zero-shot anomaly segmentation (CLIP rough map -> SAM prompts -> refined masks) "
                    "from the command line: pseudo-label image folders, train and evaluate the UMCI head, "
                    "manage model weights, benchmark.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors (debugging)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:  # --traceback also after the subcommand, where one adds it to a failing command
        module.add_parser(sub).add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                                            help="show the full traceback of errors (debugging)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    return run_guarded(args.func, args)
