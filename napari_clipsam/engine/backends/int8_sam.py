"""INT8 SAM image encoder: NNCF post-training quantisation of the converted OpenVINO model (``sam_precision="int8"``).

Opt-in (``pip install "napari-clipsam[int8]"``, which adds ``nncf``; imported only when int8 is asked for). The
float32 OpenVINO model of SAM's image encoder is quantised once with ``nncf.quantize`` (8-bit weights and
activations of the matrix multiplications and convolutions, ``ModelType.TRANSFORMER`` so NNCF keeps softmax,
layer norms and GELU in floating point and applies SmoothQuant) and cached beside the other converted models.

**Calibration set** (:func:`calibration_images`, named :data:`CALIBRATION`): the project's synthetic
categories (metal, fabric, pcb, wood, part), for each one normal image and one with each of
:data:`CALIBRATION_DEFECTS`, :data:`CALIBRATION_SIZE` px, seeds fixed: 15 images, no network access and no
dataset needed. They go through the engine's own SAM input path (``SamRunner.prepare``: resize longest side,
normalise, pad), so the quantiser sees the activation ranges of real inputs of this encoder. Real images of
the user's product would be a better calibration set; these are what every machine has.

The cache key (:func:`int8_key_fields`) names everything that determines the quantised graph: on top of the
float32 model's key (architecture, weights, input, OpenVINO / torch versions, format) the IR precision
``"int8"``, the calibration set's name and the SHA-256 of its images, the NNCF settings and NNCF's version.
What is left in floating point runs in float32 (compile hint ``f32``) on every CPU, so an int8 result does not
depend on whether the CPU has bf16.
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

INSTALL_HINT = 'pip install "napari-clipsam[int8]"'
CALIBRATION = "synthetic-categories-v1"
"""Name of the calibration set (bump the suffix when :func:`calibration_images` changes)."""
CALIBRATION_SIZE = 512
"""Side of the calibration images in pixels (SAM resizes them to its input size)."""
CALIBRATION_DEFECTS = ("scratch", "hole")
"""The defects drawn into the calibration images (every category has them)."""
NNCF_SETTINGS = {"model_type": "transformer", "preset": "performance", "fast_bias_correction": True,
                 "overflow_fix": "enable"}
"""The ``nncf.quantize`` settings used (recorded in the cache key). ``overflow_fix`` "enable": weights of every
layer, not only the first, are kept to 7 bits so that CPUs without VNNI (AVX2 only), whose 8-bit dot products
add pairs into saturating 16-bit sums, compute the same products as VNNI ones (NNCF's documented remedy;
measured on an AVX2-only CPU: embedding cosine to float32 0.975 with the default, see docs/performance.md)."""
COMPILE_HINT = "float32"
"""Inference precision of the operations NNCF leaves in floating point."""
QUANTIZE_FACTOR = 4.0
"""Quantising (calibration inferences, bias correction) takes about this many times the float32 conversion."""


def nncf_available() -> bool:
    """True when ``nncf`` is installed (nothing is imported)."""
    return importlib.util.find_spec("nncf") is not None


def import_nncf():
    """``import nncf``, or a :class:`~napari_clipsam.errors.ConfigError` that says how to install it."""
    from ...errors import ConfigError

    if not nncf_available():
        raise ConfigError(f"ClipSAMConfig.sam_precision = 'int8' needs NNCF, which is not installed: {INSTALL_HINT} "
                          f"(or choose sam_precision 'auto', 'float32' or 'bfloat16').")
    import nncf

    return nncf


def nncf_version() -> str:
    return import_nncf().__version__


@lru_cache(maxsize=1)
def calibration_images() -> tuple[np.ndarray, ...]:
    """The calibration set (see the module docstring): ``(CALIBRATION_SIZE, CALIBRATION_SIZE, 3)`` uint8 RGB."""
    from ...data.synthetic import CATEGORIES, synthetic_image

    out = []
    for c, cat in enumerate(CATEGORIES):
        for d, defect in enumerate((None, *CALIBRATION_DEFECTS)):
            out.append(synthetic_image(cat, defect, size=CALIBRATION_SIZE, seed=1000 + 10 * c + d)[0])
    return tuple(out)


@lru_cache(maxsize=1)
def calibration_digest() -> str:
    """SHA-256 of the calibration images (their bytes in order)."""
    h = hashlib.sha256()
    for im in calibration_images():
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


def int8_key_fields() -> dict[str, Any]:
    """What an int8 model's cache key adds to the float32 model's (imports nncf for its version)."""
    return {"ir_precision": "int8", "calibration": CALIBRATION, "calibration_sha256": calibration_digest(),
            "calibration_images": len(calibration_images()), "nncf": nncf_version(), "nncf_settings": NNCF_SETTINGS}


def quantize(model, prepare: Callable[[np.ndarray], Any]):
    """The int8 ``openvino.Model`` of the float32 ``model`` (SAM's image encoder), calibrated on
    :func:`calibration_images` turned into encoder inputs by ``prepare(image) -> (1, 3, S, S)`` tensor/array."""
    nncf = import_nncf()
    inputs = [np.ascontiguousarray(_numpy(prepare(im)), np.float32) for im in calibration_images()]
    import logging

    quiet = [logging.getLogger(n) for n in ("nncf",)]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        return nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs),
                             model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.PERFORMANCE,
                             fast_bias_correction=NNCF_SETTINGS["fast_bias_correction"],
                             advanced_parameters=nncf.AdvancedQuantizationParameters(
                                 overflow_fix=nncf.OverflowFix.ENABLE))
    finally:
        for q, lv in zip(quiet, levels):
            q.setLevel(lv)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)
