"""The QA manifest: each image's verdict, kept in the output folder so a session can resume.

Two files in the output folder, always written together and atomically (both or neither, see
:class:`~napari_clipsam.io.atomic.AtomicBatch`: temporary sibling, fsync, :func:`os.replace`):

``clipsam_manifest.json`` (the record)::

    {
      "format": "napari-clipsam/qa-manifest",
      "version": 1,
      "input_dir": "/data/plates",                  # absolute, posix
      "images": {
        "sub/img2.png": {                           # path relative to input_dir, posix
          "verdict": "accepted",                    # accepted | rejected | skipped
          "time": "2024-05-01T12:00:00+00:00",      # UTC, when the verdict was given
          "stem": "sub__img2",                      # the export stem (file names in the output folder)
          "outputs": ["masks/sub__img2_mask.png", ...],   # relative to the output folder
          "n_instances": 2,                         # null unless accepted
          "edited": true,                           # the user corrected the pseudo-labels
          "note": "",
          "n_verified": 2                           # instances a person verified (all, on Accept); null unless accepted
        }
      }
    }

``clipsam_manifest.csv``: the same entries, one row per image, for spreadsheet users (a view; the JSON is
what is read back).

Several review sessions (processes) may write one output folder: each verdict is merged into the manifest
on disk under the folder's lock (:func:`~napari_clipsam.export.locking.folder_lock`), never overwriting
the other sessions' verdicts.

A manifest that cannot be read as ours is never overwritten: :meth:`Manifest.open` moves it aside to
``clipsam_manifest.json.corrupt-<UTC timestamp>`` and starts an empty one, with a logged warning.
Nothing here imports torch or Qt.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from ..errors import InputFileError, PathKindError
from ..io.atomic import AtomicBatch
from ..export.locking import folder_lock

__all__ = ["MANIFEST_NAME", "CSV_NAME", "FORMAT", "VERSION", "Verdict", "Entry", "Manifest", "read_csv", "utc_now"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "clipsam_manifest.json"
CSV_NAME = "clipsam_manifest.csv"
FORMAT = "napari-clipsam/qa-manifest"
VERSION = 1
CSV_COLUMNS = ("image", "verdict", "time", "stem", "n_instances", "edited", "note", "outputs", "n_verified")


class Verdict(str, Enum):
    """What the user decided about one image."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SKIPPED = "skipped"


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second, e.g. ``2024-05-01T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Entry:
    """One image's verdict.

    Attributes:
        verdict: the decision.
        time: when it was given (UTC ISO 8601).
        stem: the export stem of the image (names its files in the output folder).
        outputs: label files of this image in the output folder (relative posix paths), as written by the
            last Accept; a later Reject or Skip keeps the list, because those files are left on disk.
        n_instances: number of instances accepted; None unless accepted.
        edited: whether the user corrected the engine's pseudo-labels before accepting.
        note: free text (e.g. why an image was rejected).
        n_verified: instances a person verified among those accepted (an Accept verifies all of them; the rest of
            an export are ClipSAM's pseudo-labels); None unless accepted.
    """

    verdict: Verdict
    time: str
    stem: str
    outputs: list[str] = dataclasses.field(default_factory=list)
    n_instances: int | None = None
    edited: bool = False
    note: str = ""
    n_verified: int | None = None

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "verdict": self.verdict.value}

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        """Parse one entry; raises ValueError/TypeError/KeyError on a malformed one."""
        n = data.get("n_instances")
        outputs = data.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise ValueError(f"outputs must be a list of paths, got {outputs!r}")
        return cls(verdict=Verdict(data["verdict"]), time=str(data["time"]), stem=str(data["stem"]),
                   outputs=list(outputs), n_instances=None if n is None else int(n),
                   edited=bool(data.get("edited", False)), note=str(data.get("note", "")),
                   n_verified=None if data.get("n_verified") is None else int(data["n_verified"]))


class Manifest:
    """The verdicts of one output folder. Keys are image paths relative to the input folder (posix).

    Open with :meth:`open`; change with :meth:`set` (which saves at once).
    """

    def __init__(self, output_dir: Path, input_dir: Path, entries: dict[str, Entry] | None = None,
                 moved_aside: Path | None = None):
        self.output_dir = Path(output_dir)
        self.input_dir = Path(input_dir)
        self.entries: dict[str, Entry] = dict(entries or {})
        #: where an unreadable manifest found at open was moved to (None when there was none)
        self.moved_aside = moved_aside

    @property
    def path(self) -> Path:
        return self.output_dir / MANIFEST_NAME

    @property
    def csv_path(self) -> Path:
        return self.output_dir / CSV_NAME

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, output_dir: str | os.PathLike, input_dir: str | os.PathLike) -> Manifest:
        """The manifest of ``output_dir`` (empty when there is none yet).

        Raises:
            ValueError: the manifest belongs to another input folder, or was written by a newer version.
            InputFileError (an OSError): the manifest is a folder (:class:`PathKindError`) or cannot be read.
        """
        output_dir, input_dir = Path(output_dir), Path(input_dir)
        path = output_dir / MANIFEST_NAME
        if not path.exists():
            return cls(output_dir, input_dir)
        if path.is_dir():
            raise PathKindError(f"The review's manifest {path} is a folder, so the verdicts cannot be kept there. "
                                f"Rename or move that folder away (the review then starts a {MANIFEST_NAME} file), "
                                "or choose another output folder.")
        try:
            text = path.read_bytes()  # an unreadable file (permissions) is an error, not corruption
        except OSError as err:
            raise InputFileError(f"Cannot read the review's manifest {path} ({err.strerror or err}); give yourself "
                                 "read and write access to it, or choose another output folder.") from err
        try:
            data = json.loads(text.decode("utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a napari-clipsam QA manifest (format marker {FORMAT!r} missing)")
            version = data.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"version must be a positive integer, got {version!r}")
        except (UnicodeDecodeError, ValueError) as err:
            return cls(output_dir, input_dir, moved_aside=_move_aside(path, err))
        if version > VERSION:
            raise ValueError(
                f"The QA manifest {path} was written by a newer napari-clipsam (manifest version {version}; this "
                f"version reads up to {VERSION}). Update napari-clipsam, or choose another output folder."
            )
        try:
            stored_input = data["input_dir"]
            if not isinstance(stored_input, str) or not stored_input:
                raise ValueError(f"input_dir must be a folder path, got {stored_input!r}")
            images = data["images"]
            if not isinstance(images, dict):
                raise ValueError(f"images must be an object, got {type(images).__name__}")
            entries = {str(k): Entry.from_json(v) for k, v in images.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            return cls(output_dir, input_dir, moved_aside=_move_aside(path, err))
        if not _same_folder(stored_input, input_dir):
            raise ValueError(
                f"The output folder {output_dir} already holds the QA manifest of another input folder "
                f"({stored_input}), not {input_dir}. Choose another output folder for {input_dir} (or reopen "
                f"{stored_input} to continue that review)."
            )
        return cls(output_dir, input_dir, entries)

    # ------------------------------------------------------------------ writing
    def set(self, key: str, entry: Entry) -> None:
        """Record ``entry`` for image ``key`` and save; on a failed save the previous state is kept.

        Under the output folder's inter-process lock the manifest on disk is read again and this one entry
        merged into it, so two sessions reviewing the same folder keep each other's verdicts (the other
        entries are taken from the disk, this object's view is refreshed with them).

        Raises:
            ExportError: the manifest could not be written (the files on disk are as before).
        """
        with folder_lock(self.output_dir):
            previous = dict(self.entries)
            if self.path.exists():
                self.entries = dict(Manifest.open(self.output_dir, self.input_dir).entries)
            self.entries[key] = entry
            try:
                self.save()
            except BaseException:
                self.entries = previous
                raise

    def save(self) -> None:
        """Write the JSON and the CSV view atomically, both or neither."""
        with AtomicBatch() as batch:
            batch.stage(self.path, self.to_json_bytes())
            batch.stage(self.csv_path, self.to_csv_bytes())
            batch.commit()

    def to_json_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "input_dir": self.input_dir.as_posix(),
            "images": {key: entry.to_json() for key, entry in self.entries.items()},
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def to_csv_bytes(self) -> bytes:
        """UTF-8 with a byte-order mark so spreadsheet programs detect the encoding; outputs joined by ``;``.
        Text cells that a spreadsheet would run as a formula are escaped (:func:`spreadsheet_text`)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a note holding \r or \n is then quoted
        writer.writerow(CSV_COLUMNS)
        for key, e in self.entries.items():
            writer.writerow([spreadsheet_text(key), e.verdict.value, e.time, spreadsheet_text(e.stem),
                             "" if e.n_instances is None else e.n_instances, str(e.edited).lower(),
                             spreadsheet_text(e.note), spreadsheet_text(";".join(e.outputs)),
                             "" if e.n_verified is None else e.n_verified])
        return buf.getvalue().encode("utf-8-sig")


def spreadsheet_text(text) -> str:
    """``text`` made safe for a spreadsheet cell: one starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return (which Excel/LibreOffice run as a formula: "formula injection") gets a leading ``'``, shown as text."""
    text = "" if text is None else str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a manifest CSV as dicts (column → text); for tests and scripts."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _same_folder(stored: str, current: Path) -> bool:
    if Path(stored) == current:
        return True
    try:
        return os.path.samefile(stored, current)
    except OSError:  # the stored folder no longer exists
        return False


def _move_aside(path: Path, err: Exception) -> Path:
    """Rename an unreadable manifest to ``<name>.corrupt-<UTC timestamp>`` (never overwriting) and warn."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    log.warning("The QA manifest %s could not be read (%s); it was moved to %s and a new one is started. "
                "Nothing was deleted: inspect or restore that file by hand.", path, err, target)
    return target
