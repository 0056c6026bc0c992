"""Folder mutual scoring (method §5, after MuSc): every patch of every image scored against the other images.

No training, no references, no text: in a folder of one product, most images are normal in most places, so a
patch that has a close match in most other images is normal, and one that has no close match in many of them is
not. Pure torch maths on the CLIP patch tokens the engine already computes. Shapes: ``N`` images of the folder,
vision width ``C``, patch grid ``h × w`` (``P = h·w`` patches an image), ``L`` feature layers.

Steps (each a :class:`~napari_clipsam.config.ClipSAMConfig` field, see ``mutual_*``):

1. **Tokens**: each layer's (N, C, h, w) tokens are L2-normalised over C, averaged over their r×r neighbourhood
   (stride 1; at the border only the cells that exist are averaged) and L2-normalised again, for every r of
   ``mutual_radii`` (r = 1 leaves them as they are).
2. **Mutual score** per (layer, r): for patch p of image i and every other image j,
   ``d_ij(p) = min_q (1 - cos(p, q))`` over the patches q of j (with ``mutual_window`` = w, only the q within w
   grid cells of p's own row and column: aligned parts). The N − 1 values are sorted and the smallest
   ``k = ceil(mutual_interval · (N − 1))`` averaged ("interval average": a defect repeated in a few other
   images still scores high). The scores of all (layer, r) pairs are averaged.
3. **Cost**: N²·P² similarities per (layer, r), computed as matrix products of ``mutual_subset_size`` query
   images against ``mutual_subset_size`` other images at a time. In float32 (:mod:`.mutual_blocks`) each layer
   takes one product per unordered pair of image blocks for all radii at once (the r×r neighbourhood
   similarities are box sums of the r = 1 ones; row and column maxima give both directions), one sixth of the
   plain product work at r ∈ {1, 3, 5}, equal to it up to float32 rounding; its temporaries are one
   ``(subset·P) × (subset·P)`` product and ``len(radii) × N × N × P`` distances. ``fast=True`` (``mutual_precision="bfloat16"``) runs
   one query block against every image per (layer, r) instead, finding each nearest patch with a bf16 product,
   then recomputing that one similarity in fp32: a distance differs from the fp32 one only where two candidate
   patches lie within bf16 rounding of each other, by at most :data:`BF16_TOLERANCE` (slower than the float32
   path above on the measured AVX-512 BF16 CPU, docs/performance.md).
   :func:`mutual_scores_plain` is the plain per-pair fp32 reference both paths are tested against.
   :func:`mutual_scores_windows` gives the global and a windowed score from the same float32 products.
4. **Calibration** (:func:`calibrate`): the folder's own scale of "normal" is the
   :data:`CALIBRATION_QUANTILE` quantile ``R`` of its per-image maximum raw scores (the most anomalous patch of each
   image; the lowest quarter of those comes from normal images as long as a quarter of the folder is normal), and
   ``p = 1 / (1 + exp(−(s / R − CALIBRATION_RATIO) / CALIBRATION_WIDTH))``. Monotone (pixel AUROC unchanged); a
   patch that scores as high as the most anomalous patch of a typical normal image sits at 0.5 = τ_prompt, so a
   normal image gives (almost) no prompt and a defect, which scores well above any normal patch, gets one. A
   folder where fewer than a quarter of the images are normal (an all-defective folder) takes its scale from
   defective images: the weaker defects of the folder then stay under τ_prompt. ``R`` is floored at
   :data:`CALIBRATION_FLOOR` so a folder of identical images (every score 0) gives ≈ 0 everywhere, not NaN.
5. **Image score** (:func:`image_scores`): the maximum of the calibrated map smoothed by a 3×3 mean (or the
   mean of its top ``mutual_image_top`` fraction). With ``mutual_image_window`` (default 2) the engine takes the
   larger of that score and the same score of the windowed map, calibrated on its own
   (:func:`napari_clipsam.engine.folder.mutual_maps`): the rough map stays as it is.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import Cancelled, InvalidInputError
from .mutual_blocks import layer_distances

#: Quantile of the folder's per-image maximum raw scores taken as the scale of a normal image in :func:`calibrate`.
CALIBRATION_QUANTILE = 0.25
#: Raw score, in units of that scale, that maps to 0.5 (τ_prompt's default) in :func:`calibrate`.
CALIBRATION_RATIO = 1.0
#: Width of the logistic in those units: 0.1 above the scale is p ≈ 0.73, 0.1 below p ≈ 0.27.
CALIBRATION_WIDTH = 0.1
#: Least scale (cosine-distance units) used by :func:`calibrate`, so a folder of identical images (every score 0)
#: does not blow tiny numerical differences up into "defects".
CALIBRATION_FLOOR = 1e-3
#: Largest difference of a nearest-patch distance between the bf16 path (``fast=True``) and the fp32 one: the
#: spacing of bf16 numbers just below 1 (2⁻⁸), within which two candidate patches may swap places.
BF16_TOLERANCE = 2.0 ** -8
#: Side of the mean filter applied before the maximum in :func:`image_scores`.
IMAGE_SCORE_SMOOTHING = 3


def check_folder_size(n: int, minimum: int) -> None:
    """Raise :class:`InvalidInputError` unless a folder of ``n`` images has at least ``minimum``."""
    if n < minimum:
        raise InvalidInputError(
            f"Mutual scoring compares each image with the other images of a folder and needs at least {minimum} "
            f"images of the same object; got {n}. Add more images of this object (mostly normal ones), or "
            "with so few images use normal references instead (engine.set_normal_references / --references: a "
            "few defect-free images) and segment the images one by one.")


def prepare_tokens(tokens: torch.Tensor, r: int) -> torch.Tensor:
    """(N, C, h, w) raw tokens → (N, P, C) fp32: L2-normalised, r×r neighbourhood mean (stride 1, border cells
    averaged over those that exist), L2-normalised again, flattened row-major over the grid."""
    if r < 1 or r % 2 == 0:
        raise InvalidInputError(f"mutual neighbourhood sizes must be odd whole numbers ≥ 1, got {r}.")
    t = F.normalize(tokens.float(), dim=1)
    if r > 1:
        t = F.normalize(F.avg_pool2d(t, r, stride=1, padding=r // 2, count_include_pad=False), dim=1)
    N, C, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(N, h * w, C).contiguous()


def window_mask(h: int, w: int, window: int | None, device=None) -> torch.Tensor | None:
    """(P, P) bool, True where patch q lies within ``window`` grid cells of patch p (rows and columns), or None
    when ``window`` is None (every patch is compared with every patch)."""
    if window is None:
        return None
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return ((rows[:, None] - rows[None]).abs() <= window) & ((cols[:, None] - cols[None]).abs() <= window)


def interval_average(d: torch.Tensor, interval: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(M, N, P) distances ``d[m, j, p]`` of M query images against the N images of the folder → (M, P): for each
    (m, p), the mean of the smallest ``ceil(interval · (N − 1))`` (at least 1) of the values over the other images
    j ≠ ``rows[m]`` (the query's own index in the folder; default m, so a square (N, N, P) ignores its diagonal)."""
    M, N = d.shape[:2]
    k = max(1, math.ceil(interval * (N - 1)))
    rows = torch.arange(M) if rows is None else rows
    d = d.clone()
    d[torch.arange(M), rows] = float("inf")
    return d.topk(k, dim=1, largest=False).values.mean(dim=1)


def _block_distances(x: torch.Tensor, xf: torch.Tensor | None, i0: int, si: int, subset: int,
                     mask: torch.Tensor | None, cancelled: Callable[[], bool] | None) -> torch.Tensor:
    """(si, N, P): nearest distances of the query images ``i0 … i0 + si − 1`` to every image. ``xf``: the tokens in
    bf16 (fast path: nearest patch by a bf16 product, its similarity recomputed in fp32), or None (fp32)."""
    N, P, C = x.shape
    out = torch.empty(si, N, P, dtype=torch.float32, device=x.device)
    src = x if xf is None else xf
    q = src[i0:i0 + si].reshape(si * P, C)
    for j0 in range(0, N, subset):
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled during mutual scoring")
        sj = min(N, j0 + subset) - j0
        sims = (q @ src[j0:j0 + sj].reshape(sj * P, C).T).view(si, P, sj, P)  # [i, p, j, q]
        if mask is not None:
            sims = sims.masked_fill(~mask[None, :, None, :], -2.0)
        if xf is None:
            best = sims.amax(dim=3)  # (si, P, sj)
        else:
            idx = sims.argmax(dim=3)  # (si, P, sj): the nearest patch by bf16, then its exact fp32 similarity
            best = torch.stack([(x[i0:i0 + si] * x[j0 + jj][idx[:, :, jj]]).sum(dim=2) for jj in range(sj)], dim=2)
        out[:, j0:j0 + sj] = (1.0 - best).clamp_(min=0.0).permute(0, 2, 1)
    return out


def nearest_distances(x: torch.Tensor, subset_size: int, mask: torch.Tensor | None = None,
                      cancelled: Callable[[], bool] | None = None, fast: bool = False) -> torch.Tensor:
    """(N, P, C) L2-normalised tokens → (N, N, P): ``d[i, j, p] = min_q (1 − x[i, p] · x[j, q])`` (q restricted
    by ``mask`` (P, P) when given), by matrix products of ``subset_size`` query images × ``subset_size`` other
    images. ``cancelled`` is checked between subsets (raises :class:`~napari_clipsam.errors.Cancelled`).
    Holds all N² · P distances: :func:`interval_scores` is the bounded-memory form the bf16 path uses (the float32
    path: :func:`~napari_clipsam.clip.mutual_blocks.layer_distances`)."""
    N = x.shape[0]
    s = max(1, int(subset_size))
    xf = x.bfloat16() if fast else None
    return torch.cat([_block_distances(x, xf, i0, min(N, i0 + s) - i0, s, mask, cancelled)
                      for i0 in range(0, N, s)])


def interval_scores(x: torch.Tensor, interval: float, subset_size: int, mask: torch.Tensor | None = None,
                    cancelled: Callable[[], bool] | None = None, fast: bool = False) -> torch.Tensor:
    """(N, P, C) L2-normalised tokens → (N, P) interval-averaged nearest distances, one block of
    ``subset_size`` query images at a time (memory: ``subset × N × P`` distances, not N² · P)."""
    N, P, _ = x.shape
    s = max(1, int(subset_size))
    xf = x.bfloat16() if fast else None
    out = torch.empty(N, P, dtype=torch.float32, device=x.device)
    for i0 in range(0, N, s):
        si = min(N, i0 + s) - i0
        d = _block_distances(x, xf, i0, si, s, mask, cancelled)
        out[i0:i0 + si] = interval_average(d, interval, torch.arange(i0, i0 + si))
    return out


def _checked(layers: Sequence[torch.Tensor], radii: Sequence[int]) -> tuple[int, int, int]:
    """``(N, h, w)`` of the folder's tokens, after checking there are layers, two images and odd radii."""
    if not layers:
        raise InvalidInputError("mutual scoring needs the tokens of at least one feature layer.")
    N, _, h, w = layers[0].shape
    if N < 2:
        raise InvalidInputError(f"mutual scoring needs at least 2 images to compare, got {N}.")
    for r in radii:
        if int(r) < 1 or int(r) % 2 == 0:
            raise InvalidInputError(f"mutual neighbourhood sizes must be odd whole numbers ≥ 1, got {r}.")
    return N, h, w


def mutual_scores(layers: Sequence[torch.Tensor], *, radii: Sequence[int] = (1, 3, 5), interval: float = 0.3,
                  subset_size: int = 8, window: int | None = None,
                  cancelled: Callable[[], bool] | None = None, fast: bool = False) -> torch.Tensor:
    """Raw mutual scores (N, h, w) fp32 (cosine-distance units, ≥ 0) of a folder, from one (N, C, h, w) token
    tensor per feature layer: the mean over every (layer, r) of the interval-averaged nearest distances.
    ``fast``: the bf16 nearest-patch search (step 3; only worth it where the CPU computes bf16 natively)."""
    N, h, w = _checked(layers, radii)
    mask = window_mask(h, w, window, layers[0].device)
    total = torch.zeros(N, h * w, dtype=torch.float32, device=layers[0].device)
    for t in layers:
        if not fast:  # every radius from one product per pair of images (mutual_blocks)
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled during mutual scoring")
            D = layer_distances(t, [int(r) for r in radii], subset_size, mask, cancelled)
            for r in radii:
                total += interval_average(D.pop(int(r)), interval)
            continue
        for r in radii:
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled during mutual scoring")
            total += interval_scores(prepare_tokens(t, int(r)), interval, subset_size, mask, cancelled, fast)
    return (total / (len(layers) * len(radii))).view(N, h, w)


def mutual_scores_windows(layers: Sequence[torch.Tensor], windows: Sequence[int | None], *,
                          radii: Sequence[int] = (1, 3, 5), interval: float = 0.3, subset_size: int = 8,
                          cancelled: Callable[[], bool] | None = None,
                          fast: bool = False) -> dict[int | None, torch.Tensor]:
    """``{window: mutual_scores(layers, window=window, …)}`` for each distinct window of ``windows``. On the
    float32 path the global score (None) and one windowed score come from the same similarity products (the
    window's mask applied to a copy of each block: :func:`~napari_clipsam.clip.mutual_blocks.layer_distances`
    ``also``), equal to two separate calls."""
    windows = list(dict.fromkeys(windows))
    if fast or len(windows) != 2 or None not in windows or not layers:
        return {w: mutual_scores(layers, radii=radii, interval=interval, subset_size=subset_size, window=w,
                                 cancelled=cancelled, fast=fast) for w in windows}
    window = next(w for w in windows if w is not None)
    N, h, w = _checked(layers, radii)
    mask = window_mask(h, w, window, layers[0].device)
    totals = [torch.zeros(N, h * w, dtype=torch.float32, device=layers[0].device) for _ in range(2)]
    for t in layers:
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled during mutual scoring")
        both = layer_distances(t, [int(r) for r in radii], subset_size, None, cancelled, also=mask)
        for total, D in zip(totals, both):
            for r in radii:
                total += interval_average(D.pop(int(r)), interval)
    n = len(layers) * len(radii)
    return {None: (totals[0] / n).view(N, h, w), window: (totals[1] / n).view(N, h, w)}


def mutual_scores_plain(layers: Sequence[torch.Tensor], *, radii: Sequence[int] = (1, 3, 5),
                        interval: float = 0.3, window: int | None = None) -> torch.Tensor:
    """The same as :func:`mutual_scores`, written plainly: one fp32 pair of images at a time, every distance
    sorted in Python order. The reference the chunked path is tested against (slow; tests only)."""
    N, _, h, w = layers[0].shape
    k = max(1, math.ceil(interval * (N - 1)))
    mask = window_mask(h, w, window, layers[0].device)
    total = torch.zeros(N, h * w, dtype=torch.float32)
    for t in layers:
        for r in radii:
            x = prepare_tokens(t, int(r))
            for i in range(N):
                per_j = []
                for j in range(N):
                    if j == i:
                        continue
                    dist = 1.0 - x[i] @ x[j].T  # (P, P)
                    if mask is not None:
                        dist = torch.where(mask, dist, torch.full_like(dist, 3.0))
                    per_j.append(dist.min(dim=1).values.clamp(min=0.0))
                per_j = torch.stack(per_j, dim=1).sort(dim=1).values  # (P, N − 1)
                total[i] += per_j[:, :k].mean(dim=1)
    return (total / (len(layers) * len(radii))).view(N, h, w)


def calibrate(scores: torch.Tensor, quantile: float = CALIBRATION_QUANTILE, ratio: float = CALIBRATION_RATIO,
              width: float = CALIBRATION_WIDTH, floor: float = CALIBRATION_FLOOR) -> torch.Tensor:
    """Raw mutual scores (N, h, w) of one folder → [0, 1], monotone: the logistic of ``s / R − ratio`` over
    ``width``, ``R`` the ``quantile`` of the per-image maxima (see the module docstring, step 4)."""
    s = scores.float()
    scale = torch.clamp(s.flatten(1).amax(dim=1).quantile(quantile), min=floor)
    return torch.sigmoid((s / scale - ratio) / width)


def image_scores(maps: torch.Tensor, top: float = 0.0) -> torch.Tensor:
    """(N, h, w) calibrated maps → (N,) image scores: the maximum of each map after a
    :data:`IMAGE_SCORE_SMOOTHING`-wide mean filter (a single hot patch counts less than a defect), or with
    ``top`` > 0 the mean of its ``ceil(top · h · w)`` highest values (``mutual_image_top``)."""
    k = IMAGE_SCORE_SMOOTHING
    smooth = F.avg_pool2d(maps[:, None].float(), k, stride=1, padding=k // 2, count_include_pad=False)[:, 0]
    flat = smooth.flatten(1)
    if top <= 0.0:
        return flat.amax(dim=1)
    n = min(flat.shape[1], max(1, math.ceil(top * flat.shape[1])))
    return flat.topk(n, dim=1).values.mean(dim=1)


def fuse(maps: Sequence[torch.Tensor | None], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean ``Σ w_m · map_m / Σ w_m`` of the maps that are present (None and weight-0 maps left out);
    every map the same shape, values in [0, 1]. Raises when no map has a positive weight."""
    present = [(m, float(w)) for m, w in zip(maps, weights) if m is not None and w > 0]
    if not present:
        raise InvalidInputError("the mutual fusion weights leave no map to use: give the mutual map (or the CLIP "
                                "map) a weight above 0.")
    total = sum(w for _, w in present)
    return sum(m * (w / total) for m, w in present).clamp_(0.0, 1.0)
