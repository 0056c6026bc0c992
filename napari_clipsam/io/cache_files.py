"""What keeps napari-clipsam's on-disk caches from serving the wrong thing, and from breaking a run.

* :func:`cache_key`: the one way an on-disk cache names an entry: a hash of a format version and of every field
  that determines the entry's content (model architecture and weights, backend, precision, settings, the input's
  content hash). Each cache owns its version constant and bumps it when what an entry holds changes, so an entry
  written by an older format has another name and is a miss, never misread.
* :class:`CacheInfo` and :class:`HitCounter`: the hit/miss counts every cache keeps (a miss is a run of the model
  behind it), which :meth:`~napari_clipsam.engine.clipsam.ClipSAM.cache_info` reports.
* :func:`architecture_fingerprint`: a hash of a model's architecture (its module tree), the part of a cache key
  that a weights fingerprint misses. Two models with the same ``state_dict`` can compute different things: open_clip's
  CLIP with ``QuickGELU`` or ``GELU`` has identical weights. The hash covers, for every submodule in order, its
  dotted name, its class (module and qualified name), its ``extra_repr()`` (sizes, ``eps``, GELU's
  ``approximate``...), its plain scalar attributes (``bool``/``int``/``float``/``str``/``None`` and tuples of
  them, e.g. open_clip's ``text_pool_type``), the qualified names of functions stored as attributes, and the name,
  shape and dtype of its buffers (non-persistent buffers such as an attention mask are not in the ``state_dict``).
  It reads no weights, so it costs milliseconds even for ViT-L.
* :func:`cache_unusable`: one log line per cache folder that cannot be written (read-only, full, a file in the
  way, ``NAPARI_CLIPSAM_CACHE`` pointing at a file), naming the folder and ``NAPARI_CLIPSAM_CACHE``. A cache is
  optional: the caller carries on with what it computed.
* :func:`sweep_stale`: removes what killed writers left in a cache folder (hidden ``.<name>.<hex>.tmp``/``.bak``
  files of :mod:`napari_clipsam.io.atomic`, ``.ir-*`` scratch folders of the converted-model cache) once they are
  older than :data:`STALE_AFTER_S` or, for names that carry it, once their writer's process is gone. It runs
  under the folder's sweep lock when a cache is opened (or, for converted models, before a conversion).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

STALE_AFTER_S = 3600.0
"""A temporary cache file or folder this old was left by a killed writer (writes take seconds)."""
SWEEP_LOCK = ".sweep.lock"
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|bak)$")
_IR_SCRATCH = re.compile(r"^\.ir-(?:(\d+)-)?.+$")
_PLAIN = (bool, int, float, str, type(None))

_warned: set[str] = set()
_state_lock = threading.Lock()


class CacheInfo(NamedTuple):
    """One cache's counts, like :func:`functools.lru_cache`'s: ``hits`` (answered from the cache), ``misses``
    (the model really ran: one per image, text or reference set it computed) and ``currsize`` (entries held)."""

    hits: int
    misses: int
    currsize: int


class HitCounter:
    """Thread-safe hit and miss counts of one cache."""

    def __init__(self):
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def hit(self, n: int = 1) -> None:
        with self._lock:
            self.hits += int(n)

    def miss(self, n: int = 1) -> None:
        with self._lock:
            self.misses += int(n)

    def info(self, currsize: int) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, int(currsize))


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (tuples as lists, paths as text); raises TypeError for anything else."""
    if isinstance(value, float) and value != value:
        raise TypeError(f"cache key field {where} is NaN")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"cache key field {where} has keys that are not text: {bad!r}")
        return {k: _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
        return _canonical(value.item(), where)
    raise TypeError(f"cache key field {where} is a {type(value).__name__}, not plain data (text, numbers, lists, "
                    "mappings); pass what identifies it (a name, a hash)")


def cache_key(fields: Mapping[str, Any], version: int, length: int = 32) -> str:
    """The name of one on-disk cache entry: ``length`` hex digits of the SHA-256 of ``version`` and ``fields``.

    ``fields`` names everything that determines the entry's content (plain data: text, numbers, booleans, None,
    lists/tuples and mappings of them; tuples and lists hash alike, mapping order does not matter). ``version``
    is the cache's format version (a positive integer): a different version gives a different key, so an entry
    of an older format is never found. Raises TypeError for a field that is not plain data (an object's ``str``
    may change between runs or hide what it holds) and ValueError for a bad version or length.
    """
    import json

    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a cache format version is a positive integer, got {version!r}")
    if not 16 <= int(length) <= 64:
        raise ValueError(f"a cache key is 16 to 64 hex digits long, got {length!r}")
    if not isinstance(fields, Mapping) or not fields:
        raise TypeError("cache key fields are a non-empty mapping of field names to plain values")
    blob = json.dumps({"version": version, "fields": _canonical(fields, "fields")}, sort_keys=True,
                      ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()[:int(length)]


def architecture_fingerprint(module) -> str:
    """A 16-hex-digit hash of ``module``'s architecture (see the module docstring for what it covers)."""
    h = hashlib.sha256()
    for name, sub in module.named_modules():
        cls = type(sub)
        h.update(f"<{name}|{cls.__module__}.{cls.__qualname__}|{sub.extra_repr()}".encode())
        for attr, value in sorted(vars(sub).items()):
            if attr.startswith("_") or attr == "training":
                continue
            if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
                h.update(f"|{attr}={value!r}".encode())
            elif callable(value) and hasattr(value, "__qualname__") and not hasattr(value, "named_modules"):
                h.update(f"|{attr}=fn:{getattr(value, '__module__', '')}.{value.__qualname__}".encode())
        for bname, buf in sub.named_buffers(recurse=False):
            h.update(f"|buffer:{bname}:{tuple(buf.shape)}:{buf.dtype}".encode())
        h.update(b">")
    return h.hexdigest()[:16]


def cache_unusable(folder, what: str, err: BaseException) -> None:
    """Log (once per folder and process) that ``what`` cannot be cached in ``folder``, and why."""
    key = str(folder)
    with _state_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("napari-clipsam: cannot use the cache folder %s for %s (%s: %s); carrying on without caching "
                "it. Make the folder writable or point NAPARI_CLIPSAM_CACHE (now %s) at a writable folder.",
                folder, what, type(err).__name__, err, os.environ.get("NAPARI_CLIPSAM_CACHE") or "not set")


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check: the age alone decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def is_stale(path: Path, now: float | None = None, max_age: float = STALE_AFTER_S) -> bool:
    """True when ``path`` is a temporary cache file or folder left by a writer that is gone."""
    ir = _IR_SCRATCH.match(path.name)
    if not (_TEMP_FILE.match(path.name) or ir):
        return False
    if ir and ir.group(1) and int(ir.group(1)) != os.getpid() and not _pid_alive(int(ir.group(1))):
        return True
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False
    return age > max_age


def sweep_stale(folder, max_age: float = STALE_AFTER_S) -> list[Path]:
    """Remove stale temporaries directly in ``folder``; returns them.

    Cheap when there is nothing to remove (one listing, a stat only for temporary names). Otherwise takes
    ``folder/.sweep.lock`` without waiting: when another process is sweeping, this one leaves it to it.
    Never raises: a folder that cannot be read or locked is simply not swept.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    removed: list[Path] = []
    try:
        if not folder.is_dir():
            return []
        now = time.time()
        if not any(is_stale(p, now, max_age) for p in folder.iterdir()):
            return []  # the usual case: nothing to remove, no lock file made
        with FileLock(str(folder / SWEEP_LOCK), timeout=0):
            for path in folder.iterdir():
                if not is_stale(path, now, max_age):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    except (Timeout, OSError) as err:
        log.debug("not sweeping %s: %s", folder, err)
    if removed:
        log.info("napari-clipsam: removed %d temporary file(s) left by killed writers in %s", len(removed), folder)
    return removed


def folder_bytes(folder) -> int:
    """Bytes of every regular file directly in ``folder`` (entries and any temporaries left), 0 when absent."""
    total = 0
    try:
        for entry in os.scandir(folder):
            try:
                if entry.is_file(follow_symlinks=False) and entry.name != SWEEP_LOCK:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    except OSError:
        return 0
    return total
