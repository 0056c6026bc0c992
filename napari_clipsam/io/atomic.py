"""All-or-nothing file writes: one file with :func:`atomic_file`, several with :class:`AtomicBatch`.

Both write to a hidden, uniquely named temporary sibling (``.<name>.<8 hex>.tmp``: same directory, so the final
rename never crosses a file system, and two processes never share a temporary name), fsync it, and
:func:`os.replace` it into place; on any error the temporary file is removed and the target is untouched.
:func:`~napari_clipsam.export.locking.clean_stale_files` recognises those names when a crashed writer left one.

An export writes several files (a mask, a label TIFF, the shared COCO file, ...). They are written in two
phases by :class:`AtomicBatch`:

1. ``stage(path, data)`` writes each file's bytes to a temporary sibling and fsyncs it. Nothing visible
   changes yet.
2. ``commit()`` swaps every temporary file into place with :func:`os.replace`, keeping a backup of each
   file it replaces. If one swap fails, the files already swapped are restored from their backups (or
   removed, when they did not exist before), so the folder looks exactly as it did before the export.

Every batch failure is raised as :class:`ExportError` naming the file and the reason, and no temporary or
backup file is left behind. Should the rollback itself fail (the disk went away mid-export), the failure is
logged with its traceback and the :class:`ExportError` says which file could not be restored and where its
previous content was kept.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import ExportError

__all__ = ["ExportError", "AtomicBatch", "atomic_file"]
log = logging.getLogger(__name__)

#: Fault-injection point for crash tests: when set, called with each target just before its
#: :func:`os.replace` in :meth:`AtomicBatch.commit` (a test process sets it to ``os._exit`` at the n-th call).
before_replace = None


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unique name next to ``path``, e.g. ``masks/.000_mask.png.3f9a1c.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{tag}")


def _create(tmp: Path) -> BinaryIO:
    """Open a new file for writing; never clobbers anything (O_EXCL). Mode 0o666 lets the umask decide the
    permissions, as for any file the user creates (tempfile.mkstemp would make it owner-only)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write one file all-or-nothing: yields a binary file object; the content replaces ``path`` when the block
    ends without an error, and nothing changes (no temporary file left) when it raises::

        with atomic_file(folder / "settings.json") as f:
            f.write(text.encode())

    The parent folder is created if missing. Errors are the :class:`OSError` of the failing call (or whatever
    the block raised); callers decide whether a failed write is fatal.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        with _create(tmp) as f:
            yield f
            _sync(f)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk so a rename survives a crash (POSIX only; best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class AtomicBatch:
    """Stage several files, then put them all in place or none of them.

    Use as a context manager; leaving the block without :meth:`commit` (for instance on an
    exception) discards the staged files::

        with AtomicBatch() as batch:
            batch.stage(out / "a.png", png_bytes)
            batch.stage(out / "a.json", json_bytes)
            batch.commit()

    Directories that ``stage`` had to create are removed again when the batch is discarded or
    rolled back and they are still empty.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (target, temporary file)
        self._created_dirs: list[Path] = []
        self._done = False

    def __enter__(self) -> AtomicBatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.discard()

    @property
    def targets(self) -> list[Path]:
        """The final paths staged so far, in staging order."""
        return [target for target, _ in self._staged]

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir()
            self._created_dirs.append(d)

    def stage(self, target: str | os.PathLike, data: bytes) -> None:
        """Write ``data`` to a temporary file beside ``target`` and fsync it; ``target`` is untouched.

        Raises :class:`ExportError` (after discarding everything staged so far) if the directory
        cannot be created or the bytes cannot be written.
        """
        target = Path(target)
        if target in self.targets:
            raise ValueError(f"{target} is staged twice")
        tmp = _sibling(target, "tmp")
        try:
            self._make_dirs(target.parent)
            with _create(tmp) as f:
                f.write(data)
                _sync(f)
            self._staged.append((target, tmp))
        except BaseException as err:  # also Ctrl+C mid-write: no hidden temporary file is left behind
            _remove_quietly(tmp)
            self.discard()
            if isinstance(err, OSError):
                raise ExportError(f"could not write {target}: {err}") from err
            raise

    def commit(self) -> list[Path]:
        """Move every staged file into place; all of them or, on failure, none.

        Returns the final paths in staging order. On failure the files replaced so far are
        restored, the temporary files removed, and :class:`ExportError` names the file that failed.
        """
        replaced: list[tuple[Path, Path | None]] = []  # (target, backup of its previous content or None)
        try:
            for target, tmp in self._staged:
                backup = self._backup(target)
                if before_replace is not None:
                    before_replace(target)
                try:
                    os.replace(tmp, target)
                except OSError as err:
                    if backup is not None:  # target still holds its old content
                        _remove_quietly(backup)
                    raise ExportError(f"could not write {target}: {err}") from err
                replaced.append((target, backup))
        except ExportError as err:
            not_restored = self._rollback(replaced)
            self.discard()
            if not_restored:
                raise ExportError(f"{err}; the folder could NOT be restored as it was: "
                                  + "; ".join(not_restored)) from err
            raise
        for _, backup in replaced:
            if backup is not None:
                _remove_quietly(backup)
        for directory in {target.parent for target, _ in self._staged}:
            _fsync_dir(directory)
        self._done = True
        return self.targets

    def discard(self) -> None:
        """Remove all temporary files and the directories this batch created (if empty)."""
        for _, tmp in self._staged:
            _remove_quietly(tmp)
        self._staged.clear()
        for directory in reversed(self._created_dirs):
            try:
                directory.rmdir()
            except OSError:
                pass
        self._created_dirs.clear()
        self._done = True

    @staticmethod
    def _backup(target: Path) -> Path | None:
        """Keep the current content of ``target`` under a hidden name (a hard link when possible)."""
        if not target.exists():
            return None
        backup = _sibling(target, "bak")
        try:
            try:
                os.link(target, backup)
            except OSError:  # no hard links on this file system
                shutil.copy2(target, backup)
        except BaseException as err:  # an OSError, or Ctrl+C mid-copy
            _remove_quietly(backup)
            if isinstance(err, OSError):
                raise ExportError(f"could not back up {target} before replacing it: {err}") from err
            raise
        return backup

    @staticmethod
    def _rollback(replaced: list[tuple[Path, Path | None]]) -> list[str]:
        """Undo the replacements done so far, newest first. Returns what could not be undone (each failure is
        also logged with its traceback); the caller tells the user."""
        failures = []
        for target, backup in reversed(replaced):
            try:
                if backup is None:  # the file is new: remove it
                    target.unlink(missing_ok=True)
                else:
                    os.replace(backup, target)
            except OSError as err:
                what = (f"{target} holds the new content; its previous content is kept in {backup}"
                        if backup is not None else f"{target} was written and could not be removed")
                log.error("Export rollback failed: %s (%s)", what, err, exc_info=True)
                failures.append(f"{what} ({err}); restore it by hand")
        return failures
