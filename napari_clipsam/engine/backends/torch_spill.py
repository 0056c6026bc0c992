"""Keep the torch copy of an encoder that OpenVINO runs memory-mapped from disk instead of in memory.

Once an encoder is compiled for OpenVINO, its torch module (the SAM image encoder, CLIP's vision tower) is only
needed for what still runs in torch (CLIP's training-free head reads the last block; another CLIP request is
converted from the module) or as a fallback. :func:`spill` writes the module's parameters and buffers once to
``<cache>/openvino/torch/<key>.pt`` (all-or-nothing, with a SHA-256 sidecar) and swaps them for tensors
memory-mapped from that file (``torch.load(mmap=True)``, copy-on-write): the module keeps working, bit for bit,
but its weights count in the process's memory only while a torch path reads them. The file is keyed like the
converted model (weights, architecture, torch version, a format number) and checked against its hash before use;
a damaged or stale file is written again.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ...io.verified import sha256_memoised

log = logging.getLogger(__name__)

FORMAT = 1
"""Format of the spilled files; part of their key."""


def spill_path(root: Path, key: dict[str, Any]) -> Path:
    from ...io.cache_files import cache_key

    return Path(root) / "torch" / f"{cache_key({'cache': 'torch-spill', **key}, FORMAT, length=24)}.pt"


def _write(path: Path, state: dict[str, torch.Tensor]) -> None:
    from ...io.atomic import atomic_file

    with atomic_file(path) as f:
        torch.save(state, f)
    with atomic_file(path.with_suffix(".sha256")) as f:
        f.write(sha256_memoised(path).encode())


def _valid(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The memory-mapped tensors of ``path`` when its hash, names, shapes and dtypes match ``state``."""
    sidecar = path.with_suffix(".sha256")
    try:
        if not (path.is_file() and sidecar.is_file()) or sidecar.read_text().strip() != sha256_memoised(path):
            return None
        loaded = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        log.warning("ignoring unreadable spilled weights %s (%s); writing them again", path, exc)
        return None
    same = loaded.keys() == state.keys() and all(
        loaded[k].shape == v.shape and loaded[k].dtype == v.dtype for k, v in state.items())
    return loaded if same else None


def is_spilled(module: torch.nn.Module) -> bool:
    """Whether ``module``'s tensors are memory-mapped by :func:`spill` (its marker attribute)."""
    return getattr(module, "_clipsam_spilled", None) is not None


def spill(module: torch.nn.Module, root: Path, key: dict[str, Any]) -> Path | None:
    """Swap ``module``'s parameters and buffers (CPU only) for memory-mapped copies (see the module docstring);
    returns the file, or None when nothing was done (already spilled, not on the CPU, or the file could not be
    written: then the module simply stays in memory, logged)."""
    if is_spilled(module):
        return module._clipsam_spilled
    state = module.state_dict(keep_vars=False)
    if any(t.device.type != "cpu" for t in state.values()):
        return None
    path = spill_path(root, {**key, "torch": torch.__version__.split("+")[0]})
    loaded = _valid(path, state)
    if loaded is None:
        try:
            _write(path, {k: v.detach().contiguous() for k, v in state.items()})
        except OSError as exc:
            log.warning("could not write %s (%s); the torch copy stays in memory", path, exc)
            return None
        loaded = _valid(path, state)
        if loaded is None:
            return None
    with torch.no_grad():
        module.load_state_dict(loaded, strict=True, assign=True)
    module._clipsam_spilled = path
    return path
