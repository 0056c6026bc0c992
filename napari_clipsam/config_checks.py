"""What every :class:`~napari_clipsam.config.ClipSAMConfig` field accepts, checked when a config is built.

:func:`check_config` converts the harmless spellings (a list for a tuple, an integer for a float, a path object
for a weights path) and refuses everything else with a :class:`~napari_clipsam.errors.ConfigError` that names the
field, the value given and what is accepted, e.g.::

    ConfigError: ClipSAMConfig.alpha = 7: expected a number from 0 to 1.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import string
from typing import Any

from .errors import ConfigError


# The choice lists: every other module (CLI choices, widget settings, backends) takes them from here.
LEVELS = ("point", "box", "box+point")
SAM_MODELS = ("vit_b", "vit_l", "vit_h")
DTYPES = ("float32", "bfloat16")
BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "float32", "bfloat16")
SAM_CROPS = ("auto", "on", "off")
SAM_PRECISIONS = PRECISIONS + ("int8",)
"""``sam_precision`` may also be ``"int8"`` (NNCF post-training quantisation, opt-in: engine/backends/int8_sam)."""
DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N' (N = GPU index)"

# field → (lowest, highest) for integers (None = unbounded above)
INT_RANGES: dict[str, tuple[int, int | None]] = {
    "image_size": (14, 2048), "umci_heads": (1, 64), "opening_size": (0, 99), "min_component_px": (0, None),
    "max_components": (1, 1000), "cache_bytes": (0, None), "embedding_cache_bytes": (0, None),
    "feature_cache_bytes": (0, None), "sam_attention_bands": (1, 64),
    "fewshot_bank_size": (1, None), "fewshot_neighbourhood": (1, 99),
    "mutual_subset_size": (1, 4096), "mutual_min_images": (2, None),
}
# field → (lowest, highest, lowest excluded)
FLOAT_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.0, 100.0, True), "rough_sigma": (0.0, 100.0, False), "box_growth": (0.0, 10.0, False),
    "sam_crop_context": (0.0, 10.0, False),
    **{name: (0.0, 1.0, False) for name in ("prompt_threshold", "min_component_frac", "min_predicted_iou",
                                            "max_outside_box", "alpha", "mask_threshold", "fewshot_weight",
                                            "mutual_interval", "mutual_image_top",
                                            "mutual_calibration_quantile")},
    **{name: (0.0, 100.0, False) for name in ("mutual_weight", "mutual_clip_weight", "mutual_fewshot_weight")},
    "mutual_calibration_ratio": (0.0, 10.0, True),
}
BOOLS = ("text_cache", "negative_points", "embed_without_prompts", "fewshot_augment", "keep_patch_tokens")
WEIGHT_PATHS = ("clip_weights", "sam_weights", "umci_weights")
PHRASE_LISTS = ("normal_states", "abnormal_states", "templates")


def _fail(name: str, value: Any, accepted: str) -> None:
    raise ConfigError(f"ClipSAMConfig.{name} = {value!r}: expected {accepted}.")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int_tuple(cfg, name: str, low: int, high: int, allow_empty: bool) -> None:
    value = getattr(cfg, name)
    what = f"a list of whole numbers from {low} to {high}{'' if allow_empty else ' (at least one)'}, without repeats"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        _fail(name, value, what)
    if not all(_is_int(v) and low <= v <= high for v in value) or len(set(value)) != len(value) \
            or (not value and not allow_empty):
        _fail(name, value, what)
    object.__setattr__(cfg, name, tuple(int(v) for v in value))


def _check_phrase(name: str, phrase: Any) -> None:
    """A state or template must hold exactly one empty ``{}`` field (where the object / state goes)."""
    what = "non-empty text with exactly one '{}' where the " + ("object description" if name.startswith("templates")
                                                                else "object name") + " goes (write '{{' for a brace)"
    if not isinstance(phrase, str) or not phrase.strip():
        _fail(name, phrase, what)
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(phrase) if f is not None]
    except ValueError:
        _fail(name, phrase, what)
    if fields != [("", "", None)]:
        _fail(name, phrase, what)


def check_device(name: str, device: Any) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a CUDA device only where torch sees that GPU."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        _fail(name, device, DEVICES)
    if device.startswith("cuda"):
        import torch  # only for a CUDA setting: a plain config stays light

        if not torch.cuda.is_available():
            _fail(name, device, f"{DEVICES}; this machine has no CUDA GPU that torch can use, so choose "
                                "'cpu' or 'auto'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            _fail(name, device, f"a GPU index below {torch.cuda.device_count()} (the GPUs torch sees)")


def check_backend(cfg) -> None:
    """``backend`` and the two encoder precisions; ``"openvino"`` only where OpenVINO is installed (looked up,
    not imported) and not with a CUDA device (OpenVINO runs the encoders on the CPU)."""
    if cfg.backend not in BACKENDS:
        _fail("backend", cfg.backend, " or ".join(map(repr, BACKENDS)))
    for name, choices in (("sam_precision", SAM_PRECISIONS), ("clip_precision", PRECISIONS)):
        if getattr(cfg, name) not in choices:
            _fail(name, getattr(cfg, name), " or ".join(map(repr, choices)))
    if cfg.sam_decoder_backend not in ("torch", "openvino"):
        _fail("sam_decoder_backend", cfg.sam_decoder_backend, "'torch' or 'openvino'")
    if cfg.sam_decoder_backend == "openvino" and cfg.backend == "torch":
        _fail("sam_decoder_backend", cfg.sam_decoder_backend, "'torch' with backend 'torch' (the OpenVINO decoder "
                                                               "runs beside OpenVINO encoders: backend 'openvino' or 'auto')")
    if cfg.sam_precision == "int8":
        import importlib.util

        if cfg.backend == "torch":
            _fail("sam_precision", cfg.sam_precision, "'auto', 'float32' or 'bfloat16' with backend 'torch' (int8 "
                                                      "runs on OpenVINO: choose backend 'openvino' or 'auto')")
        if importlib.util.find_spec("nncf") is None:
            _fail("sam_precision", cfg.sam_precision, "'auto', 'float32' or 'bfloat16': int8 needs NNCF, which is "
                                                      "not installed (pip install \"napari-clipsam[int8]\")")
    if cfg.backend == "openvino":
        import importlib.util

        if isinstance(cfg.device, str) and cfg.device.startswith("cuda"):
            _fail("backend", cfg.backend, "'auto' or 'torch' with a CUDA device ('openvino' runs the encoders on "
                                          "the CPU; choose device 'cpu' for it)")
        if importlib.util.find_spec("openvino") is None:
            _fail("backend", cfg.backend, "'auto' or 'torch': OpenVINO is not installed (install it with "
                                          "pip install \"napari-clipsam[openvino]\")")


def check_config(cfg) -> None:
    """Validate and normalise every field of ``cfg`` in place; raises ConfigError at the first bad field."""
    for name, (low, high) in INT_RANGES.items():
        v = getattr(cfg, name)
        if not _is_int(v) or v < low or (high is not None and v > high):
            _fail(name, v, f"a whole number from {low}" + (f" to {high}" if high is not None else " up"))
        object.__setattr__(cfg, name, int(v))
    for name, (low, high, open_low) in FLOAT_RANGES.items():
        v = getattr(cfg, name)
        ok = _is_real(v) and math.isfinite(v) and (low < v if open_low else low <= v) and v <= high
        if not ok:
            _fail(name, v, f"a number {'above' if open_low else 'from'} {low:g} {'and up ' if open_low else ''}"
                           f"to {high:g}")
        object.__setattr__(cfg, name, float(v))
    for name in BOOLS:
        v = getattr(cfg, name)
        if not isinstance(v, bool):
            _fail(name, v, "True or False")
    for name in WEIGHT_PATHS:
        v = getattr(cfg, name)
        if isinstance(v, os.PathLike):
            object.__setattr__(cfg, name, v := os.fspath(v))
        if v is not None and (not isinstance(v, str) or not v.strip()):
            _fail(name, v, "None, a non-empty file path or a weights tag")
    if not isinstance(cfg.clip_model, str) or not cfg.clip_model.strip() or cfg.clip_model == "local-dir:":
        _fail("clip_model", cfg.clip_model, "an open_clip architecture name or local-dir:/folder")
    _int_tuple(cfg, "feature_layers", 1, 1000, allow_empty=False)
    _int_tuple(cfg, "umci_scale_kernels", 1, 1000, allow_empty=True)
    for name in PHRASE_LISTS:
        value = getattr(cfg, name)
        if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
            _fail(name, value, "a non-empty list of phrases, each with one '{}'")
        for i, phrase in enumerate(value):
            _check_phrase(f"{name}[{i}]", phrase)
        object.__setattr__(cfg, name, tuple(value))
    levels = cfg.levels
    if isinstance(levels, str) or not isinstance(levels, (tuple, list)) or not levels \
            or not all(isinstance(lv, str) and lv in LEVELS for lv in levels) or len(set(levels)) != len(levels):
        _fail("levels", levels, f"a non-empty list of distinct levels among {', '.join(map(repr, LEVELS))}")
    object.__setattr__(cfg, "levels", tuple(levels))
    sam = cfg.sam_model
    if not isinstance(sam, str) or not (sam in SAM_MODELS or (sam.startswith("local-dir:") and len(sam) > 10)):
        _fail("sam_model", sam, "'vit_b', 'vit_l', 'vit_h' or 'local-dir:/folder'")
    if cfg.dtype not in DTYPES:
        _fail("dtype", cfg.dtype, " or ".join(map(repr, DTYPES)))
    check_backend(cfg)
    b = cfg.decoder_batch_size
    if b is not None and (not _is_int(b) or b < 1):
        _fail("decoder_batch_size", b, "None (automatic) or a whole number from 1 up")
    check_device("device", cfg.device)
    check_mutual(cfg)
    check_tiling(cfg.tiling)
    if cfg.sam_crops not in SAM_CROPS:
        _fail("sam_crops", cfg.sam_crops, " or ".join(map(repr, SAM_CROPS)))


def check_tiling(value: Any) -> None:
    """``tiling``: ``"auto"``, ``"off"`` or a tile side in image pixels (a whole number from 32 up)."""
    ok = value in ("auto", "off") if isinstance(value, str) else _is_int(value) and value >= 32
    if not ok:
        _fail("tiling", value, "'auto', 'off' or a tile side in image pixels (a whole number from 32 up)")


#: How ``mutual_window`` is used (config.py's ``mutual_window_mode``).
WINDOW_MODES = ("only", "max", "mean")
#: Which map a folder's image scores come from (config.py's ``mutual_image_score``).
IMAGE_SCORES = ("auto", "mutual", "fused")


def check_mutual(cfg) -> None:
    """The folder mutual-scoring fields that are not plain numbers: odd radii, optional windows, an interval
    above 0 and fusion weights that leave the mutual map or the CLIP map in."""
    _int_tuple(cfg, "mutual_radii", 1, 99, allow_empty=False)
    if any(r % 2 == 0 for r in cfg.mutual_radii):
        _fail("mutual_radii", cfg.mutual_radii, "odd neighbourhood sides (1, 3, 5, ...), without repeats")
    w = cfg.mutual_window
    if w is not None and (not _is_int(w) or not 0 <= w <= 1000):
        _fail("mutual_window", w, "None (compare everywhere) or a whole number of grid cells from 0 to 1000")
    w = cfg.mutual_image_window
    if w is not None and (not _is_int(w) or not 0 <= w <= 1000):
        _fail("mutual_image_window", w, "None (the rough map's image score alone) or a whole number of grid cells "
                                        "from 0 to 1000")
    if cfg.mutual_image_top >= 1.0:  # a number from 0 to 1 already (FLOAT_RANGES)
        _fail("mutual_image_top", cfg.mutual_image_top, "a fraction from 0 (the maximum) up to, not including, 1")
    if cfg.mutual_window_mode not in WINDOW_MODES:
        _fail("mutual_window_mode", cfg.mutual_window_mode, " or ".join(map(repr, WINDOW_MODES)))
    if cfg.mutual_image_score not in IMAGE_SCORES:
        _fail("mutual_image_score", cfg.mutual_image_score, " or ".join(map(repr, IMAGE_SCORES)))
    if cfg.mutual_precision not in PRECISIONS:
        _fail("mutual_precision", cfg.mutual_precision, " or ".join(map(repr, PRECISIONS)))
    if cfg.mutual_interval <= 0.0:
        _fail("mutual_interval", cfg.mutual_interval, "a fraction above 0 and up to 1 (0.3: the smallest 30 %)")
    if cfg.mutual_weight + cfg.mutual_clip_weight <= 0.0:
        _fail("mutual_weight", cfg.mutual_weight, "a weight above 0 for the mutual map or the CLIP map "
                                                   "(mutual_clip_weight); both 0 leaves nothing to fuse")
