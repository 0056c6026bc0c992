"""Checksummed downloads of the registry's model files with pooch: progress, cancellation, retries.

:func:`fetch` gives the verified local copy of a :class:`~.registry.WeightsFile` in a cache folder. pooch streams
the file into a temporary file, checks its SHA-256 against the registry, retries a dropped connection or a corrupt
transfer (:data:`RETRIES` times) and only then moves it into place, so a file under the registry's name is always
complete. pooch's temporary files live in a hidden staging folder ``.<file>.part`` next to the target, which a later
download of that file removes when a killed process left it. One process downloads a given file at a time (a
``filelock`` per file); the others wait, then find it in place.
"""
from __future__ import annotations

import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import filelock

from ..errors import Cancelled, DownloadError, WeightsUnavailableError
from ..io.verified import sha256_memoised
from .registry import CACHE_ENV, WeightsFile

Progress = Callable[[str, float], None]
CHUNK = 1 << 20
RETRIES = 2
"""How many times a failed transfer (dropped connection, server error, checksum mismatch) is tried again; pooch
waits 1 s, then 2 s, between attempts."""
TIMEOUT = 30.0
"""Seconds to wait for the server (to connect, or for the next bytes) before the attempt counts as failed."""


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
    digest = sha256_memoised(path)  # hashed once per version of the file (io/verified.py)
    if digest != spec.sha256:
        raise WeightsUnavailableError(
            f"{spec.name} weights file {path} has SHA-256 {digest}, expected {spec.sha256} (a partial or corrupt "
            f"download, or another file under that name). Delete it and download again. "
            + how_to_place(spec, path.parent))


def fetch(spec: WeightsFile, folder: Path, progress: Progress | None = None,
          cancelled: Callable[[], bool] | None = None) -> Path:
    """Return the verified local copy of ``spec`` in ``folder``, downloading it once if needed.

    A file already in place is verified, never replaced. ``progress(stage, fraction)`` is called as bytes arrive;
    ``cancelled()`` is polled between chunks (and while waiting for another process's download of the same file)
    and stops the download with :class:`~napari_clipsam.errors.Cancelled`, leaving no partial file.

    Raises:
        WeightsUnavailableError: the file in place or the downloaded one has another SHA-256, or the folder
            cannot be written; DownloadError (a WeightsUnavailableError) when the download fails. Each message
            names the URL, the SHA-256 and the exact path where to place the file by hand.
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
        # while holding the lock, what a download of this file left behind was left by one that died
        for stale in folder.glob(f".{spec.filename}*.part"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        return _download(spec, folder, target, _Transfer(spec, progress, cancelled))
    finally:
        lock.release()


def _download(spec: WeightsFile, folder: Path, target: Path, transfer: _Transfer) -> Path:
    """pooch downloads ``spec`` into the staging folder and checks it; the checked file is renamed to ``target``."""
    import pooch
    import requests

    staging = folder / f".{spec.filename}.part"
    files = pooch.create(path=staging, base_url="", registry={spec.filename: f"sha256:{spec.sha256}"},
                         urls={spec.filename: spec.url}, retry_if_failed=RETRIES)
    try:
        os.replace(files.fetch(spec.filename, downloader=transfer), target)
        return target
    except (requests.RequestException, OSError) as exc:
        if not transfer.received:
            raise DownloadError(
                f"Could not download {spec.name} weights ({spec.filename}) from {spec.url}: {exc}. It was not "
                f"found in {folder}. " + how_to_place(spec, folder)) from exc
        raise DownloadError(
            f"The download of {spec.name} weights from {spec.url} into {folder} failed after {transfer.received} of "
            f"{transfer.total or '?'} bytes ({type(exc).__name__}: {exc}); the partial file was discarded. Check the "
            "connection (and the free space there) and run again. " + how_to_place(spec, folder)) from exc
    except ValueError as exc:  # pooch: the SHA-256 of the downloaded file differs (on every attempt)
        raise WeightsUnavailableError(
            f"Downloaded {spec.name} weights from {spec.url} do not have the registry's SHA-256 {spec.sha256} "
            f"({exc}); the file was discarded. " + how_to_place(spec, folder)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Transfer:
    """The pooch downloader: pooch's own HTTP downloader (or its FTP/SFTP/DOI ones), or a chunked copy for
    ``file://`` URLs (mirrors, tests). It also stands as their progress bar (tqdm's ``total``/``update``/``reset``/
    ``close``), so that every chunk reports progress and checks for cancellation."""

    def __init__(self, spec: WeightsFile, progress: Progress | None, cancelled: Callable[[], bool] | None):
        self.spec, self.progress, self.cancelled = spec, progress, cancelled
        self.stage = f"downloading {spec.filename}"
        self.total = self.received = 0

    def __call__(self, url: str, output_file: str, pooch_files, check_only: bool = False) -> None:
        import pooch

        self.total = self.received = 0
        parts = urllib.parse.urlparse(url)
        scheme = parts.scheme
        if scheme == "file":
            self._copy(Path(urllib.request.url2pathname(parts.path)), output_file)
        else:
            if scheme in ("http", "https"):
                downloader = pooch.HTTPDownloader(progressbar=self, chunk_size=CHUNK, timeout=TIMEOUT)
            elif scheme in ("ftp", "sftp", "doi"):
                downloader = pooch.choose_downloader(url, progressbar=self)
            else:  # not a ValueError: pooch would retry it
                raise OSError(f"unsupported URL scheme {scheme!r}; use an http(s), ftp, sftp or file URL")
            downloader(url, output_file, pooch_files)
        with open(output_file, "rb") as f:  # on disk before pooch renames it into place
            os.fsync(f.fileno())

    def _copy(self, source: Path, output_file: str) -> None:
        self.total = source.stat().st_size
        with open(source, "rb") as src, open(output_file, "wb") as out:
            while block := src.read(CHUNK):
                out.write(block)
                self.update(len(block))

    # the progress bar pooch's downloaders drive
    def update(self, n: int) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled(f"download of {self.spec.filename} cancelled")
        self.received += n
        total = self.total or self.spec.size
        if self.progress is not None and total:
            self.progress(self.stage, min(1.0, self.received / total))

    def reset(self) -> None:
        self.received = 0

    def close(self) -> None:
        pass
