"""Importing OpenVINO with its usage telemetry off, and compiling models for the CPU.

**Telemetry.** OpenVINO's model converter (``openvino.convert_model``, the ``ovc`` tool) sends usage data to
Google Analytics through the ``openvino-telemetry`` package unless the user opted out (documented way:
``opt_in_out --opt_out``, which writes ``~/intel/openvino_telemetry``) or a CI variable is set; there is no
environment variable for it, and the runtime itself (reading and running models) sends nothing. The converter
is written to work without that package: when ``import openvino_telemetry`` fails it binds its own no-op
``telemetry_stub``. :func:`import_openvino` therefore imports OpenVINO (and with it the converter) while
``openvino_telemetry`` is marked unavailable through the import system (``sys.modules[name] = None``, Python's
documented way to make an import fail), then restores the entry as it was, so other code in the process is not
affected. Nothing in the user's home folder is written. :func:`converter_telemetry_off` checks the result; a
conversion refuses to run if it is not true (the converter was imported earlier by someone else).
"""
from __future__ import annotations

import importlib.util
import sys
import threading

TELEMETRY_MODULE = "openvino_telemetry"
TELEMETRY_USERS = ("openvino.tools.ovc", "openvino.tools.ovc.convert_impl", "openvino.tools.ovc.telemetry_utils",
                   "openvino.tools.ovc.utils")
"""The modules of OpenVINO 2023–2026 that import ``openvino_telemetry`` (``import openvino`` imports the
converter, whose ``__init__`` sends an "import" event)."""
_lock = threading.Lock()


def openvino_available() -> bool:
    """True when the ``openvino`` package is installed (nothing is imported)."""
    return importlib.util.find_spec("openvino") is not None


def import_openvino():
    """``import openvino`` with the converter bound to its telemetry stub (see the module docstring)."""
    with _lock:
        if "openvino" in sys.modules:
            import openvino

            return openvino
        missing = object()
        before = sys.modules.get(TELEMETRY_MODULE, missing)
        sys.modules[TELEMETRY_MODULE] = None
        try:
            import openvino
            for name in TELEMETRY_USERS:
                importlib.import_module(name)  # each binds its telemetry now
        finally:
            if before is missing:
                del sys.modules[TELEMETRY_MODULE]
            else:
                sys.modules[TELEMETRY_MODULE] = before
        return openvino


def converter_telemetry_off() -> bool:
    """True when OpenVINO's converter is bound to its no-op telemetry stub."""
    import_openvino()
    bound = [getattr(sys.modules.get(name), "tm", None) for name in TELEMETRY_USERS[1:]]
    return all(getattr(tm, "__name__", "").endswith("telemetry_stub") for tm in bound)


def openvino_version() -> str:
    return import_openvino().get_version()


OV_PRECISION = {"float32": "f32", "bfloat16": "bf16"}


def compile_for_cpu(model, precision: str, threads: int, input_shape: list[int] | None = None):
    """Compile an ``openvino.Model`` on the CPU for one image at a time.

    ``precision``: ``"float32"`` or ``"bfloat16"`` (OpenVINO's inference precision hint; it is always set, as
    OpenVINO otherwise picks bf16 by itself on bf16 CPUs). ``threads``: inference threads (torch's setting, so
    both backends use the same cores). ``input_shape``: the one shape the model is run on (the converted graph
    leaves it dynamic); compiled for it, OpenVINO plans the working memory once, ahead of time, reusing buffers
    across the graph (SAM vit_b fp32: 2.6 GiB → 0.9 GiB of working memory, docs/performance.md), instead of
    allocating every intermediate at run time.
    """
    ov = import_openvino()
    if input_shape is not None:
        model.reshape({0: ov.PartialShape([int(d) for d in input_shape])})
    config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(max(1, int(threads)))}
    return ov.Core().compile_model(model, "CPU", config)
