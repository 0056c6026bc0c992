"""Loading the models an engine is built from (:meth:`napari_clipsam.ClipSAM.from_config`): every missing
official file fetched first (one message naming all that cannot be had), then CLIP, SAM and an optional UMCI
checkpoint, with a cancel check between the steps."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..clip.umci import UMCI
from ..errors import Cancelled


def load_models(config, progress: Callable[[str, float], None] | None = None,
                cancelled: Callable[[], bool] | None = None):
    """``(clip_model, tokenizer, sam_model, umci or None, config, identity)``, the models on the CPU.

    ``identity`` names every model's weights (a tag, ``random``, or the SHA-256 of the file read), so the engine
    never hashes tensors for them. A UMCI checkpoint's feature layers are the UMCI model's: the engine fits
    ``config.feature_layers`` to them (:func:`~napari_clipsam.engine.identity.fit_config_to_models`)."""
    from ..weights.loaders import fetch_all, load_clip, load_sam
    from ..weights.umci_checkpoint import check_compatible, read_umci, usage_mismatches

    def check(what: str) -> None:  # between the loading steps (each builds or reads one model)
        if cancelled is not None and cancelled():
            raise Cancelled(f"cancelled while loading the models ({what})")

    fetch_all(config, progress=progress, cancelled=cancelled)  # every missing file named in one message
    check("CLIP")
    clip_model, tokenizer, clip_id, clip_weights = load_clip(config, device="cpu", progress=progress,
                                                             cancelled=cancelled)
    check("SAM")
    sam_model, sam_weights = load_sam(config, device="cpu", progress=progress, cancelled=cancelled)
    check("UMCI")
    umci, umci_id, mismatches = None, None, []
    if config.umci_weights:
        from ..weights.loaders import file_id

        ckpt = read_umci(config.umci_weights)
        h = ckpt["hparams"]
        check_compatible(ckpt, config.umci_weights, clip_model=clip_id, clip_weights=clip_weights,
                         in_dim=int(clip_model.visual.transformer.width),
                         dim=int(clip_model.text_projection.shape[1]
                                 if isinstance(clip_model.text_projection, torch.nn.Parameter)
                                 else clip_model.text_projection.out_features))
        umci = UMCI(h["in_dim"], h["dim"], tuple(h["layers"]), h["heads"], tuple(h["kernels"]), h["temperature"])
        umci.load_state_dict(ckpt["state_dict"])
        umci_id = file_id(config.umci_weights)
        mismatches = usage_mismatches(ckpt, config)
        if mismatches:
            warnings.warn(f"UMCI checkpoint {config.umci_weights} is used differently from how it was "
                          f"trained: {'; '.join(mismatches)}. Results may be worse.", UserWarning, stacklevel=2)
    identity = dict(clip_model=clip_id, clip_weights=clip_weights, sam_model=config.sam_model,
                    sam_weights=sam_weights, umci_weights=umci_id)
    if mismatches:
        identity["umci_usage_mismatch"] = mismatches
    return clip_model, tokenizer, sam_model, umci, config, identity
