"""UMCI checkpoints: the trained state dict plus everything needed to use it correctly later."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import IncompatibleCheckpointError, WeightsUnavailableError, error_gist
from ..io.atomic import atomic_file


FORMAT = "napari-clipsam-umci"
REQUIRED = ("state_dict", "hparams", "clip_model", "clip_weights", "image_size")
REQUIRED_HPARAMS = ("in_dim", "dim", "layers", "heads", "kernels", "temperature")


def save_umci(path: str | Path, umci, *, clip_model: str, clip_weights: str, image_size: int,
              prompt_set_hash: str, extra: dict | None = None) -> Path:
    """Write a UMCI checkpoint atomically (temp file in the same folder, then rename)."""
    from .._version import __version__

    path = Path(path)
    payload = {
        "format": FORMAT, "version": 1, "package_version": __version__,
        "state_dict": {k: v.detach().cpu() for k, v in umci.state_dict().items()},
        "hparams": umci.hparams(), "clip_model": clip_model, "clip_weights": clip_weights,
        "image_size": int(image_size), "prompt_set_hash": prompt_set_hash, **(extra or {}),
    }
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def read_umci(path: str | Path) -> dict:
    """Read a checkpoint dict (tensors on CPU); raises WeightsUnavailableError for a missing or foreign file."""
    path = Path(path).expanduser()
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsUnavailableError(f"UMCI checkpoint {path} is empty (0 bytes): an interrupted copy or training "
                                      "run? Copy it again or train a new one with `napari-clipsam train`.")
    if path.is_dir():
        raise WeightsUnavailableError(f"UMCI checkpoint {path} is a folder; give the checkpoint file (.pt) that "
                                      "`napari-clipsam train` wrote.")
    if not path.is_file():
        raise WeightsUnavailableError(f"UMCI checkpoint {path} does not exist. Train one with "
                                      "`napari-clipsam train` or leave the UMCI setting empty for the "
                                      "training-free rough map.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"UMCI checkpoint {path} could not be read as a PyTorch checkpoint "
                                      f"({type(exc).__name__}: {error_gist(exc)}); is it the .pt file "
                                      "`napari-clipsam train` wrote, copied completely?") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise WeightsUnavailableError(f"{path} is not a napari-clipsam UMCI checkpoint (no '{FORMAT}' marker).")
    missing = [k for k in REQUIRED if k not in ckpt]
    hparams = ckpt.get("hparams")
    if isinstance(hparams, dict):
        missing += [f"hparams.{k}" for k in REQUIRED_HPARAMS if k not in hparams]
    elif "hparams" not in missing:
        missing.append("hparams (not a dict)")
    if missing or not isinstance(ckpt.get("state_dict"), dict):
        raise WeightsUnavailableError(
            f"UMCI checkpoint {path} is incomplete: it lacks {', '.join(missing) or 'a state_dict dict'}. It was "
            "damaged or written by another program; train a new one with `napari-clipsam train`.")
    return ckpt


def check_compatible(ckpt: dict, path, *, clip_model: str, clip_weights: str, in_dim: int, dim: int) -> None:
    """Refuse a checkpoint trained on another CLIP (model name, weights, or feature widths)."""
    h = ckpt["hparams"]
    problems = []
    if ckpt["clip_model"] != clip_model:
        problems.append(f"it was trained on CLIP {ckpt['clip_model']!r}, the engine uses {clip_model!r}")
    if ckpt["clip_weights"] != clip_weights:
        problems.append(f"it was trained on CLIP weights {ckpt['clip_weights']!r}, the engine has {clip_weights!r}")
    if (h["in_dim"], h["dim"]) != (in_dim, dim):
        problems.append(f"its feature widths are {h['in_dim']}→{h['dim']}, this CLIP gives {in_dim}→{dim}")
    if problems:
        raise IncompatibleCheckpointError(
            f"UMCI checkpoint {path} does not fit this engine: " + "; ".join(problems)
            + ". Use the CLIP model and weights it was trained with, or train a new one.")


def usage_mismatches(ckpt: dict, config) -> list[str]:
    """How ``config`` uses a checkpoint differently from how it was trained (image size, text prompt set).

    Neither stops UMCI from running, but both move its inputs away from what it learned: the engine warns and
    records them in every result's provenance.
    """
    out = []
    size = ckpt.get("image_size")
    if size is not None and int(size) != int(config.image_size):
        out.append(f"it was trained at {size} px and the engine runs CLIP at {config.image_size} px "
                   f"(set image_size={size} to match)")
    trained = ckpt.get("prompt_set_hash")
    if trained is not None and trained != config.prompt_set_hash():
        out.append("it was trained with another text prompt set (states/templates) than the engine's")
    return out
