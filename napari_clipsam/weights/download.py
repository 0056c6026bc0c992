"""Checksummed, atomic, resumable-safe downloads with progress reporting."""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import filelock

from ..errors import Cancelled, DownloadError, WeightsUnavailableError
from .registry import CACHE_ENV, WeightsFile

Progress = Callable[[str, float], None]
CHUNK = 1 << 20


def sha256_of(path: Path, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def how_to_place(spec: WeightsFile, folder: Path) -> str:
    return (f"To install it by hand, download {spec.url} on a machine with internet access, check that its "
            f"SHA-256 is {spec.sha256}, and copy it to {folder / spec.filename} (set {CACHE_ENV} to use another "
            "folder), or pass its path as the weights setting.")


def verify(path: Path, spec: WeightsFile) -> None:
    """Raise WeightsUnavailableError when ``path`` is missing or its SHA-256 differs from ``spec``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"{spec.name} weights file {path} does not exist. "
                                      + how_to_place(spec, path.parent))
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise WeightsUnavailableError(
            f"{spec.name} weights file {path} has SHA-256 {digest}, expected {spec.sha256} (a partial or corrupt "
            f"download, or another file under that name). Delete it and download again. "
            + how_to_place(spec, path.parent))


def fetch(spec: WeightsFile, folder: Path, progress: Progress | None = None,
          cancelled: Callable[[], bool] | None = None, opener=urllib.request.urlopen) -> Path:
    """Return the verified local copy of ``spec`` in ``folder``, downloading it once if needed.

    The download goes to a temporary file in the same folder, is verified, then renamed into place, so an
    interrupted or corrupt download never leaves a file that looks complete. ``progress(stage, fraction)``
    is called as bytes arrive; ``cancelled()`` is polled between chunks.
    """
    folder = Path(folder)
    target = folder / spec.filename
    if target.is_file():
        verify(target, spec)
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailableError(f"Cannot create the weights folder {folder}: {exc}. "
                                      + how_to_place(spec, folder)) from exc
    # One download of a file at a time (other processes wait, then find it in place). While holding the lock,
    # any ".part" of this file was left by a download that died: remove it (it cannot be resumed safely).
    lock = filelock.FileLock(folder / f".{spec.filename}.lock")
    while True:
        try:
            lock.acquire(timeout=1.0)
            break
        except filelock.Timeout:
            if cancelled is not None and cancelled():
                raise Cancelled(f"download of {spec.filename} cancelled") from None
        except OSError as exc:
            raise WeightsUnavailableError(f"Cannot write in the weights folder {folder}: {exc}. "
                                          + how_to_place(spec, folder)) from exc
    try:
        if target.is_file():
            verify(target, spec)
            return target
        for stale in folder.glob(f".{spec.filename}.*.part"):
            stale.unlink(missing_ok=True)
        return _download(spec, folder, target, progress, cancelled, opener)
    finally:
        lock.release()


def _download(spec: WeightsFile, folder: Path, target: Path, progress, cancelled, opener) -> Path:
    """Download ``spec`` to a ``.part`` file in ``folder``, verify it, rename it to ``target``."""
    stage = f"downloading {spec.filename}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                response = opener(spec.url, timeout=30)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                raise DownloadError(
                    f"Could not download {spec.name} weights ({spec.filename}) from {spec.url}: {exc}. It was not "
                    f"found in {folder}. " + how_to_place(spec, folder)) from exc
            with response:
                total = int(response.headers.get("Content-Length") or spec.size or 0)
                done = 0
                try:
                    while block := response.read(CHUNK):
                        if cancelled is not None and cancelled():
                            raise Cancelled(f"download of {spec.filename} cancelled")
                        out.write(block)
                        h.update(block)
                        done += len(block)
                        if progress is not None and total:
                            progress(stage, min(1.0, done / total))
                except (http.client.HTTPException, OSError) as exc:  # reset, timeout, IncompleteRead, disk full
                    raise DownloadError(
                        f"The download of {spec.name} weights from {spec.url} into {folder} failed after {done} of "
                        f"{total or '?'} bytes ({type(exc).__name__}: {exc}); the partial file was discarded. "
                        "Check the connection (and the free space there) and run again. "
                        + how_to_place(spec, folder)) from exc
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != spec.sha256:
            raise WeightsUnavailableError(
                f"Downloaded {spec.name} weights from {spec.url} have SHA-256 {h.hexdigest()}, expected "
                f"{spec.sha256}; the file was discarded. " + how_to_place(spec, folder))
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
