"""The stat-keyed SHA-256 memo (io/verified.py): hashed once per version of a file, never a stale digest for a
file that was replaced, truncated or rewritten."""
from __future__ import annotations

import hashlib
import os

import pytest

from napari_clipsam.io.verified import REHASH_ENV, memo_path, sha256_memoised


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rewrite_keeping_stat(path, data: bytes) -> None:
    """Change the bytes in place (same size, same inode) and set the modification time back: the one change the
    memo cannot see."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_memo_is_used_while_the_file_is_unchanged(tmp_path, monkeypatch):
    monkeypatch.delenv(REHASH_ENV, raising=False)
    f = tmp_path / "model.bin"
    f.write_bytes(b"a" * 1000)
    assert sha256_memoised(f) == _digest(b"a" * 1000)
    assert memo_path(f).is_file() and memo_path(f).name == ".model.bin.sha256-stat"
    _rewrite_keeping_stat(f, b"b" * 1000)
    # the memo answers (the file was not read again) ...
    assert sha256_memoised(f) == _digest(b"a" * 1000)
    # ... unless told not to trust it, by argument or by the environment
    assert sha256_memoised(f, trust_memo=False) == _digest(b"b" * 1000)
    _rewrite_keeping_stat(f, b"c" * 1000)
    monkeypatch.setenv(REHASH_ENV, "1")
    assert sha256_memoised(f) == _digest(b"c" * 1000)


@pytest.mark.parametrize("change", ["rewrite", "truncate", "append", "replace"])
def test_a_changed_file_is_hashed_again(tmp_path, monkeypatch, change):
    monkeypatch.delenv(REHASH_ENV, raising=False)
    f = tmp_path / "w.pth"
    f.write_bytes(b"x" * 4096)
    old = f.stat()
    assert sha256_memoised(f) == _digest(b"x" * 4096)
    if change == "rewrite":  # same size, new bytes, a later modification time
        f.write_bytes(b"y" * 4096)
        os.utime(f, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
        want = b"y" * 4096
    elif change == "truncate":
        with open(f, "r+b") as fh:
            fh.truncate(100)
        os.utime(f, ns=(old.st_atime_ns, old.st_mtime_ns))  # even with the old time: the size differs
        want = b"x" * 100
    elif change == "append":
        with open(f, "ab") as fh:
            fh.write(b"z")
        want = b"x" * 4096 + b"z"
    else:  # another file moved over it (a new download): a new inode
        other = tmp_path / "new.pth"
        other.write_bytes(b"x" * 4095 + b"q")
        os.utime(other, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(other, f)
        want = b"x" * 4095 + b"q"
    assert sha256_memoised(f) == _digest(want)


def test_files_outside_the_cache_keep_their_memo_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(REHASH_ENV, raising=False)
    user = tmp_path / "my models"
    user.mkdir()
    f = user / "sam.pth"
    f.write_bytes(b"weights")
    memos = tmp_path / "cache" / "verified"
    assert sha256_memoised(f, memo_dir=memos) == _digest(b"weights")
    assert sorted(p.name for p in user.iterdir()) == ["sam.pth"]  # nothing written beside the user's file
    assert len(list(memos.iterdir())) == 1
    _rewrite_keeping_stat(f, b"WEIGHTS")
    assert sha256_memoised(f, memo_dir=memos) == _digest(b"weights")  # its memo answered


def test_a_damaged_or_unwritable_memo_only_costs_a_hash(tmp_path, monkeypatch):
    monkeypatch.delenv(REHASH_ENV, raising=False)
    f = tmp_path / "m.bin"
    f.write_bytes(b"data")
    memo_path(f).write_text("{not json")
    assert sha256_memoised(f) == _digest(b"data")
    memo_path(f).write_text('{"format": 1, "stat": "?", "sha256": 3}')
    assert sha256_memoised(f) == _digest(b"data")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the memo folder would be")
    assert sha256_memoised(f, memo_dir=blocked / "verified") == _digest(b"data")
    with pytest.raises(OSError):
        sha256_memoised(tmp_path / "missing.bin")
