"""Input normalisation (method §0): any supported array → H×W×3 uint8 RGB plus a validity mask."""
from __future__ import annotations

import hashlib

import numpy as np
from .errors import InvalidInputError

MIN_SIDE = 8
ACCEPTED = ("an H×W (grayscale), H×W×1, H×W×3 (RGB) or H×W×4 (RGBA) array of uint8, uint16, other integers, "
            "bool or floats, at least 8×8 pixels")


def normalise_image(image, contrast_limits: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert an image for ClipSAM.

    Gray is repeated to 3 channels, alpha is dropped, uint8 is kept as is; any other dtype is rescaled to
    0–255 with ``contrast_limits`` (e.g. a napari layer's) or the 0.5/99.5 percentiles of its finite values.
    NaN pixels become black and are marked invalid (treated as background downstream).

    Returns:
        rgb: (H, W, 3) uint8; valid: (H, W) bool, False where any channel was NaN.
    Raises:
        ValueError: saying what was wrong and what is accepted.
    """
    if image is None:
        raise InvalidInputError(f"No image given; expected {ACCEPTED}.")
    a = np.asarray(image)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidInputError(f"Image has dtype {a.dtype}, which is not numeric; expected {ACCEPTED}.")
    if a.size == 0:
        raise InvalidInputError(f"Image is empty (shape {a.shape}); expected {ACCEPTED}.")
    if a.ndim < 2 or a.ndim > 3:
        hint = (" For a stack of frames, segment one frame at a time (or use segment_many)." if a.ndim == 4 else "")
        raise InvalidInputError(f"Image has {a.ndim} dimension(s) (shape {a.shape}); expected {ACCEPTED}.{hint}")
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        hint = ""
        if a.shape[0] in (1, 3, 4) and a.shape[-1] > 4:
            hint = " It looks channel-first: move the channel axis last (np.moveaxis(image, 0, -1))."
        elif a.shape[-1] > 4:
            hint = " For a stack of frames (N×H×W), segment one frame at a time (or use segment_many)."
        raise InvalidInputError(f"Image has {a.shape[-1]} channels (shape {a.shape}); expected 1, 3 or 4 channels: "
                         f"{ACCEPTED}.{hint}")
    if a.shape[0] < MIN_SIDE or a.shape[1] < MIN_SIDE:
        raise InvalidInputError(f"Image is {a.shape[0]}×{a.shape[1]} pixels, smaller than the minimum "
                         f"{MIN_SIDE}×{MIN_SIDE}; expected {ACCEPTED}.")
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        nan = np.isnan(a).any(axis=-1)
        if nan.all():
            raise InvalidInputError(f"Image is all NaN (shape {image.shape}); there is nothing to segment.")
        valid = ~nan
    else:
        valid = np.ones(a.shape[:2], bool)
    if a.dtype != np.uint8:
        a = _rescale(a, valid, contrast_limits)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a), valid


def _rescale(a: np.ndarray, valid: np.ndarray, contrast_limits) -> np.ndarray:
    a = a.astype(np.float32)
    finite = a[valid & np.isfinite(a).all(axis=-1)]
    if contrast_limits is not None:
        lo, hi = float(contrast_limits[0]), float(contrast_limits[1])
    elif finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, (0.5, 99.5)))
    else:
        lo, hi = 0.0, 1.0
    if not hi > lo:  # constant image
        hi = lo + 1.0
    out = np.clip((np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out[~valid] = 0.0
    return np.round(out).astype(np.uint8)


def image_key(rgb: np.ndarray) -> str:
    """Content key of a normalised image (shape + bytes): the per-image cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
