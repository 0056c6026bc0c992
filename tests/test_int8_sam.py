"""INT8 SAM image encoder (NNCF post-training quantisation, ``sam_precision="int8"``) on the tiny SAM."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nncf") is None or
                                importlib.util.find_spec("openvino") is None,
                                reason='int8 needs NNCF and OpenVINO: pip install "napari-clipsam[int8]"')

INT8_MASK_IOU_MIN = 0.93
"""Bound on every multimask output of the fixed prompts of the tiny random SAM (measured: metal 0.962 min, 0.989 mean; pcb 0.949 min;
docs/performance.md has vit_b's)."""
INT8_MASK_IOU_MEAN = 0.97


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from napari_clipsam.testing import tiny_engine

    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("ov-cache")
        mp.setenv("NAPARI_CLIPSAM_CACHE", str(folder))
        ref = tiny_engine(seed=0)
        out = {"torch": ref, "cache": folder / "openvino"}
        for prec in ("float32", "int8"):
            eng = tiny_engine(seed=0, backend="openvino", sam_precision=prec, clip_precision="float32")
            eng.backend.prepare()
            out[prec] = eng
        yield out


@pytest.mark.slow  # NNCF quantisation of the tiny SAM (~20 s); int8 is opt-in
def test_int8_masks_match_float32_through_the_engine(engines):
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.engine.backends.fidelity import cosine, sam_mask_ious

    ref, q = engines["torch"], engines["int8"]
    assert q.backend.plan.sam_precision == "int8" and q.sam.encoder is not None
    for cat in ("metal", "pcb"):
        image = synthetic_image(cat, "scratch", size=96, seed=3)[0]
        e_ref, e_q = ref.sam.embed(image), q.sam.embed(image)
        assert e_q.features.shape == e_ref.features.shape
        assert not np.array_equal(e_q.features.numpy(), e_ref.features.numpy())  # it is quantised, not fp32
        assert cosine(e_q.features, e_ref.features) >= 0.999
        ious = sam_mask_ious(q.sam, e_q, ref.sam, e_ref, image.shape[:2])
        assert min(ious) >= INT8_MASK_IOU_MIN and np.mean(ious) >= INT8_MASK_IOU_MEAN, ious
    result = q.segment(image, "plate")
    assert result.provenance["encoders"]["sam_precision"] == "int8"
    assert result.sam_id.endswith("/openvino-int8")


@pytest.mark.slow  # needs the quantised model of the test above
def test_int8_cache_key_names_calibration_and_nncf_and_differs_from_float32(engines):
    from napari_clipsam.engine.backends import int8_sam

    fields = int8_sam.int8_key_fields()
    assert fields["ir_precision"] == "int8" and fields["calibration"] == int8_sam.CALIBRATION
    assert fields["nncf"] and len(fields["calibration_sha256"]) == 64 and fields["calibration_images"] == 15
    import json

    root = engines["cache"]
    metas = [json.loads(m.read_text())["fields"] for m in root.glob("*/manifest.json")]
    sam = [m for m in metas if m.get("encoder") == "sam_image_encoder"]
    assert sorted(m["ir_precision"] for m in sam) == ["f32", "int8"], sam  # two entries: fp32 (bf16's too), int8
    q = next(m for m in sam if m["ir_precision"] == "int8")
    assert q["calibration_sha256"] == fields["calibration_sha256"] and q["nncf"] == fields["nncf"]


def test_int8_needs_openvino_backend():
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.errors import ConfigError

    with pytest.raises(ConfigError, match="int8 runs on OpenVINO"):
        ClipSAMConfig(backend="torch", sam_precision="int8")
    with pytest.raises(ConfigError, match="clip_precision"):
        ClipSAMConfig(backend="openvino", clip_precision="int8")
