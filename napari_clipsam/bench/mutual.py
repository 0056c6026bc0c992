"""The mutual-scoring row of ``napari-clipsam bench``: the folder stage's cost against the encoders', and its peak
memory, on synthetic features of the engine's real shape (layers × (N, C, h, w); the scores' cost does not depend
on the values). For a folder larger than ``measure_up_to`` images, one block of ``mutual_subset_size`` query images
is scored against the whole folder and the time scaled by the number of blocks (each block costs the same), so a
200- or 500-image line takes seconds, not an hour; the peak memory is that of the features plus one block."""
from __future__ import annotations

import math
from typing import Any

from .timing import PeakMemory, timed


def mutual_row(encoders_s_per_image: float, *, grid: int, width: int, layers: int, radii=(1, 3, 5),
               subset: int = 8, sizes=(20, 200), memory_images: int = 500, fast: bool = False,
               measure_up_to: int = 20, log=print) -> dict[str, Any]:
    import torch

    from ..clip import mutual

    def feats(n):
        g = torch.Generator().manual_seed(n)
        return [torch.randn(n, width, grid, grid, generator=g) for _ in range(layers)]

    def cost(n):
        f = feats(n)
        if n <= measure_up_to:
            t, _ = timed(lambda: mutual.mutual_scores(f, radii=radii, subset_size=subset, fast=fast), None)
            return t, "measured"
        one = _one_block_scores(f, radii, subset, fast)
        t, _ = timed(one, None)
        return t * math.ceil(n / subset), f"1 of {math.ceil(n / subset)} query blocks measured, scaled"

    out: dict[str, Any] = {"grid": grid, "width": width, "layers": layers, "radii": list(radii), "subset": subset,
                           "fast_bf16": fast, "encoders_s_per_image": encoders_s_per_image, "folders": {}}
    for n in sizes:
        t, how = cost(n)
        ratio = t / (n * encoders_s_per_image)
        out["folders"][n] = {"mutual_s": t, "ratio_to_encoders": ratio, "how": how}
        log(f"mutual scoring, {n} images ({grid}×{grid} patches, {layers} layers × r {tuple(radii)}, "
            f"{'bf16' if fast else 'fp32'}): {t:.1f} s = {100 * ratio:.1f} % of the encoders' {n} × "
            f"{encoders_s_per_image:.2f} s ({how})")
    with PeakMemory(torch.device("cpu")) as m:
        f = feats(memory_images)
        _one_block_scores(f, radii, subset, fast)()
        held = sum(t.numel() * 4 for t in f) / 2**20
    out["memory"] = {"images": memory_images, "peak_mib": m.peak_mib, "features_mib": held}
    log(f"mutual scoring, {memory_images} images: peak {m.peak_mib:.0f} MiB, of which the folder's features "
        f"{held:.0f} MiB (held whole; the scoring's temporaries are bounded by the subset size)")
    return out


def _one_block_scores(layers, radii, subset, fast):
    """Score the first ``subset`` images against the whole folder, every (layer, r), as mutual_scores does."""
    import torch

    from ..clip import mutual

    def run():
        for t in layers:
            for r in radii:
                x = mutual.prepare_tokens(t, int(r))
                xf = x.bfloat16() if fast else None
                d = mutual._block_distances(x, xf, 0, min(subset, x.shape[0]), subset, None, None)
                mutual.interval_average(d, 0.3, torch.arange(d.shape[0]))
    return run
