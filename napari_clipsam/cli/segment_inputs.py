"""Which images a ``segment`` run reads: inputs (folders, files, globs) to images with unique keys and stems, the
normal references, and outputs already labelled for another object. Used by the job plan (:mod:`.segment_job`)."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from ..errors import InvalidInputError, MissingFileError, PathKindError
from .common import split_list


def collect_images(inputs: list[str], extensions, recursive: bool, exclude: Path | None = None) -> dict[Path, str]:
    """The image files named by ``inputs`` (files, folders, globs) → their keys, in order, without duplicates.

    A key is the file's path relative to the folder it was found from: the input folder, or the fixed leading
    folders of a glob (``plates/**/*.png`` → relative to ``plates``); a file named directly is keyed by its name.
    So ``segment plates --recursive`` and ``segment 'plates/**/*.png'`` give the same export stems.

    Raises FileNotFoundError naming an input that does not exist or a pattern that matches nothing, and
    ValueError when nothing at all was found.
    """
    from ..io.folders import find_images, normalise_extensions

    exts = normalise_extensions(extensions)
    found: dict[Path, str] = {}
    taken: set[str] = set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            folder = path.resolve()
            for f in find_images(folder, exts, recursive, exclude=exclude):
                _add(found, taken, f, f.relative_to(folder).as_posix())
        elif path.is_file():
            _add(found, taken, path.resolve(), path.name)
        elif glob.has_magic(item):
            parts = path.parts
            fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            root = Path(os.path.abspath(Path(*parts[:fixed]) if fixed else "."))
            matches = [Path(os.path.abspath(m)) for m in sorted(glob.glob(str(path), recursive=True))]
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in exts
                       and not (exclude is not None and m.resolve().is_relative_to(exclude))]
            if not matches:
                raise MissingFileError(f"No image file matches {item!r} (suffixes {', '.join(exts)}).")
            for m in matches:
                _add(found, taken, m.resolve(), m.relative_to(root).as_posix())
        else:
            raise MissingFileError(f"Input {item} does not exist; give image files, folders or glob patterns.")
    if not found:
        hint = "" if recursive else " (sub-folders were not searched; add --recursive)"
        raise InvalidInputError(f"No images found in {', '.join(map(str, inputs))}{hint}: looked for "
                                f"{', '.join(exts)} files.")
    return found


def normal_images(folder: Path, extensions) -> list[Path]:
    """The image files directly in ``--normal FOLDER``; a clear error when it is not a folder or holds none.

    A folder review's labels folder (holding ``clipsam_manifest.json``) gives the images accepted there as good
    parts (defect-free), read from the review's input folder."""
    from ..io.folders import find_images, normalise_extensions

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise PathKindError(f"--normal {folder} is not a folder; give a folder of defect-free images.")
    from ..data.review_labels import accepted_good_images, is_review_folder

    if is_review_folder(folder):
        good = accepted_good_images(folder)
        if not good:
            raise InvalidInputError(f"--normal {folder} is a review's labels folder with no image accepted as a good "
                                    "part (Good → reference, or Accept with no object); accept a few defect-free "
                                    "images there first, or give a folder of defect-free images.")
        return good
    exts = normalise_extensions(split_list(extensions) or [])
    files = find_images(folder.resolve(), exts, False)
    if not files:
        raise InvalidInputError(f"--normal {folder} holds no images ({', '.join(exts)}); put a few defect-free images "
                         "of the same object there.")
    return files


def _add(found: dict[Path, str], taken: set[str], path: Path, key: str) -> None:
    """Record ``path`` under ``key`` unless already listed; a key another file holds (``a.png`` from two input
    folders) is made unique with the file's parent folder, then its whole path."""
    if path in found:
        return
    for candidate in (key, f"{path.parent.name}/{key}", path.as_posix().lstrip("/")):
        if candidate not in taken:
            found[path] = candidate
            taken.add(candidate)
            return
    raise InvalidInputError(f"Cannot give {path} an export name distinct from the other inputs'.")


def stems_for(keys: dict[Path, str]) -> dict[Path, str]:
    """Export stem of each file from its key, as the folder review names them (``sub/a.png`` → ``sub__a``;
    clashing names get their extension, then a number)."""
    from ..export.stems import export_stems

    stems = export_stems(keys.values())
    return {f: stems[k] for f, k in keys.items()}


def latest_exports(out: Path, stems) -> dict[str, dict]:
    """stem → the latest export record of its provenance file (stems without a readable one are left out)."""
    from ..errors import ExportError
    from ..export.provenance import provenance_path, read_provenance

    records = {}
    for stem in stems:
        try:
            history = read_provenance(provenance_path(out, stem))
        except (OSError, ExportError):
            continue  # unreadable: nothing to compare (exporting the image again says what is wrong)
        if history:
            records[stem] = history[-1]
    return records


def labelled_for_other_objects(records: dict[str, dict], object_name: str) -> list[str]:
    """The object names other than ``object_name`` that these export records (:func:`latest_exports`) were
    made for."""
    made_for = [(r.get("engine") if isinstance(r.get("engine"), dict) else {}).get("object_name")
                for r in records.values()]
    return [name for name in made_for if name and name != object_name]
