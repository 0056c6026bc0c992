"""What this CPU can do natively, detected at run time (bf16 decides the encoders' ``auto`` precision).

bf16 is fast only where the CPU computes it natively: Intel AMX (``amx_bf16``, Sapphire Rapids and later) or
AVX-512 BF16 (``avx512_bf16``: Cooper Lake, AMD Zen 4 and later). Elsewhere bf16 is emulated and slower than fp32.
The flags come from ``/proc/cpuinfo`` (Linux); OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of its CPU device
(``"BF16"``) is used where ``/proc/cpuinfo`` is not available (macOS, Windows).
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """model: the CPU's name; flags: the :data:`REPORTED_FLAGS` it has; bf16_native: True/False, None when
    unknown; bf16_source: how that was found (``"/proc/cpuinfo: amx_bf16"``, ``"openvino: BF16"``, ...)."""

    model: str
    flags: tuple[str, ...]
    bf16_native: bool | None
    bf16_source: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor listed in a ``/proc/cpuinfo`` text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def features_from_cpuinfo(text: str) -> CpuFeatures:
    """:class:`CpuFeatures` from a ``/proc/cpuinfo`` text (bf16 decided by its flags)."""
    model, flags = parse_cpuinfo(text)
    found = [f for f in BF16_FLAGS if f in flags]
    return CpuFeatures(model or platform.processor() or platform.machine(),
                       tuple(f for f in REPORTED_FLAGS if f in flags), bool(found),
                       "/proc/cpuinfo: " + (", ".join(found) if found else "no amx_bf16 / avx512_bf16"))


@lru_cache(maxsize=1)
def detect_cpu() -> CpuFeatures:
    """This machine's :class:`CpuFeatures` (read once per process)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        try:
            return features_from_cpuinfo(info.read_text(errors="replace"))
        except OSError:
            pass
    model = platform.processor() or platform.machine()
    from .openvino_runtime import openvino_available

    if openvino_available():
        from .openvino_runtime import import_openvino

        caps = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return CpuFeatures(model, (), "BF16" in caps, f"openvino: {' '.join(caps)}")
    return CpuFeatures(model, (), None, "unknown (no /proc/cpuinfo, no OpenVINO)")
