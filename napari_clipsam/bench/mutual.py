"""The mutual-scoring rows of ``napari-clipsam bench``: the folder stage's cost against the encoders', where its
time goes, and its peak memory through the CLI's group path.

What is measured: :func:`~napari_clipsam.clip.mutual.mutual_scores_windows` (the code ``segment_folder`` runs,
with the engine's radii, subset size, precision and windows: by default the global score and the image score's
window, from the same products) on synthetic tokens of the engine's real shapes (layers × (N, C, h, w);
the cost does not depend on the values), against ``N ×`` the encoders' time for one image (CLIP vision + SAM image
encoder, measured by the bench on its engine). A folder of at most ``measure_up_to`` images is scored whole and
timed. A larger one is estimated from the parts of the same code, each timed on the real shapes: per layer the
token preparation, one diagonal and one off-diagonal block pair (:class:`~napari_clipsam.clip.mutual_blocks.
LayerBlocks`, scaled by the number of each kind) and the interval averages at that N (bf16 path: one query block
against the whole folder, scaled by the number of blocks) for the global score, scaled by the ratio of the
engine's windows to the global score alone measured at the smallest folder. The memory row scores ``memory_images`` images the way
``napari-clipsam segment`` does (:func:`~napari_clipsam.io.folders.folder_groups`: interleaved groups of at
most ``group_size``, one after another, each group's features built, scored and dropped) and reports the process's
peak resident memory over all of it.
"""
from __future__ import annotations

import math
from typing import Any

from .timing import PeakMemory, now, timed


def _feats(n: int, width: int, grid: int, layers: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed + n)
    return [torch.randn(n, width, grid, grid, generator=g) for _ in range(layers)]


def profile_pair(*, grid: int, width: int, radii=(1, 3, 5), subset: int = 8, n_for_average: int = 50,
                 repeats: int = 2) -> dict[str, float]:
    """Seconds of each part of one off-diagonal block pair of one layer (``subset`` × ``subset`` images): the
    product, per radius the box sums and the scaling by the neighbourhood norms with the row + column maxima, and the interval average of one radius at
    ``n_for_average`` images; plus the layer's token preparation for ``2 × subset`` images."""
    import torch

    from ..clip import mutual
    from ..clip.mutual_blocks import LayerBlocks, box_sum

    t = _feats(2 * subset, width, grid, 1)[0]
    prep, blocks = timed(lambda: LayerBlocks(t, radii), None, repeats)
    P, C, X = grid * grid, width, blocks.X
    q, k = X[:subset].reshape(subset * P, C), X[subset:].reshape(subset * P, C)
    out = {"prepare_tokens_s": prep}
    out["product_s"], S = timed(lambda: (q @ k.T).view(subset, grid, grid, subset, grid, grid), None, repeats)
    for r in radii:
        out[f"box_sums_r{r}_s"], B = timed(lambda: box_sum(S, int(r), (1, 2, 4, 5)).view(subset, P, subset, P),
                                           None, repeats)
        inv = blocks.inv.get(r)

        def maxima():  # as LayerBlocks.pair: scaled in place by the two neighbourhood norms, row and column maxima
            if r > 1:
                B.mul_(inv[:subset, :, None, None]).mul_(inv[None, None, subset:])
            return B.amax(dim=3), B.amax(dim=1)
        out[f"maxima_r{r}_s"], _ = timed(maxima, None, repeats)
    d = torch.rand(subset, n_for_average, P)
    per = timed(lambda: mutual.interval_average(d, 0.3, torch.arange(subset)), None, repeats)[0]
    out[f"interval_average_{n_for_average}_images_s"] = per * math.ceil(n_for_average / subset)
    out["pair_s"], _ = timed(lambda: blocks.pair(0, subset, subset, subset), None, repeats)
    return out


def _estimate(n: int, *, grid, width, layers, radii, subset, fast) -> tuple[float, str]:
    """Seconds of :func:`mutual_scores` for ``n`` images, from timed parts (see the module docstring)."""
    import torch

    from ..clip import mutual
    from ..clip.mutual_blocks import LayerBlocks

    nb = math.ceil(n / subset)
    f = _feats(n, width, grid, 1)[0]
    if fast:
        def one():
            for r in radii:
                x = mutual.prepare_tokens(f, int(r))
                d = mutual._block_distances(x, x.bfloat16(), 0, subset, subset, None, None)
                mutual.interval_average(d, 0.3, torch.arange(d.shape[0]))
        t, _ = timed(one, None)
        return layers * t * nb, f"1 of {nb} query blocks per layer measured, scaled by {nb} blocks × {layers} layers"
    t_prep, blocks = timed(lambda: LayerBlocks(f, radii), None)
    t_diag, _ = timed(lambda: blocks.pair(0, subset, 0, subset), None)
    t_off, _ = timed(lambda: blocks.pair(0, subset, subset, subset), None)
    t_avg, _ = timed(lambda: [mutual.interval_average(blocks.D[int(r)], 0.3) for r in radii], None)
    pairs = nb * (nb - 1) // 2
    total = layers * (t_prep + nb * t_diag + pairs * t_off + t_avg)
    return total, (f"parts measured (per layer: preparation {t_prep:.2f} s, diagonal pair {t_diag:.2f} s × {nb}, "
                   f"off-diagonal pair {t_off:.2f} s × {pairs}, interval averages {t_avg:.2f} s), × {layers} layers")


def mutual_row(encoders_s_per_image: float, *, grid: int, width: int, layers: int, radii=(1, 3, 5),
               subset: int = 8, sizes=(20, 50, 200), memory_images: int = 500, group_size: int = 50,
               fast: bool = False, measure_up_to: int = 50, windows=(None,), log=print) -> dict[str, Any]:
    """The mutual stage's time for each folder size of ``sizes`` as a ratio to ``N × encoders_s_per_image``, a
    profile of one block pair, and the peak memory of ``memory_images`` images through the group path (0: not
    measured). Returns a JSON-friendly dict (folder sizes as keys of ``folders``)."""
    from ..clip import mutual

    windows = tuple(windows)
    out: dict[str, Any] = {"grid": grid, "width": width, "layers": layers, "radii": list(radii), "subset": subset,
                           "fast_bf16": fast, "encoders_s_per_image": encoders_s_per_image, "folders": {},
                           "windows": list(windows)}
    prec = "bf16 search + fp32 re-check" if fast else "fp32, every radius from one product per block pair"
    prec += f", windows {windows}"

    def scores(f):
        return mutual.mutual_scores_windows(f, windows, radii=radii, subset_size=subset, fast=fast)

    scale = None  # the engine's windows against the global score alone (for estimated rows)
    for n in sizes:
        if n <= measure_up_to:
            f = _feats(n, width, grid, layers)
            t, _ = timed(lambda: scores(f), None)
            if scale is None:
                t_global = t if windows == (None,) else timed(
                    lambda: mutual.mutual_scores(f, radii=radii, subset_size=subset, fast=fast), None)[0]
                scale = t / t_global
            how = "measured whole"
            del f
        else:
            t, how = _estimate(n, grid=grid, width=width, layers=layers, radii=radii, subset=subset, fast=fast)
            t *= scale or 1.0
            how += f", × {scale or 1.0:.2f} for the windows"
        ratio = t / (n * encoders_s_per_image)
        out["folders"][n] = {"mutual_s": t, "ratio_to_encoders": ratio, "how": how}
        log(f"mutual scoring, {n} images ({grid}×{grid} patches × {width}, {layers} layers × r {tuple(radii)}, "
            f"subset {subset}, {prec}): {t:.1f} s = {100 * ratio:.1f} % of the encoders' {n} × "
            f"{encoders_s_per_image:.2f} s ({how})")
    if not fast:
        prof = profile_pair(grid=grid, width=width, radii=radii, subset=subset)
        out["profile_pair"] = prof
        log(f"mutual scoring, one off-diagonal pair of {subset}-image blocks, one layer: " + ", ".join(
            f"{k[:-2].replace('_', ' ')} {1e3 * v:.0f} ms" for k, v in prof.items()))
    if memory_images:
        out["memory"] = _group_path_memory(memory_images, group_size, grid=grid, width=width, layers=layers,
                                           radii=radii, subset=subset, fast=fast, windows=windows)
        m = out["memory"]
        log(f"mutual scoring, {memory_images} images in {m['groups']} groups of ≤ {group_size} (the CLI's group "
            f"path): peak {m['peak_mib']:.0f} MiB resident (bench process before: {m['before_mib']:.0f} MiB; one "
            f"group's features {m['group_features_mib']:.0f} MiB), {m['seconds']:.0f} s = "
            f"{100 * m['seconds'] / (memory_images * encoders_s_per_image):.1f} % of the encoders' time")
    return out


def _group_path_memory(n: int, group_size: int, *, grid, width, layers, radii, subset, fast,
                       windows=(None,)) -> dict[str, Any]:
    """Score ``n`` synthetic images in the CLI's interleaved groups, one group after another; peak memory."""
    import torch

    from ..io.folders import folder_groups
    from ..clip import mutual

    groups = folder_groups(list(range(n)), group_size)
    with PeakMemory(torch.device("cpu")) as before:
        pass
    t0 = now()
    with PeakMemory(torch.device("cpu")) as m:
        for g, members in enumerate(groups):
            f = _feats(len(members), width, grid, layers, seed=1000 * g)
            raw = mutual.mutual_scores_windows(f, windows, radii=radii, subset_size=subset, fast=fast)
            for r in raw.values():
                mutual.calibrate(r)
            del f, raw
    biggest = max(len(g) for g in groups)
    return {"images": n, "groups": len(groups), "group_size": group_size, "peak_mib": m.peak_mib,
            "before_mib": before.peak_mib, "seconds": now() - t0,
            "group_features_mib": biggest * layers * width * grid * grid * 4 / 2**20}
