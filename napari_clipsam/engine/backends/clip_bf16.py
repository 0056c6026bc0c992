"""When ``clip_precision="auto"`` runs CLIP's vision tower in bfloat16: the bounds, the measurements, the rule.

The rule is decided from data, never from timing: ``auto`` is bfloat16 only where (1) the CPU computes bf16
natively (:attr:`~.cpu_features.CpuFeatures.bf16_native`) and (2) the CLIP architecture has a measurement in
:data:`MEASURED` whose worst figures hold every bound of :data:`BOUNDS`. Anything else (no native bf16, an
architecture never measured, e.g. a ``local-dir:`` model, or one measured outside the bounds) stays float32, and
the plan's reason says which.

The figures come from ``scripts/clip_bf16_fidelity.py`` (OpenVINO CLIP in float32 against bfloat16, random weights,
the synthetic categories, the few-shot map and the folder mutual map, which have contrast; see docs/performance.md):
the worst over modes and categories of pixel-AUROC drop, map correlation, pooled final-mask IoU, and the patch
tokens' cosine and relative L2 error. They were measured with random weights: real weights have larger, more
uneven activations (outlier channels), which is what bf16's 8-bit mantissa is sensitive to, so the table names
what each figure was measured on and docs/performance.md says what real weights must still confirm.
"""
from __future__ import annotations

BOUNDS = {"auroc_drop_max": 0.005, "map_corr_min": 0.999, "mask_iou_pooled_min": 0.95,
          "feature_cos_min": 0.9999, "feature_rel_l2_max": 0.015}
"""What a bf16 CLIP must hold against float32 (worst over categories and modes) for ``auto`` to choose it:
``*_max`` figures at most, ``*_min`` figures at least the value."""

MEASURED: dict[str, dict] = {}
"""open_clip architecture (name without ``-quickgelu``) → the worst figures measured by
``scripts/clip_bf16_fidelity.py`` (keys of :data:`BOUNDS`), with ``"measured"``: where and how."""


def within_bounds(figures: dict[str, float]) -> tuple[bool, str]:
    """(True, "") when ``figures`` hold every bound of :data:`BOUNDS`; else (False, which ones fail, in words).
    A bound whose figure is missing fails."""
    failed = []
    for key, bound in BOUNDS.items():
        value = figures.get(key)
        ok = value is not None and (value <= bound if key.endswith("_max") else value >= bound)
        if not ok:
            failed.append(f"{key} {value if value is None else round(value, 6)} "
                          f"({'≤' if key.endswith('_max') else '≥'} {bound} needed)")
    return not failed, "; ".join(failed)


def architecture_name(clip_model: str | None) -> str:
    """The :data:`MEASURED` key of a ``clip_model`` setting: the open_clip name without ``-quickgelu``
    (``local-dir:`` and unknown models have none: ``""``)."""
    name = str(clip_model or "")
    if name.startswith(("local-dir:", "hf-hub:")) or "/" in name:
        return ""
    return name[:-len("-quickgelu")] if name.endswith("-quickgelu") else name


def auto_clip_precision(clip_model: str | None, cpu, measured: dict[str, dict] | None = None) -> tuple[str, str]:
    """``("bfloat16" | "float32", why)`` for ``clip_precision="auto"`` with this ``clip_model`` on ``cpu``
    (:class:`~.cpu_features.CpuFeatures`); ``measured`` defaults to :data:`MEASURED`."""
    measured = MEASURED if measured is None else measured
    if not cpu.bf16_native:
        return "float32", "CLIP float32: this CPU has no native bf16"
    arch = architecture_name(clip_model)
    if arch not in measured:
        return "float32", (f"CLIP float32: no bf16 measurement for {clip_model!r} "
                           f"(scripts/clip_bf16_fidelity.py; measured: {', '.join(sorted(measured)) or 'none'})")
    ok, why = within_bounds(measured[arch])
    if not ok:
        return "float32", f"CLIP float32: bf16 measured outside the bounds for {arch}: {why}"
    return "bfloat16", f"CLIP bfloat16: native bf16 and {arch} measured within the bounds"
