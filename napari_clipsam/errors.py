"""Exceptions a user of napari-clipsam can act on."""
from __future__ import annotations


class WeightsUnavailableError(RuntimeError):
    """Model weights could not be found, downloaded or verified.

    The message names the file, where it was looked for, the download URL and how to place the
    file by hand (for offline machines).
    """


class Cancelled(Exception):
    """Raised inside long work when the caller's ``cancelled()`` callback returned True."""


class IncompatibleCheckpointError(ValueError):
    """A UMCI checkpoint was made for a different CLIP model, layer set or prompt set."""
