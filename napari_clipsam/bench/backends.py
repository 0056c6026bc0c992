"""``napari-clipsam bench``: the encoder backends and precisions side by side, on the same models and images.

Each variant is an engine over the same modules (:class:`~napari_clipsam.engine.backends.BackendPlan`): torch float32
(the reference), torch bf16 autocast, OpenVINO float32, OpenVINO with a bf16 SAM encoder (CLIP float32: what
``auto`` picks on bf16 CPUs) and OpenVINO with both encoders in bf16. Every variant is warmed up first (which also
converts its encoders, timed apart), then the variants run **interleaved**, round after round, one image at a time
(the engine's own CPU batch size), so slow phases of a shared machine hit them alike; each figure is reported as
the minimum and the median over the rounds, with speed-ups against torch float32 in the same rounds.

Fidelity against torch float32: SAM embedding cosine, SAM masks decoded with fixed point and box prompts on each
variant's embedding (IoU, min and mean), CLIP features (cosine and relative L2 of the worst layer) and the final
mask of the cold segment (IoU). With random CLIP weights the rough map spans a tiny range, so a bf16 CLIP reorders
it and its final masks mean nothing: judge CLIP by its features there.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.backends.fidelity import cosine, mask_iou, relative_l2, sam_mask_ious


def variants_for(device_type: str, openvino: bool, bf16_native: bool | None) -> dict[str, dict[str, str]]:
    """Variant name → config changes. On CUDA: torch float32 and bf16. On the CPU: the torch ones, and with
    OpenVINO installed its float32 and bf16 variants (bf16 ones only where the CPU has native bf16)."""
    out = {"torch fp32": dict(backend="torch", dtype="float32"),
           "torch bf16 autocast": dict(backend="torch", dtype="bfloat16")}
    if device_type != "cpu" or not openvino:
        return out
    out["openvino fp32"] = dict(backend="openvino", dtype="float32", sam_precision="float32",
                                clip_precision="float32")
    if bf16_native:
        out["openvino bf16 SAM, fp32 CLIP"] = dict(backend="openvino", dtype="float32", sam_precision="bfloat16",
                                                   clip_precision="float32")
        out["openvino bf16 SAM + CLIP"] = dict(backend="openvino", dtype="float32", sam_precision="bfloat16",
                                               clip_precision="bfloat16")
    return out


def compare_backends(engine, images: list[np.ndarray], object_name: str, *, rounds: int = 3,
                     only: tuple[str, ...] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every variant of :func:`variants_for` (or those named in ``only``; torch fp32 always) on ``engine``'s
    models; ``images[0]`` warms up, ``images[1]`` is measured. Returns ``{"cpu": ..., "variants": {name: figures}}``
    (JSON-friendly)."""
    from ..engine.backends import detect_cpu, openvino_available
    from .timing import PeakMemory, now, sync
    from ..engine.clipsam import ClipSAM

    cpu = detect_cpu()
    warm, image = images[0], images[1]
    base_identity = {k: v for k, v in engine.identity.items() if k != "encoders"}
    ref_cfg = engine.config.replace(backend="torch", dtype="float32")

    def build(cfg):
        return ClipSAM(engine.clip_model, engine.text.tokenizer, engine.sam.model, engine.umci, cfg,
                       identity=base_identity)

    # a τ_prompt that makes the reference decode components (random weights leave nothing above 0.5)
    tp = float(np.quantile(build(ref_cfg).segment(image, object_name).rough_map, 0.99))
    specs = {name: changes for name, changes in variants_for(engine.device.type, openvino_available(),
                                                              cpu.bf16_native).items()
             if only is None or name in only or name == "torch fp32"}
    engines, figures = {}, {}
    for name, changes in specs.items():
        eng = build(ref_cfg.replace(prompt_threshold=tp, **changes))
        t = now()
        eng.backend.prepare()
        prep = now() - t
        eng.segment(warm, object_name)  # warm-up (and the text cache)
        engines[name] = eng
        figures[name] = {"plan": eng.backend.plan.describe(), "prepare_s": prep, "sam_s": [], "clip_s": [],
                         "segment_s": []}
    ref = engines["torch fp32"]

    def timed(eng, fn):
        sync(eng.device)
        t0 = now()
        out = fn()
        sync(eng.device)
        return now() - t0, out

    results = {}
    for r in range(rounds):
        for name, eng in engines.items():
            f = figures[name]
            with eng.autocast():
                t, emb = timed(eng, lambda: eng.sam.embed(image))
            f["sam_s"].append(t)
            t, feats = timed(eng, lambda: eng.clip_features([image]))
            f["clip_s"].append(t)
            eng.clear_caches()
            if r == rounds - 1:
                with PeakMemory(eng.device) as mem:
                    t, res = timed(eng, lambda: eng.segment(image, object_name))
                f["segment_peak_mib"] = mem.peak_mib
            else:
                t, res = timed(eng, lambda: eng.segment(image, object_name))
            f["segment_s"].append(t)
            results[name] = (emb, feats, res)
    r_emb, r_feats, r_res = results["torch fp32"]
    for name, f in figures.items():
        emb, feats, res = results[name]
        ious = sam_mask_ious(engines[name].sam, emb, ref.sam, r_emb, image.shape[:2])
        pairs = list(zip(feats, r_feats)) if isinstance(feats, list) else [(feats, r_feats)]
        f.update(sam_cosine=cosine(emb.features, r_emb.features), sam_mask_iou_min=min(ious),
                 sam_mask_iou_mean=float(np.mean(ious)), clip_cosine_min=min(cosine(a, b) for a, b in pairs),
                 clip_rel_l2_max=max(relative_l2(a, b) for a, b in pairs),
                 final_mask_iou=mask_iou(res.mask, r_res.mask), components=int(res.prompts.num_components))
        for key in ("sam_s", "clip_s", "segment_s"):
            ratios = [b / a for a, b in zip(f[key], figures["torch fp32"][key])]
            f[key.replace("_s", "")] = {"min_s": min(f[key]), "median_s": statistics.median(f[key]),
                                        "speedup_min": max(ratios), "speedup_median": statistics.median(ratios)}
    _log_table(figures, cpu, rounds, tp, log)
    return {"cpu": cpu.as_dict(), "rounds": rounds, "prompt_threshold": tp, "variants": figures}


def _log_table(figures, cpu, rounds, tp, log) -> None:
    log(f"backends side by side on {cpu.model} (flags: {' '.join(cpu.flags) or 'unknown'}; native bf16: "
        f"{cpu.bf16_native}, from {cpu.bf16_source}); {rounds} interleaved rounds after a warm-up, one image at a "
        f"time; τ_prompt {tp:.4f} so components are decoded. Speed-up vs torch fp32 as best / median round:")
    for name, f in figures.items():
        s, c, g = f["sam"], f["clip"], f["segment"]
        log(f"  {name:<29} SAM {s['min_s']:6.2f} s ({s['speedup_min']:.2f}/{s['speedup_median']:.2f}×)  "
            f"CLIP {c['min_s']:5.2f} s ({c['speedup_min']:.2f}/{c['speedup_median']:.2f}×)  "
            f"segment {g['min_s']:6.2f} s ({g['speedup_min']:.2f}/{g['speedup_median']:.2f}×, peak "
            f"{f['segment_peak_mib']:.0f} MiB)  SAM cos {f['sam_cosine']:.5f}, SAM masks IoU min/mean "
            f"{f['sam_mask_iou_min']:.3f}/{f['sam_mask_iou_mean']:.3f}, CLIP cos ≥ {f['clip_cosine_min']:.6f} "
            f"(rel L2 ≤ {f['clip_rel_l2_max']:.1e}), final mask IoU {f['final_mask_iou']:.3f}"
            + (f"; converted/loaded in {f['prepare_s']:.0f} s" if f["plan"]["backend"] == "openvino" else ""))
