"""Who the engine is: its device, its models' identity (recorded in provenance, part of every cache key), how its
config meets the models it was given, and the stamp of a SAM's embeddings."""
from __future__ import annotations

import dataclasses
import uuid
import warnings
from typing import Any

import torch

from ..errors import ConfigError

MODEL_FIXED_FIELDS = ("image_size", "feature_layers")
"""Config fields the models themselves fix: CLIP's input size and a UMCI head's feature layers."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def complete_identity(identity: dict[str, Any] | None, clip_model, sam_model, umci) -> dict[str, Any]:
    """The engine's model identity (recorded in provenance, part of cache keys): ``identity`` as given, with only
    what it lacks filled in. Weights given no identity (models built in memory) get a content fingerprint
    (:func:`~napari_clipsam.clip.text_encoder.weights_fingerprint`, computed on the model's device); weights
    the loader identified (a file's SHA-256, an official checkpoint, a tag, ``random``) are never hashed again.
    ``clip_architecture`` / ``sam_architecture`` hash each model's module tree
    (:func:`~napari_clipsam.io.cache_files.architecture_fingerprint`): with the weights id they key every cache, so
    two models with the same weights but another architecture (QuickGELU vs GELU) never share cached results."""
    from ..clip.text_encoder import weights_fingerprint
    from ..io.cache_files import architecture_fingerprint

    out = dict(identity or {})
    out.setdefault("clip_model", type(clip_model).__name__)
    out.setdefault("sam_model", "custom")
    out.setdefault("clip_architecture", architecture_fingerprint(clip_model))
    out.setdefault("sam_architecture", architecture_fingerprint(sam_model))
    for key, module in (("clip_weights", clip_model), ("sam_weights", sam_model), ("umci_weights", umci)):
        if key not in out:
            out[key] = None if module is None else "fingerprint:" + weights_fingerprint(module)
    return out


def fit_config_to_models(config, model_values: dict[str, Any], why: dict[str, str] | None = None):
    """``(config, replaced)``: ``config`` made to agree with what the models fix (:data:`MODEL_FIXED_FIELDS`,
    ``model_values``: field → the models' value, e.g. ``{"image_size": 224, "feature_layers": (3, 6, 9, 12)}``).

    A field at the default config's value was not chosen: it is replaced by the models' value, with a
    ``UserWarning``, and ``replaced`` (field → ``{"config": old, "model": new}``) is recorded in every result's
    provenance (``config_replaced``). A field set to anything else that contradicts the models raises
    :class:`~napari_clipsam.errors.ConfigError`: the caller asked for a value these models cannot give. (A value
    equal to the default counts as not chosen: a config cannot tell an explicit default from an implicit one.)
    ``why``: field → the reason shown in messages where it is not the usual one.
    """
    why = {**_WHY, **(why or {})}
    defaults = type(config)()
    replaced: dict[str, dict[str, Any]] = {}
    for name, model_value in model_values.items():
        value = getattr(config, name)
        if value == model_value:
            continue
        if value != getattr(defaults, name):
            raise ConfigError(
                f"ClipSAMConfig.{name} = {value!r} contradicts the models given: they fix it to {model_value!r} "
                f"({why[name]}). Set {name}={model_value!r}, leave it at its default to follow the models, or give "
                "models built for it.")
        replaced[name] = {"config": _plain(value), "model": _plain(model_value)}
    if replaced:
        warnings.warn("The engine's config was changed to fit its models: " + "; ".join(
            f"{k} {v['config']} → {v['model']} ({why[k]})" for k, v in replaced.items())
            + ". Recorded in each result's provenance as config_replaced.", UserWarning, stacklevel=3)
        config = dataclasses.replace(config, **{k: model_values[k] for k in replaced})
    return config, replaced


_WHY = {"image_size": "the CLIP model's input size", "feature_layers": "the layers the UMCI head was built for"}
_WHY_DEPTH = "the CLIP vision tower's depth"


def layers_for_depth(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """``layers`` when a CLIP vision tower of ``depth`` blocks has them all, else as many blocks spread evenly over
    its depth as ``layers`` names, ending at the last one: ``(6, 12, 18, 24)`` → ``(3, 6, 9, 12)`` for 12 blocks,
    ``(1, 2, 3, 4)`` for 4. For an engine without a UMCI head (whose layers the head fixes) the default layers
    then fit any CLIP, e.g. the tiny test models or a ViT-B, in the few-shot and folder modes too."""
    layers = tuple(int(i) for i in layers)
    if all(1 <= i <= depth for i in layers) or depth < 1:
        return layers
    n = min(len(layers), depth)
    return tuple(sorted({max(1, round(depth * (k + 1) / n)) for k in range(n)}))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def sam_identity(identity: dict[str, Any], device: torch.device, dtype: str, backend: str = "torch") -> str:
    """The stamp of a SAM's embeddings: model (with its architecture hash), weights, device, precision and
    backend (``torch`` or e.g. ``openvino-bfloat16``). Weights that are not identified by content (``random``)
    get a token unique to this engine, as two random SAMs differ."""
    weights = str(identity.get("sam_weights"))
    if weights in ("random", "None", ""):
        weights = f"{weights}#{uuid.uuid4().hex[:12]}"
    arch = identity.get("sam_architecture")
    model = f"{identity.get('sam_model')}" + (f"@arch:{arch}" if arch else "")
    return f"{model}/{weights}/{device}/{dtype}/{backend}"


def on_cpu(module) -> bool:
    return next(module.parameters()).device.type == "cpu"
