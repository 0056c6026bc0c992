"""One inter-process lock per output folder, and the clean-up of what crashed writers left behind.

Every writer of an output folder (the exporter, the COCO merge, the QA manifest) holds
:func:`folder_lock` while it reads the shared files (``coco/annotations.json``, ``yolo/data.yaml``,
``clipsam_manifest.json``), merges its change in and writes them atomically, so two processes writing the
same folder never lose each other's updates. The lock is a ``filelock`` lock on ``<folder>/.clipsam.lock``
(an OS lock: released by the kernel when its holder dies). It is re-entrant within a thread.

Because all writers hold the lock while they write, any hidden temporary (``.<name>.<hex>.tmp``) or backup
(``.<name>.<hex>.bak``, see :mod:`napari_clipsam.io.atomic`) file found while holding it was left by a crashed writer:
:func:`clean_stale_files` removes them.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import filelock

from ..errors import ExportError

__all__ = ["LOCK_NAME", "LOCK_TIMEOUT", "folder_lock", "clean_stale_files"]

LOCK_NAME = ".clipsam.lock"
LOCK_TIMEOUT = 600.0  # seconds; a writer holds the lock for one image's export or one merge
_STALE = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|bak)$")


@contextmanager
def folder_lock(folder: str | os.PathLike, timeout: float = LOCK_TIMEOUT):
    """Hold the output folder's inter-process lock (the folder is created if missing).

    Raises:
        ExportError: the folder cannot be created, or another process held the lock for ``timeout`` s.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the output folder {folder}: {err}") from err
    # one instance per path (re-entrant in a thread: the exporter merges COCO while holding the lock)
    lock = filelock.FileLock(folder / LOCK_NAME, timeout=timeout, is_singleton=True)
    try:
        lock.acquire()
    except filelock.Timeout as err:
        raise ExportError(
            f"another process has been writing to {folder} for more than {timeout:.0f} s (lock file "
            f"{folder / LOCK_NAME}); wait for it to finish, or choose another output folder"
        ) from err
    except OSError as err:
        raise ExportError(f"cannot lock the output folder {folder} ({folder / LOCK_NAME}): {err}") from err
    try:
        yield folder
    finally:
        lock.release()


def clean_stale_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the hidden ``.tmp``/``.bak`` files that crashed writers left anywhere under ``folder``.

    Takes the folder lock, so no live writer's files are touched. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    with folder_lock(folder):
        for root, _, names in os.walk(folder):
            for name in names:
                if _STALE.match(name):
                    path = Path(root) / name
                    try:
                        path.unlink()
                        removed.append(path)
                    except FileNotFoundError:
                        pass
    return removed
