"""Provenance files ``provenance/<stem>.json``: who/what/when produced an image's exported files.

The file holds ``{"stem", "image_file", "exports": [record, ...]}``; a new record is appended per export that
wrote something, and older records are dropped once every format they wrote has been written again.
Also converts engine information (numpy scalars, small arrays, paths, enums, dates, dataclasses) to JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import Path, PurePath

import numpy as np

from ..io import strict_json
from ..errors import ExportError

__all__ = ["PROVENANCE_DIR", "provenance_path", "jsonable", "encode_provenance", "read_provenance", "package_version"]

PROVENANCE_DIR = "provenance"
MAX_PROVENANCE_ARRAY = 1024  # elements; larger arrays (e.g. a whole anomaly map) do not belong in provenance


def provenance_path(out_dir: Path, stem: str) -> Path:
    """``out_dir/provenance/<stem>.json``."""
    return Path(out_dir) / PROVENANCE_DIR / f"{stem}.json"


def jsonable(value, where: str):
    """``value`` converted to plain JSON types; ExportError naming the offending entry otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size > MAX_PROVENANCE_ARRAY:
            raise ExportError(f"{where}: array of shape {value.shape} is too large for provenance; store a summary")
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value, where)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ExportError(f"{where}: key {key!r} cannot be a JSON key; use strings")
            out[str(key)] = jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(items)]
    raise ExportError(
        f"{where}: cannot store a {type(value).__name__} in JSON; convert it to numbers, strings, lists or dicts"
    )


def package_version() -> str:
    from .._version import __version__

    return __version__


def read_provenance(path: Path) -> list[dict]:
    """The export records of a provenance file, oldest first (empty when the file does not exist).

    Raises :class:`ExportError` when the file exists but cannot be read as a provenance file.
    """
    if not path.exists():
        return []
    try:
        history = json.loads(path.read_text(encoding="utf-8"))["exports"]
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise TypeError("'exports' must be a list of records")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"cannot read the existing provenance file {path}: {err}; fix it or move it away") from err
    return history


def encode_provenance(path: Path, stem: str, image_file: str | None, record: dict) -> bytes:
    """The provenance file with ``record`` appended to the records still describing existing files."""
    history = read_provenance(path)
    kept, covered = [], set(record["formats"])
    for old in reversed(history):  # newest first: keep a record while it is the latest for some format
        formats = set(old.get("formats", []))
        if formats - covered:
            kept.append(old)
            covered |= formats
    exports = list(reversed(kept)) + [record]
    provenance = {"stem": stem, "image_file": image_file, "exports": exports}
    return (strict_json.dumps(provenance, indent=2, ensure_ascii=False) + "\n").encode("utf-8")  # no NaN tokens
