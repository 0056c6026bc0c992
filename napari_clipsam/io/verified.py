"""SHA-256 of large files, hashed once per version of the file: a stat-keyed memo beside each file.

The engine checks big files against a recorded SHA-256 every time it loads them: the official weights (CLIP
ViT-L/14@336 is 0.9 GB, SAM vit_b 0.4 GB), the converted OpenVINO models and the memory-mapped torch copies
(another ~3 GB at the cpu preset). Hashing them all took 2.7 s of every engine load on 2 cores
(docs/performance.md). :func:`sha256_memoised` hashes a file once and records the digest with the file's
identity (size, modification time in ns, inode, device) in a hidden sibling, ``.<name>.sha256-stat`` (files in
the cache), or in a memo folder of the cache for files elsewhere (a user's own checkpoint: nothing is written
beside it); while the file's identity is unchanged, the recorded digest is returned without reading it.

What this still catches: a file replaced, truncated, appended to, re-downloaded or copied over (each changes the
size, the modification time or the inode). What it cannot: bytes changed in place with the modification time
set back by hand, or silent corruption on the disk: :func:`sha256_memoised` with ``trust_memo=False`` (and
``napari-clipsam`` run with ``NAPARI_CLIPSAM_REHASH=1``) reads the file again. The memo is the same trade-off
``git``'s index and ``make`` take. A memo that cannot be written (read-only cache) is skipped: the file is then
hashed on each load, as before.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

REHASH_ENV = "NAPARI_CLIPSAM_REHASH"
"""Set to ``1`` to ignore every memo and hash each file again (e.g. after a disk error)."""
FORMAT = 1


def memo_path(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> Path:
    """Where ``path``'s memo is: a hidden sibling, or in ``memo_dir`` under a hash of the file's full path."""
    p = Path(path)
    if memo_dir is None:
        return p.with_name(f".{p.name}.sha256-stat")
    where = hashlib.sha256(str(p.resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Path(memo_dir) / f"{where}.sha256-stat"


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in full (no memo)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_memoised(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None,
                    trust_memo: bool | None = None) -> str:
    """Hex SHA-256 of ``path``: from its memo when the file's identity matches, else hashed (and memoised).

    ``memo_dir``: see :func:`memo_path`. ``trust_memo`` None: trusted unless :data:`REHASH_ENV` is ``1``.
    Raises OSError when the file cannot be read.
    """
    p = Path(path)
    if trust_memo is None:
        trust_memo = os.environ.get(REHASH_ENV, "") not in ("1", "true", "yes")
    memo = memo_path(p, memo_dir)
    before = p.stat()
    if trust_memo:
        try:
            rec = json.loads(memo.read_text(encoding="utf-8"))
            if rec.get("format") == FORMAT and rec.get("stat") == _identity(before):
                return str(rec["sha256"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no memo, or an unreadable one: hash the file
    digest = sha256_file(p)
    after = p.stat()
    if _identity(after) == _identity(before):  # not changed while it was read: the digest is of this version
        _write_memo(memo, {"format": FORMAT, "sha256": digest, "stat": _identity(after)})
    return digest


def _write_memo(memo: Path, record: dict) -> None:
    from .atomic import atomic_file

    try:
        with atomic_file(memo) as f:
            f.write(json.dumps(record).encode())
    except OSError:  # read-only folder, full disk: the next load hashes the file again
        pass
