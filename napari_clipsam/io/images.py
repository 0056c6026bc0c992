"""Images in: one file reader and one normalisation (method §0), used by the engine (and so the widget, the CLI
and folder review), training, evaluation and the dataset readers alike.

- :func:`read_image`: a file's raw pixels, dtype kept, channels last.
- :func:`normalise_image`: any supported array → ``(H, W, 3) uint8`` RGB plus an ``(H, W) bool`` validity mask.

The rules, in one place:

- **Layout.** H×W (gray), H×W×1, H×W×2 (gray + alpha), H×W×3 (RGB), H×W×4 (RGBA); alpha is dropped, gray is
  repeated to 3 channels. An array is never guessed to be channel-first (a 3×H×W array is also a 3-frame stack,
  which is how napari shows it): :func:`normalise_image` refuses it with a hint. Files say which axis holds the
  channels, so :func:`read_image` moves a TIFF's sample/channel axis last (planar RGB, ImageJ channels).
- **Intensities.** uint8 is kept as it is; bool maps to 0/255; anything else (uint16, other integers, floats) is
  mapped linearly from ``contrast_limits`` (the widget passes the layer's, i.e. what the user sees) or, without
  them, from the 0.5/99.5 percentiles of the finite values, to 0–255, clipped. A constant image becomes black.
- **Non-finite values.** NaN pixels become black and invalid (``valid`` False: background downstream); an
  all-NaN image is refused. +inf becomes white and -inf black.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, error_gist, require_file

__all__ = ["IMAGE_SUFFIXES", "MIN_SIDE", "read_image", "frame_count", "normalise_image", "check_contrast_limits",
           "image_key"]

#: File suffixes (lower case) read as images: by the dataset readers, folder review and the command line.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_SIDE = 8
ACCEPTED = ("an H×W (grayscale), H×W×1, H×W×2 (gray + alpha), H×W×3 (RGB) or H×W×4 (RGBA) array of uint8, "
            "uint16, other integers, bool or floats, at least 8×8 pixels")
_TIFF = (".tif", ".tiff")


def read_image(path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
    """Raw pixels of an image file, dtype kept (tifffile for ``.tif``/``.tiff``, imageio otherwise).

    Channels are last: a TIFF whose sample or channel axis comes first (planar RGB ``SYX``, ImageJ ``CYX``) has it
    moved to the end. A multi-frame file gives ``(N, H, W[, C])``; ``frame`` picks one frame (axis 0) of it.

    Raises:
        MissingFileError / PathKindError (FileNotFoundError / IsADirectoryError): the file is gone or is a folder.
        InvalidInputError (ValueError): the file cannot be decoded, or ``frame`` is not one of its frames.
    """
    path = Path(path)
    require_file(path, "Image file", "Give an image file (was it moved or deleted?)")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"Image file {path} is empty (0 bytes): an interrupted copy or download? Copy it "
                                "again, or remove it from the folder.")
    try:
        if path.suffix.lower() in _TIFF:
            pixels = _read_tiff(path)
        else:
            import imageio.v3 as iio

            pixels = np.asarray(iio.imread(path))
    except Exception as err:  # the decoders raise many unrelated types
        why = error_gist(err, limit=300)
        if why.startswith("Could not find a backend"):  # imageio's words for "no decoder knows these bytes"
            why = "no image decoder recognises its content"
        raise InvalidInputError(f"Could not read image file {path}: {why}. Check that it is a valid PNG/JPEG/BMP/TIFF "
                                "and not truncated.") from err
    if frame is None:
        return pixels
    frames = pixels.ndim == 4 or pixels.ndim == 3 and pixels.shape[-1] > 4
    if not frames or not 0 <= frame < pixels.shape[0]:
        what = f"{pixels.shape[0]} frames" if frames else "one frame"
        raise InvalidInputError(f"{path} has {what} (shape {pixels.shape}); frame {frame} does not exist.")
    return pixels[frame]


def frame_count(path: str | os.PathLike) -> int | None:
    """How many frames :func:`read_image` would give for ``path``, read from a TIFF's header without its pixels:
    N for a multi-frame TIFF (``(N, H, W[, C])`` once channels are last), None for one image (and for every other
    format, and for a file that cannot be parsed: reading it then says what is wrong)."""
    path = Path(path)
    if path.suffix.lower() not in _TIFF:
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = list(series.shape), series.axes
    except Exception:  # unreadable: the reader reports it when the image is read
        return None
    channel = next((axes.index(a) for a in "SC" if a in axes), None)
    if channel is not None and len(axes) == len(shape) and channel != len(shape) - 1:
        shape.append(shape.pop(channel))
    frames = len(shape) == 4 or len(shape) == 3 and shape[-1] > 4
    return int(shape[0]) if frames else None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        pixels = np.asarray(series.asarray())
        axes = series.axes
    channel = next((axes.index(a) for a in "SC" if a in axes), None)
    if channel is not None and len(axes) == pixels.ndim and channel != pixels.ndim - 1:
        pixels = np.moveaxis(pixels, channel, -1)
    return pixels


def normalise_image(image, contrast_limits: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert an image for ClipSAM.

    Gray is repeated to 3 channels, alpha is dropped (RGBA, and gray + alpha), uint8 is kept as is; any other
    dtype is rescaled to 0–255 with ``contrast_limits`` (e.g. a napari layer's: two finite numbers, low ≤ high,
    checked even for uint8) or the 0.5/99.5 percentiles of its finite values. NaN pixels become black and are
    marked invalid (treated as background downstream); +inf pixels become white and -inf black. Floats of any
    magnitude (up to ±1.8e308, float64's range) are rescaled in float64 without overflow; float16/32 are exact.

    Returns:
        rgb: (H, W, 3) uint8; valid: (H, W) bool, False where any channel was NaN.
    Raises:
        InvalidInputError (a ValueError): saying what was wrong and what is accepted.
    """
    if image is None:
        raise InvalidInputError(f"No image given; expected {ACCEPTED}.")
    a = np.asarray(image)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidInputError(f"Image has dtype {a.dtype}, which is not numeric; expected {ACCEPTED}.")
    if np.iscomplexobj(a):
        raise InvalidInputError(f"Image has complex values (dtype {a.dtype}), which have no brightness: an image must be real-valued; pass a real "
                                "image: its magnitude (np.abs(image)), or its real part (image.real).")
    if a.size == 0:
        raise InvalidInputError(f"Image is empty (shape {a.shape}); expected {ACCEPTED}.")
    if a.ndim < 2 or a.ndim > 3:
        hint = (" For a stack of frames, segment one frame at a time (or use segment_many)." if a.ndim == 4 else "")
        raise InvalidInputError(f"Image has {a.ndim} dimension(s) (shape {a.shape}); expected {ACCEPTED}.{hint}")
    if a.ndim == 3 and a.shape[-1] > 4:
        hint = ""
        if a.shape[0] <= 4:
            hint = " It looks channel-first: move the channel axis last (np.moveaxis(image, 0, -1))."
        else:
            hint = " For a stack of frames (N×H×W), segment one frame at a time (or use segment_many)."
        raise InvalidInputError(f"Image has {a.shape[-1]} channels (shape {a.shape}); expected 1 to 4 channels: "
                                f"{ACCEPTED}.{hint}")
    if a.shape[0] < MIN_SIDE or a.shape[1] < MIN_SIDE:
        raise InvalidInputError(f"Image is {a.shape[0]}×{a.shape[1]} pixels, smaller than the minimum "
                                f"{MIN_SIDE}×{MIN_SIDE}; expected {ACCEPTED}.")
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] in (2, 4):  # gray + alpha, RGBA: drop alpha
        a = a[..., :-1]
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        nan = np.isnan(a).any(axis=-1)
        if nan.all():
            raise InvalidInputError(f"Image is all NaN (shape {a.shape}); there is nothing to segment.")
        valid = ~nan
    else:
        valid = np.ones(a.shape[:2], bool)
    limits = check_contrast_limits(contrast_limits)
    if a.dtype != np.uint8:
        a = _rescale(a, valid, limits)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a), valid


def check_contrast_limits(contrast_limits) -> tuple[float, float] | None:
    """``None``, or two finite numbers (low, high) with low ≤ high, as floats; else InvalidInputError.

    Equal limits (napari gives them for a constant layer) map the image as a constant image: to black."""
    if contrast_limits is None:
        return None
    try:
        lo, hi = (float(v) for v in contrast_limits)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InvalidInputError(f"contrast_limits must be two finite numbers (low, high) with low ≤ high, got "
                                f"{contrast_limits!r}; pass None to use the image's 0.5/99.5 percentiles.")
    return lo, hi


def _rescale(a: np.ndarray, valid: np.ndarray, limits: tuple[float, float] | None) -> np.ndarray:
    """Map ``a`` linearly from [low, high] to 0–255 (clipped), working in float64.

    Every finite value a numpy float can hold is handled without overflow: values are halved before
    subtracting (exact: a power of two), so high − low stays finite even for limits near ±1.8e308; wider floats
    (float128) beyond the float64 range are first scaled into it by a power of two (with ``limits``, clipped to
    it: the limits are float64 numbers). +inf pixels become 255 and -inf 0.
    """
    big = np.finfo(np.float64).max
    if np.issubdtype(a.dtype, np.floating) and np.finfo(a.dtype).max > big:
        peak = np.max(np.abs(a[np.isfinite(a)]), initial=0)
        if limits is None and peak > big:  # scale by a power of two (exact) into float64's range
            a = np.ldexp(a, -int(np.ceil(np.log2(peak / big))))
        a = np.clip(a, -big, big)  # with limits (float64 numbers) anything beyond them saturates anyway
    half = a.astype(np.float64) * 0.5
    lo, hi = (limits[0] * 0.5, limits[1] * 0.5) if limits is not None else _percentiles(half, valid)
    if not hi > lo:  # constant image: its value maps to black
        hi = lo + max(0.5, abs(lo) * 1e-6)
    out = (np.clip(np.nan_to_num(half, nan=lo, posinf=hi, neginf=lo), lo, hi) - lo) / (hi - lo) * 255.0
    out[~valid] = 0.0
    return np.round(out).astype(np.uint8)


def _percentiles(half: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """The 0.5/99.5 percentiles of the finite values of valid pixels of ``half`` (H, W, C), or (0, 0.5)."""
    finite = half[valid & np.isfinite(half).all(axis=-1)]
    return tuple(float(v) for v in np.percentile(finite, (0.5, 99.5))) if finite.size else (0.0, 0.5)


def default_contrast_limits(image) -> tuple[float, float] | None:
    """The limits :func:`normalise_image` maps a non-uint8 image with when given none (its 0.5/99.5 percentiles),
    as napari contrast limits; None for uint8 and bool. A viewer showing an image with these limits shows exactly
    what ClipSAM sees of it, and passing them back gives the CLI's normalisation (the folder review does)."""
    a = np.asarray(image)
    if a.dtype in (np.uint8, bool) or not np.issubdtype(a.dtype, np.number):
        return None
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        a = a[..., :-1]
    with np.errstate(over="ignore", invalid="ignore"):
        half = a.astype(np.float64) * 0.5
    lo, hi = _percentiles(half, ~np.isnan(half).any(axis=-1))
    big = np.finfo(np.float64).max
    return float(np.clip(lo * 2, -big, big)), float(np.clip(hi * 2, -big, big))


def image_key(rgb: np.ndarray) -> str:
    """Content key of a normalised image (shape + bytes): the per-image cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
