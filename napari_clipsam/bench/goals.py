"""The CPU speed goals (issue 23's table), each measured row beside its goal, from one ``run_benchmark`` output.

Every row is computed from figures taken in the same run (ratios of side-by-side timings where the goal is a ratio),
so it says where this machine stands today. A row whose figures were not measured in the run (e.g. the backends
comparison skipped with ``--no-compare-backends``) is reported as not measured, never guessed.
"""
from __future__ import annotations

from typing import Any

GOALS = (
    # key, what, unit, goal, higher is better
    ("cold_vs_torch_fp32", "cold segment vs torch fp32, same run (best round)", "×", 5.5, True),
    ("segment_over_encoders", "cold segment / encoders alone", "×", 1.10, False),
    ("clip_bf16_speedup", "CLIP vision on OpenVINO, fp32 time / bf16 time (used only where shown safe)", "×",
     None, True),
    ("segment_peak_mib", "peak memory of a cold segment", "MiB", 6144.0, False),
    ("fewshot_over_zero_shot", "first few-shot segment after setting 4 references / a zero-shot one (SAM decoder "
     "excluded: its work is the prompts each map yields)", "×", 1.15, False),
    ("references_over_passes", "setting 4 references, less a one-time conversion / their K × views CLIP passes",
     "×", 1.15, False),
    ("refine_one_edit_ms", "refine after one edited component", "ms", 100.0, False),
    ("mutual_over_encoders_50", "folder mutual scoring of 50 images / the encoders' time for 50 images (issue 20)",
     "×", 0.20, False),
    ("time_to_first_mask_s", "engine load + first segment (converted models as found in the cache; random weights "
     "add drawing them, ~2.5 s for ViT-L, which a checkpoint's load skips)", "s", 10.0, False),
)
"""What the bench compares with a goal; ``goal`` None: reported without one."""


def _default_variant(out: dict[str, Any]) -> dict[str, Any] | None:
    """The backends comparison's variant that runs what this engine runs (same backend and precisions)."""
    plan = out.get("plan") or {}
    for v in ((out.get("backends") or {}).get("variants") or {}).values():
        p = v.get("plan", {})
        if all(p.get(k) == plan.get(k) for k in ("backend", "sam_precision", "clip_precision")):
            return v
    return None


def measured_values(out: dict[str, Any]) -> dict[str, float | None]:
    """Each goal's measured value in ``out`` (a ``run_benchmark`` dict), None where the run did not measure it."""
    seg, few, refine = out.get("segment", {}), out.get("fewshot", {}), out.get("refine", {})
    variants = (out.get("backends") or {}).get("variants") or {}
    default = _default_variant(out)
    clip32 = variants.get("openvino bf16 SAM, fp32 CLIP", {}).get("clip", {}).get("min_s")
    clip16 = variants.get("openvino bf16 SAM + CLIP", {}).get("clip", {}).get("min_s")
    edit = refine.get("one_component_edit_s")
    load, first = out.get("load_s"), seg.get("total_s")
    return {
        "cold_vs_torch_fp32": default["segment"]["speedup_min"] if default and "segment" in default else None,
        "segment_over_encoders": seg.get("ratio_to_encoders"),
        "clip_bf16_speedup": clip32 / clip16 if clip32 and clip16 else None,
        "segment_peak_mib": seg.get("peak_mib"),
        "fewshot_over_zero_shot": few.get("ratio_without_decoder"),
        "references_over_passes": few.get("set_references_over_passes"),
        "refine_one_edit_ms": None if edit is None else 1e3 * edit,
        "mutual_over_encoders_50": ((out.get("mutual") or {}).get("folders") or {}).get(50, {}).get(
            "ratio_to_encoders"),
        "time_to_first_mask_s": load + first if load is not None and first is not None else None,
    }


def goal_rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per :data:`GOALS` entry: ``key, what, unit, measured, goal, met`` (``met`` None without a goal or
    a measurement)."""
    values = measured_values(out)
    rows = []
    for key, what, unit, goal, higher in GOALS:
        v = values[key]
        met = None if v is None or goal is None else (v >= goal if higher else v <= goal)
        rows.append(dict(key=key, what=what, unit=unit, measured=v, goal=goal,
                         goal_rule=None if goal is None else (">=" if higher else "<="), met=met))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as lines for the bench's log."""
    lines = ["goals (issue 23), measured in this run:"]
    for r in rows:
        v = "not measured" if r["measured"] is None else f"{r['measured']:.2f} {r['unit']}"
        goal = "no goal" if r["goal"] is None else f"goal {'≥' if r['goal_rule'] == '>=' else '≤'} {r['goal']:g}"
        verdict = "" if r["met"] is None else ("  met" if r["met"] else "  NOT met")
        lines.append(f"  {r['what']}: {v} ({goal}){verdict}")
    return lines
