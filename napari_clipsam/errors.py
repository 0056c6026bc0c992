"""Exceptions a user of napari-clipsam can act on.

Everything a person can fix (a setting, an argument, an image, a file, a download) is raised as a subclass of
:class:`ClipSAMUserError`, whose message says what was wrong, with which input, and what to do. The command line
prints such an error as one line and exits with code 2; any other exception is a bug and keeps its traceback
(exit code 1). Each class also derives from the built-in exception callers already expect (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` around the engine keeps working::

    ClipSAMUserError
    ├── InvalidInputError (ValueError)          an argument, image or prompt that is not accepted
    │   ├── ConfigError                         a ClipSAMConfig field (names the field, value, what is accepted)
    │   ├── IncompatibleCheckpointError         a UMCI checkpoint made for another CLIP or prompt set
    │   └── EngineMismatchError                 a result refined by an engine other than the one that made it
    ├── InputFileError (OSError)                a file or folder that is unusable (empty, malformed, wrong kind)
    │   ├── MissingFileError (FileNotFoundError)
    │   ├── OutputExistsError (FileExistsError)  an output that would be overwritten without the overwrite option
    │   └── PathKindError (IsADirectoryError, NotADirectoryError)   a folder given for a file, or back
    ├── ExportError (RuntimeError)              labels that cannot be exported, or output files that cannot be written
    ├── WeightsUnavailableError (RuntimeError)  model weights that cannot be found, downloaded or verified
    │   └── DownloadError                       a download that failed (names the URL and how to place the file)
    └── TrainingDivergedError (FloatingPointError)
"""
from __future__ import annotations


class ClipSAMUserError(Exception):
    """Base of every error a user can act on (bad setting, argument, image, file or unavailable weights)."""


class InvalidInputError(ClipSAMUserError, ValueError):
    """A value given to the engine, the exporters or the command line is not accepted."""


class ConfigError(InvalidInputError):
    """A :class:`~napari_clipsam.config.ClipSAMConfig` field has a wrong type or is out of range."""


class IncompatibleCheckpointError(InvalidInputError):
    """A UMCI checkpoint was made for a different CLIP model, layer set or prompt set."""


class EngineMismatchError(InvalidInputError):
    """A result was made by another SAM model (or precision) than the engine asked to refine it."""


class InputFileError(ClipSAMUserError, OSError):
    """A file or folder given by the user cannot be used; the message names it and says what to do."""


class MissingFileError(InputFileError, FileNotFoundError):
    """A file or folder given by the user does not exist."""


class OutputExistsError(InputFileError, FileExistsError):
    """An output file already exists and would be overwritten without the overwrite option."""


class PathKindError(InputFileError, IsADirectoryError, NotADirectoryError):
    """A folder was given where a file is expected, or a file where a folder is expected."""


class ExportError(ClipSAMUserError, RuntimeError):
    """An export could not be done; the message says which input or file and why.

    Raised before anything is written when the input is invalid, or after rolling back when a
    file could not be written (:class:`~napari_clipsam.io.atomic.AtomicBatch`).
    """


class WeightsUnavailableError(ClipSAMUserError, RuntimeError):
    """Model weights could not be found, downloaded or verified.

    The message names the file, where it was looked for, the download URL and how to place the
    file by hand (for offline machines).
    """


class DownloadError(WeightsUnavailableError):
    """A download failed (no connection, timeout, dropped connection, bad checksum); names the URL."""


class TrainingDivergedError(ClipSAMUserError, FloatingPointError):
    """UMCI training produced a non-finite loss (lower the learning rate)."""


class ClusterError(ClipSAMUserError, RuntimeError):
    """``--ray``: Ray is not installed, the cluster cannot be reached, or it cannot host the engine actors
    (the message says which, and what to do)."""


class Cancelled(Exception):
    """Raised inside long work when the caller's ``cancelled()`` callback returned True."""


def require_file(path, what: str, hint: str = "") -> None:
    """Raise :class:`MissingFileError` or :class:`PathKindError` unless ``path`` is an existing file.

    ``what`` describes the file ("UMCI checkpoint", "config file"); ``hint`` says what to do.
    """
    from pathlib import Path

    p = Path(path)
    tail = f" {hint}" if hint else ""
    if p.is_dir():
        raise PathKindError(f"{what} {p} is a folder; give the file itself.{tail}")
    if not p.is_file():
        raise MissingFileError(f"{what} {p} does not exist.{tail}")


def error_gist(exc: BaseException, limit: int = 160) -> str:
    """The gist of a loader's error for a message: its first line without terminal colour codes, at most ``limit``
    characters. torch's unpickling errors run to a page of ``weights_only`` advice (re-running unsafely among it)
    with the file's contents quoted: they become one line saying what was found."""
    import pickle
    import re

    if isinstance(exc, pickle.UnpicklingError):
        return ("PyTorch found no checkpoint it can load safely: not the archive torch.save writes, or one "
                "holding objects other than tensors and plain data")
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    line = " ".join(lines[:2]) if lines and lines[0].endswith(":") else lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"  # ("Error(s) in loading …:" + its first)
