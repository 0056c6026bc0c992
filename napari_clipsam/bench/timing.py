"""Clocks and memory probes shared by the benchmarks."""
from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def now() -> float:
    """A monotonic clock in seconds."""
    return time.perf_counter()


def sync(device) -> None:
    """Wait for the device's queued work (CUDA), so a clock read after it times the work itself."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak resident memory (or CUDA memory) of a block, in MiB. On Linux the process's high-water mark is
    reset through /proc/self/clear_refs; elsewhere the figure is the process peak so far."""

    def __init__(self, device):
        self.device, self.peak_mib = device, float("nan")

    def __enter__(self):
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else []:
            if line.startswith("VmHWM:"):
                self.peak_mib = int(line.split()[1]) / 1024
                return
        import resource

        self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable, device, repeats: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls (seconds) and the last return value."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t = now()
        out = fn()
        sync(device)
        best = min(best, now() - t)
    return best, out
