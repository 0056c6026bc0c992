"""Converted encoders on disk: an OpenVINO IR (``model.xml`` + ``model.bin``) per model, input and version.

Layout: ``<cache>/openvino/<key>/{model.xml, model.bin, manifest.json}``. The key is a hash of everything that
determines the converted graph (:func:`entry_name`): which encoder and which part of it, the model's identity
(architecture and weights, by content where they are not a known file), the input shape, the precision the IR
stores (fp32: bf16 or fp32 inference is a compile-time hint on the same IR, so one conversion serves both) and
the OpenVINO and package versions. The three files are written together by
:class:`~napari_clipsam.io.atomic.AtomicBatch` (all or nothing) under an inter-process lock, so two processes
never convert the same model at once. ``manifest.json`` records the key's fields and the SHA-256 of the other two
files; an entry whose manifest is missing, unreadable, for another key, or whose files do not match their hashes
or cannot be read by OpenVINO is converted again, never trusted.

The cache is optional: when its folder cannot be created, locked or written (read-only, full disk, a file in
the way, ``NAPARI_CLIPSAM_CACHE`` pointing at a file), one line says so
(:func:`~napari_clipsam.io.cache_files.cache_unusable`) and the model converted in memory is used. The ``.ir-<pid>-*``
scratch folders of killed writers are removed when the cache is first used
(:func:`~napari_clipsam.io.cache_files.sweep_stale`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...io.verified import sha256_memoised

log = logging.getLogger(__name__)
FORMAT = 1
"""Bump when the way encoders are exported changes: older entries are then converted again."""
IR_PRECISION = "f32"

Progress = Callable[[str, float], None]


def entry_name(fields: dict[str, Any], version: int | None = None) -> str:
    """The folder name of the converted model for ``fields``: their
    :func:`~napari_clipsam.io.cache_files.cache_key` with :data:`FORMAT`."""
    from ...io.cache_files import cache_key

    return cache_key({"cache": "openvino-ir", **fields}, FORMAT if version is None else version, length=24)


class IRCache:
    """Converted models under ``root`` (``<cache_dir>/openvino`` by default)."""

    def __init__(self, root: str | Path | None = None):
        if root is None:
            from ...weights.registry import cache_dir

            root = cache_dir() / "openvino"
        self.root = Path(root)

    def entry(self, fields: dict[str, Any]) -> Path:
        return self.root / entry_name(fields)

    def load(self, fields: dict[str, Any]):
        """The cached ``openvino.Model`` for ``fields``, or None when absent, stale or damaged (logged)."""
        from .openvino_runtime import import_openvino

        folder = self.entry(fields)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            return None
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            if meta.get("fields") != json.loads(json.dumps(fields, sort_keys=True, default=str)):
                raise ValueError("its manifest is for other settings")
            for name in ("model.xml", "model.bin"):
                if sha256_memoised(folder / name) != meta["sha256"][name]:
                    raise ValueError(f"{name} does not match its recorded SHA-256")
            return import_openvino().Core().read_model(str(folder / "model.xml"))
        except Exception as exc:  # unreadable JSON, missing file, wrong hash, OpenVINO cannot parse it
            log.warning("napari-clipsam: converted model in %s is not usable (%s); converting again.", folder, exc)
            return None

    def get_or_convert(self, fields: dict[str, Any], convert: Callable[[], Any], what: str,
                       progress: Progress | None = None, expected_s: float | None = None):
        """The cached model for ``fields``; else ``convert()`` (returns an ``openvino.Model``), save, return it.

        ``progress(stage, fraction)`` hears ``"preparing the fast CPU model, once: <what> (about N s; …)"`` at 0,
        every half second with the fraction of ``expected_s`` gone (see :mod:`.conversion_progress`), and at 1
        (nothing when the cache has it).
        """
        from filelock import FileLock

        from ...io.cache_files import cache_unusable, sweep_stale

        model = self.load(fields)
        if model is not None:
            return model
        lock = FileLock(str(self.entry(fields)) + ".lock")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.root)
            lock.acquire()
        except OSError as exc:  # the folder cannot be used at all: convert in memory
            cache_unusable(self.root, "converted OpenVINO models", exc)
            return self._convert(convert, what, progress, None, expected_s)
        try:
            model = self.load(fields)  # another process may have converted it meanwhile
            if model is not None:
                return model
            return self._convert(convert, what, progress, fields, expected_s)
        finally:
            lock.release()

    def _convert(self, convert: Callable[[], Any], what: str, progress: Progress | None, fields,
                 expected_s: float | None = None):
        """``convert()``, saved under ``fields`` unless None; a failed save is logged once, the model kept."""
        from ...io.cache_files import cache_unusable
        from .conversion_progress import quiet_conversion, ticking

        about = f"about {expected_s:.0f} s on 2 cores; " if expected_s else ""
        stage = f"preparing the fast CPU model, once: {what} ({about}later runs load it from the cache)"
        # whoever passes ``progress`` shows the stage (the CLI prints it, the dock shows it): logged only otherwise
        (log.info if progress else log.warning)("napari-clipsam: %s in %s", stage, self.root)
        if progress:
            progress(stage, 0.0)
        from .convert_child import WrittenIR

        with ticking(progress, stage, expected_s or 60.0), quiet_conversion():
            made = convert()
        written = made if isinstance(made, WrittenIR) else None
        model = made.model if written is not None else made
        try:
            if fields is not None:
                self._save(fields, model, written)
        except Exception as exc:  # disk full (OpenVINO: "basic_ios::clear"), read-only, a file in the way
            cache_unusable(self.root, "converted OpenVINO models", exc)
        finally:
            if written is not None:
                written.discard()
        if progress:
            progress(stage, 1.0)
        return model

    def _save(self, fields: dict[str, Any], model, written=None) -> None:
        """Store ``model`` under ``fields``: the files a conversion child wrote (``written``, a
        :class:`~.convert_child.WrittenIR`) as they are, else the model serialised here."""
        from ...io.atomic import AtomicBatch
        from .openvino_runtime import import_openvino

        folder = self.entry(fields)
        scratch = None if written is not None else Path(tempfile.mkdtemp(prefix=f".ir-{os.getpid()}-", dir=self.root))
        try:
            if scratch is None:
                files = written.files()
            else:
                import_openvino().save_model(model, str(scratch / "model.xml"), compress_to_fp16=False)
                files = {name: (scratch / name).read_bytes() for name in ("model.xml", "model.bin")}
            meta = {"format": FORMAT, "fields": fields,
                    "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
            with AtomicBatch() as batch:
                for name, data in files.items():
                    batch.stage(folder / name, data)
                batch.stage(folder / "manifest.json", json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
                batch.commit()
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
