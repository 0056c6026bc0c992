"""``clip_precision="auto"``: the rule (decided from the CPU's flags and the documented measurements, never from
timing), and the chosen precision reaching provenance and the cache keys."""
from __future__ import annotations

import pytest

from napari_clipsam.engine.backends.clip_bf16 import (BOUNDS, MEASURED, architecture_name, auto_clip_precision,
                                                      within_bounds)
from napari_clipsam.engine.backends.cpu_features import features_from_cpuinfo

AMX = features_from_cpuinfo("model name\t: Xeon\nflags\t\t: fpu avx512f amx_tile amx_bf16 avx512_bf16\n")
NO_BF16 = features_from_cpuinfo("model name\t: Old\nflags\t\t: fpu avx2 avx512f\n")


def _at_bounds(**changes):
    return {**BOUNDS, **changes}


def test_bounds_are_inclusive_and_name_what_fails():
    assert within_bounds(_at_bounds()) == (True, "")
    ok, why = within_bounds(_at_bounds(map_corr_min=0.95, auroc_drop_max=0.02))
    assert not ok and "map_corr_min 0.95" in why and "auroc_drop_max 0.02" in why and "≥ 0.999" in why
    ok, why = within_bounds({k: v for k, v in BOUNDS.items() if k != "feature_cos_min"})
    assert not ok and "feature_cos_min None" in why  # a missing figure never passes


@pytest.mark.parametrize("name,arch", [("ViT-L-14-336-quickgelu", "ViT-L-14-336"), ("ViT-B-16", "ViT-B-16"),
                                       ("local-dir:/x/clip", ""), ("hf-hub:org/model", ""), (None, "")])
def test_architecture_name(name, arch):
    assert architecture_name(name) == arch


def test_auto_rule():
    good = {"ViT-B-16": _at_bounds(), "ViT-L-14": _at_bounds(mask_iou_pooled_min=0.5)}
    assert auto_clip_precision("ViT-B-16-quickgelu", AMX, good)[0] == "bfloat16"
    prec, why = auto_clip_precision("ViT-B-16", NO_BF16, good)
    assert prec == "float32" and "no native bf16" in why  # never emulated bf16, whatever was measured
    prec, why = auto_clip_precision("ViT-L-14", AMX, good)
    assert prec == "float32" and "mask_iou_pooled_min 0.5" in why
    prec, why = auto_clip_precision("local-dir:/models/clip", AMX, good)
    assert prec == "float32" and "no bf16 measurement" in why
    assert auto_clip_precision("ViT-H-14", AMX, {})[0] == "float32"


def test_measured_table_matches_its_own_rule():
    """Every architecture the table lists carries every bounded figure and where it was measured."""
    for arch, fig in MEASURED.items():
        assert set(BOUNDS) <= set(fig) and fig.get("measured"), arch
        assert auto_clip_precision(arch, AMX)[0] == ("bfloat16" if within_bounds(fig)[0] else "float32")


def test_chosen_precision_is_in_the_plan_provenance_and_cache_keys(tmp_path):
    from napari_clipsam.engine.backends.openvino_runtime import openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'")
    from napari_clipsam.clip.references import bank_cache_path
    from napari_clipsam.engine.backends import detect_cpu, resolve_clip_precision
    from napari_clipsam.testing import tiny_engine

    engines = {p: tiny_engine(backend="openvino", clip_precision=p) for p in ("auto", "float32", "bfloat16")}
    expected, why = resolve_clip_precision(engines["auto"].config, detect_cpu())
    plan = engines["auto"].backend.plan
    assert plan.clip_precision == expected and why in plan.reason
    assert engines["auto"].vision.tower.precision == expected  # what runs is what is recorded
    for p, eng in engines.items():
        prov = eng.provenance("part")["encoders"]
        assert prov["clip_precision"] == (expected if p == "auto" else p) and prov["backend"] == "openvino"
    keys = {p: bank_cache_path(tmp_path, eng.identity, eng.config, ["r"]) for p, eng in engines.items()}
    assert keys["float32"] != keys["bfloat16"]
    assert keys["auto"] == keys[expected]  # the resolved precision names the bank, not the word "auto"
