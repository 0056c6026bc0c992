"""Load the frozen models from real weights: CLIP through open_clip, SAM from Meta's checkpoints.

Both loaders return what the engine needs plus an identity (``model_id``, ``weights_id``) recorded in
every result's provenance and used as cache keys.
"""
from __future__ import annotations

import hashlib

import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import WeightsUnavailableError, error_gist
from ..io.verified import sha256_memoised
from .download import fetch
from .registry import CLIP_CHECKPOINTS, SAM_CHECKPOINTS, WeightsFile, cache_dir
from .tiny import seeded

log = logging.getLogger(__name__)
RANDOM = "random"
RANDOM_SEED = 0
"""``"random"`` weights are drawn from this seed (torch's RNG forked, so callers' RNG is untouched): the same
every run, so what is keyed by their content (converted OpenVINO models, embeddings) is found again by the
next benchmark run instead of being converted and stored once more."""


def file_id(path: str | Path) -> str:
    """``sha256:<hex>`` of a local weights file (hashed once per version of the file, io/verified.py; the memo
    is kept in the cache, not beside the user's file)."""
    return "sha256:" + sha256_memoised(path, memo_dir=cache_dir() / "verified")


def load_clip(config, device="cpu", progress: Callable[[str, float], None] | None = None, cancelled=None):
    """Build the CLIP model of ``config`` with QuickGELU where its weights need it.

    ``config.clip_weights``: an open_clip tag (``"openai"``, downloaded once into the cache), a local
    checkpoint file, ``"random"``/None (architecture only, for benchmarks), ignored for ``local-dir:`` names.
    Returns ``(model, tokenizer, model_id, weights_id)``.
    """
    import open_clip

    name, weights = config.clip_model, config.clip_weights
    model_id = name
    kwargs = dict(force_image_size=config.image_size, device=device)
    if progress:
        progress("loading CLIP", 0.0)
    if name.startswith("local-dir:"):
        folder = Path(name.split(":", 1)[1])
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(
                f"CLIP folder {folder} has no open_clip_config.json. A 'local-dir:' model is a folder holding "
                "open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin).")
        weight_files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        if not weight_files:
            raise WeightsUnavailableError(f"CLIP folder {folder} holds no weights file (.safetensors/.bin/.pt).")
        model = (_create_loaded(open_clip, name, weight_files[0], kwargs, where=str(folder))
                 if len(weight_files) == 1 else _create(open_clip, name, None, kwargs, where=str(folder)))
        weights_id = file_id(weight_files[0])
        # identified by content, not by where the folder is: moving it keeps UMCI checkpoints and caches valid
        config_hash = hashlib.sha256((folder / "open_clip_config.json").read_bytes()).hexdigest()[:16]
        model_id = f"local-dir:config-{config_hash}"
    elif weights in (None, RANDOM):
        with seeded(RANDOM_SEED):  # the same "random" weights every run: converted models stay cached
            model = open_clip.create_model(name, pretrained=None, **kwargs)
        weights_id = RANDOM
    elif _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"CLIP weights file {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}. Give the path of an open_clip/OpenAI checkpoint for "
                f"{name}, or an open_clip tag such as 'openai'.")
        model = _create_loaded(open_clip, name, path, kwargs, where=str(path))
        weights_id = file_id(path)
    elif (name, weights) in CLIP_CHECKPOINTS:  # the default CLIP: our own checksummed download / offline place
        spec = CLIP_CHECKPOINTS[(name, weights)]
        path = fetch(spec, cache_dir() / "clip", progress=progress, cancelled=cancelled)
        # OpenAI ships TorchScript archives; this file's SHA-256 was verified, so it may be unpickled
        model = _create_loaded(open_clip, name, path, kwargs, where=str(path), weights_only=False,
                               damaged=f"{spec.name} weights {path} could not be loaded into {name}: " + "{exc}. "
                                       "Delete the file and download it again.")
        weights_id = weights
    else:
        cfg = open_clip.get_pretrained_cfg(name, weights)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise WeightsUnavailableError(f"open_clip has no weights tagged {weights!r} for {name}; known tags: "
                                          f"{tags}. Or give the path of a local checkpoint file.")
        model = _create(open_clip, name, weights, kwargs, where=str(cache_dir() / "clip"),
                        url=cfg.get("url") or f"https://huggingface.co/{cfg.get('hf_hub', '').rstrip('/')}")
        weights_id = weights
    model.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    if progress:
        progress("loading CLIP", 1.0)
    return model, tokenizer, model_id, weights_id


def downloads_needed(config) -> list[tuple[WeightsFile, Path]]:
    """The official files ``config`` needs that are not in the cache yet: ``[(file, where it goes), ...]``."""
    wanted = []
    if (config.clip_model, config.clip_weights) in CLIP_CHECKPOINTS:
        wanted.append((CLIP_CHECKPOINTS[(config.clip_model, config.clip_weights)], cache_dir() / "clip"))
    if config.sam_weights is None and config.sam_model in SAM_CHECKPOINTS:
        wanted.append((SAM_CHECKPOINTS[config.sam_model], cache_dir() / "sam"))
    return [(spec, folder) for spec, folder in wanted if not (folder / spec.filename).is_file()]


def fetch_all(config, progress: Callable[[str, float], None] | None = None, cancelled=None) -> None:
    """Download every missing official file ``config`` needs, trying each; when any cannot be had, raise one
    :class:`WeightsUnavailableError` listing **all** of them with URL, SHA-256 and the exact path to place it."""
    failed = []
    for spec, folder in downloads_needed(config):
        try:
            fetch(spec, folder, progress=progress, cancelled=cancelled)
        except WeightsUnavailableError as exc:
            failed.append((spec, folder, exc))
    if failed:
        lines = [f"- {spec.name}: download {spec.url}\n  SHA-256 {spec.sha256}\n  place it at "
                 f"{folder / spec.filename}\n  (failed: {str(exc).split('. ')[0]})" for spec, folder, exc in failed]
        raise WeightsUnavailableError(
            f"{len(failed)} model file(s) could not be downloaded:\n" + "\n".join(lines) + "\nOn a machine with "
            "internet access, download each file, check its SHA-256 and copy it to the path shown (set "
            "NAPARI_CLIPSAM_CACHE to use another folder), or choose local files as the CLIP / SAM weights.")


def _looks_like_path(weights: str) -> bool:
    p = Path(weights).expanduser()
    return p.exists() or "/" in weights or "\\" in weights or p.suffix in (".pt", ".pth", ".bin", ".safetensors")


def _no_weights_note(record: logging.LogRecord) -> bool:
    """A logging filter: False for open_clip's "No pretrained weights loaded ..." record."""
    return not str(record.msg).startswith("No pretrained weights loaded")


def _create_loaded(open_clip, name: str, checkpoint: Path, kwargs, where: str, weights_only: bool = True,
                   damaged: str | None = None):
    """``name`` with the weights of ``checkpoint`` (open_clip's ``load_checkpoint``, strict), built without
    open_clip's random initialisation, which the checkpoint overwrites anyway (ViT-L/14@336: 3–4 s of every
    engine load on 2 cores): the modules are made on torch's ``meta`` device, given uninitialised memory
    (``to_empty``), then every parameter and persistent buffer is loaded. A non-persistent buffer is not in a
    checkpoint: the one CLIP has, the text tower's causal mask (``attn_mask``, context × context), is made again
    here; an architecture with any other is built the ordinary way. The result equals ``create_model`` + the same
    ``load_checkpoint`` tensor for tensor (tested). ``damaged``: the message (``{exc}`` filled in) when the
    checkpoint does not load; default: the loader's usual one."""
    import torch

    quick = "quickgelu" in name
    root = logging.getLogger()
    root.addFilter(_no_weights_note)  # open_clip logs "initialized randomly" for a bare build; the weights follow
    try:
        with torch.device("meta"):
            model = _create(open_clip, name, None, dict(kwargs, device="meta"), where=where, load_weights=False)
        unsaved = {n for n, _ in model.named_buffers()} - set(model.state_dict())
        side = getattr(model, "context_length", None)
        if unsaved - {"attn_mask"} or (unsaved and tuple(model.attn_mask.shape) != (side, side)):
            log.debug("CLIP %s built with random initialisation: buffers no checkpoint holds: %s", name,
                      sorted(unsaved))
            model, unsaved = _create(open_clip, name, None, kwargs, where=where, load_weights=False), set()
        else:
            log.debug("CLIP %s built without random initialisation", name)
            model = model.to_empty(device=kwargs.get("device", "cpu"))
    finally:
        root.removeFilter(_no_weights_note)
    try:
        open_clip.load_checkpoint(model, str(checkpoint), strict=True, weights_only=weights_only)
    except Exception as exc:
        raise WeightsUnavailableError(
            damaged.replace("{exc}", error_gist(exc)) if damaged else
            f"Could not load CLIP {name} weights {checkpoint} (looked in {where}): {error_gist(exc)}. Give an "
            f"open_clip/OpenAI checkpoint of {name}{' (QuickGELU)' if quick else ''}.") from exc
    if "attn_mask" in unsaved:  # open_clip's causal mask: -inf above the diagonal, 0 elsewhere (tested equal)
        model.attn_mask = torch.full_like(model.attn_mask, float("-inf")).triu_(1)
    return model


def _create(open_clip, name, pretrained, kwargs, where: str, url: str | None = None, load_weights: bool = True):
    quick = "quickgelu" in name or pretrained == "openai"
    try:
        return open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick, load_weights=load_weights,
                                      cache_dir=str(cache_dir() / "clip"), **kwargs)
    except Exception as exc:  # open_clip raises RuntimeError/OSError/ValueError for every failure
        hint = (f" Download it from {url} on a machine with internet access and pass the file as the CLIP weights "
                "setting (or copy open_clip's cache folder)." if url else "")
        raise WeightsUnavailableError(
            f"Could not load CLIP {name} weights {pretrained or ''} (looked in {where}): {error_gist(exc)}."
            f"{hint}") from exc


def load_sam(config, device="cpu", progress: Callable[[str, float], None] | None = None, cancelled=None):
    """Build SAM from ``config.sam_model`` (``vit_b``/``vit_l``/``vit_h``, or ``local-dir:/folder`` with
    ``sam_config.json`` + ``sam.pth``) and ``config.sam_weights``: a local file, ``"random"`` (architecture only,
    for benchmarks), or None: Meta's official checkpoint, downloaded once into ``<cache>/sam`` and verified.
    Returns ``(sam, weights_id)``."""
    import torch

    from .sam_arch import OFFICIAL, build_sam, load_checkpoint, read_local_dir

    kind, weights = config.sam_model, config.sam_weights
    if kind.startswith("local-dir:"):
        folder = Path(kind.split(":", 1)[1]).expanduser()
        arch, path = read_local_dir(folder)
        what, url = f"the SAM in {folder}", None
    else:
        arch, spec = OFFICIAL[kind], SAM_CHECKPOINTS[kind]
        what, url = f"Meta's {kind} checkpoint", spec.url
        if weights == RANDOM:
            with seeded(RANDOM_SEED):
                return build_sam(arch).to(device), RANDOM
        if weights is None:
            path = fetch(spec, cache_dir() / "sam", progress=progress, cancelled=cancelled)
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailableError(
                    f"SAM checkpoint {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}. Give the path of {spec.filename} (from {spec.url}) "
                    f"or leave the SAM weights setting empty to download it into {cache_dir() / 'sam'}.")
    if progress:
        progress("loading SAM", 0.0)
    try:
        sam = load_checkpoint(arch, torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # wrong architecture, truncated or foreign file
        hint = f" Check that it is {what} ({url})" if url else f" Check {what}"
        raise WeightsUnavailableError(
            f"SAM checkpoint {path} could not be loaded as {kind}: {error_gist(exc, 300)}.{hint} and that the SAM "
            "model setting matches the file.") from exc
    if progress:
        progress("loading SAM", 1.0)
    weights_id = ("sha256:" + SAM_CHECKPOINTS[kind].sha256) if weights is None and kind in SAM_CHECKPOINTS \
        else file_id(path)
    return sam.to(device).eval(), weights_id
