"""Loading torch & co. safely inside a process whose OpenGL context came first (napari).

Mesa's OpenGL drivers (Intel/AMD graphics, virtual machines, remote desktops, Xvfb) map ``libLLVM`` into the
process. triton bundles its own LLVM; importing it afterwards — which ``import torchvision`` does through
``torch._dynamo`` — crashes the process with a segmentation fault (pytorch issues 96060 and 129100).
``import torch`` alone is safe.

ClipSAM never needs triton (it is torch's compiler backend for ``torch.compile`` on GPUs). So, before the heavy
stack is imported, :func:`prepare_heavy_imports` looks at the libraries mapped into this process; when an LLVM
from a GL driver is there and triton is not loaded yet, it marks triton as unavailable through Python's import
system (``sys.modules["triton"] = None``: ``import triton`` then raises ImportError and torch treats triton as
absent, exactly as on a machine without it). It logs what it did. NVIDIA's driver maps no libLLVM, so CUDA users
keep triton.

Set ``NAPARI_CLIPSAM_ALLOW_TRITON=1`` to skip this (e.g. to experiment with ``torch.compile``; expect the crash
described above under Mesa).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)
ALLOW_ENV = "NAPARI_CLIPSAM_ALLOW_TRITON"
_lock = threading.Lock()
_decision: str | None = None


def mapped_llvm_libraries(maps_file: str = "/proc/self/maps") -> list[str]:
    """Paths of LLVM shared libraries mapped into this process (Linux; empty elsewhere or when unreadable)."""
    try:
        with open(maps_file, encoding="utf-8", errors="replace") as fh:
            paths = {line.split(None, 5)[5].strip() for line in fh if line.count(" ") >= 5 and "LLVM" in line}
    except OSError:
        return []
    return sorted(p for p in paths if "/libLLVM" in p and "triton" not in p)


def prepare_heavy_imports() -> str:
    """Make importing torch/torchvision/open_clip/segment_anything safe here; returns what was decided.

    Idempotent and cheap after the first call (one read of ``/proc/self/maps``). The returned text is also
    logged: ``"triton blocked: ..."``, ``"triton already loaded"``, ``"no GL LLVM mapped"`` or ``"allowed by ..."``.
    """
    global _decision
    with _lock:
        if "triton" in sys.modules:
            if sys.modules["triton"] is not None:
                return "triton already loaded"
            return _decision or "triton blocked (by the host application)"
        if os.environ.get(ALLOW_ENV) == "1":
            return f"allowed by {ALLOW_ENV}=1"
        llvm = mapped_llvm_libraries()
        if not llvm:
            return "no GL LLVM mapped"
        sys.modules["triton"] = None  # the import system's documented way to mark a module unavailable
        _decision = (f"triton blocked: an OpenGL driver already mapped {', '.join(llvm)}; loading triton's own "
                     f"LLVM now would crash napari. ClipSAM does not use triton (set {ALLOW_ENV}=1 to allow it).")
        log.warning("napari-clipsam: %s", _decision)
        return _decision


_preload: threading.Thread | None = None


def preload_in_background() -> threading.Thread:
    """Import the engine's stack (torch, open_clip, segment_anything) in a background thread, once per process.

    The dock calls it when it opens, so the first Run does not spend its first seconds importing: ``import torch``
    alone holds Python's GIL for ~0.3 s at a stretch (loading its shared libraries), which froze the window at the
    start of a first Run; now that happens while the person picks an image. Safe only once napari's OpenGL context
    exists (see the module notes): :func:`prepare_heavy_imports` runs first. Returns the thread (joinable)."""
    global _preload
    with _lock:
        if _preload is None:
            def load() -> None:
                try:
                    prepare_heavy_imports()
                    importlib.import_module("napari_clipsam.engine.clipsam")  # torch, open_clip, segment_anything
                except Exception:  # noqa: BLE001 (the Run imports again and reports what fails)
                    log.exception("napari-clipsam: preloading the libraries failed")

            _preload = threading.Thread(target=load, name="napari-clipsam preload")
            _preload.start()
        return _preload


def wait_for_preload() -> None:
    """Let a running :func:`preload_in_background` finish before this thread imports the stack by another door
    (open_clip or segment_anything directly, not ``engine.clipsam``): two threads importing torchvision's modules
    at once can see one half made (``cannot import name … from partially initialized module``), as a script that
    wrote tiny models right after opening the dock did. Call it from a function, never while a module is being
    imported (the preload may need that module)."""
    thread = _preload
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join()
