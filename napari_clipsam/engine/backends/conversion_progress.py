"""What a one-time OpenVINO conversion tells the person while it runs: an estimate, a ticking fraction, no noise.

A conversion (torch tracing + ``openvino.convert_model``) is one blocking call of minutes for a full-size model, so
it cannot report steps of its own. :func:`ticking` reports the stage every :data:`TICK_S` from a side thread with
the fraction of the estimated time gone (kept below 0.95 until the call returns), and
:func:`estimate_seconds` estimates that time from the model's size: parameters × input tokens (16 px patches), one
factor fitted to the two conversions measured on a 2-core CPU (CLIP ViT-L/14 at 336 px, 304 M parameters: 38 s,
estimated 40 s; SAM ViT-B's image encoder at 1024 px, 89 M parameters: 118 s, estimated 109 s). Faster machines
take less; tiny test models take about a second.

:func:`quiet_conversion` silences what the tracer and the converter print that a user cannot act on
(``torch.jit.TracerWarning`` about Python values in the traced graph; ``FutureWarning`` and
``DeprecationWarning`` from torch's and OpenVINO's own internals).
"""
from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable

TICK_S = 0.5
"""How often (seconds) a running conversion reports its stage."""
CAP = 0.95
"""A ticking fraction stays below this until the conversion has returned."""
_S_PER_M_PARAM_TOKEN = 3.0e-4


def estimate_seconds(module, input_size: int, patch: int = 16) -> float:
    """Rough seconds a 2-core CPU takes to convert ``module`` for a ``input_size`` px square input."""
    params = sum(p.numel() for p in module.parameters()) / 1e6
    tokens = (int(input_size) // patch) ** 2
    return max(1.0, _S_PER_M_PARAM_TOKEN * params * tokens)


@contextlib.contextmanager
def ticking(progress: Callable[[str, float], None] | None, stage: str, expected_s: float):
    """While the block runs, ``progress(stage, fraction)`` every :data:`TICK_S` (fraction of ``expected_s``)."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    start = time.perf_counter()

    def tick():
        while not stop.wait(TICK_S):
            progress(stage, min(CAP, (time.perf_counter() - start) / max(expected_s, 1e-3)))

    thread = threading.Thread(target=tick, name="clipsam-conversion-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def quiet_conversion():
    """Drop the tracer's and converter's warnings inside the block (see the module text)."""
    from torch.jit import TracerWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|openvino|transformers)(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch|openvino)(\.|$)")
        yield
