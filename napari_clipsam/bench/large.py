"""``napari-clipsam bench --large-px SIDE``: time per megapixel of a large image (issue 24), tiled CLIP + SAM crops
against the squashed path, measured side by side in one run."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .timing import now, timed


def large_image_figures(engine, side: int, log: Callable[[str], None] = print, seed: int = 0) -> dict[str, Any]:
    """A cold ``segment`` of one synthetic ``side`` × ``side`` metal image with the engine's ``tiling`` and
    ``sam_crops`` settings, then with both off: seconds, seconds per megapixel, seconds per stage, CLIP tiles and
    SAM crops. τ_prompt is set to the 99.9th percentile of the tiled rough map (computed first), so that random
    weights, which may leave nothing above 0.5, still give components to refine on crops."""
    from ..clip.tiling import tile_grid, tile_side
    from ..data.synthetic import synthetic_image

    image = synthetic_image("metal", "scratch", size=side, seed=seed)[0]
    mp = image.shape[0] * image.shape[1] / 1e6
    cfg = engine.config
    tile = tile_side(image.shape[:2], cfg.tiling, cfg.image_size)
    tau = float(np.quantile(engine.rough_maps_for_images([image], "metal plate")[0], 0.999))
    out: dict[str, Any] = {"side_px": side, "megapixels": mp, "tile_px": tile,
                           "tiles": len(tile_grid(image.shape[:2], tile)) if tile else 1, "prompt_threshold": tau}
    for name, changes in (("tiled", {}), ("squashed", {"tiling": "off", "sam_crops": "off"})):
        engine.clear_caches()
        marks: list[tuple[str, float]] = []
        t, res = timed(lambda: engine.segment(image, "metal plate", settings={**changes, "prompt_threshold": tau},
                                              progress=lambda s, f: marks.append((s, now()))), engine.device)
        end = now()
        stages: dict[str, float] = {}
        for (s, t0), (_, t1) in zip(marks, marks[1:] + [("end", end)]):
            stages[s] = stages.get(s, 0.0) + (t1 - t0)
        out[name] = dict(total_s=t, s_per_mp=t / mp, stages_s=stages, components=int(res.prompts.num_components),
                         sam_input=res.provenance.get("sam_input"), crops=len(res.provenance.get("sam_crops", [])))
    tiled, squashed = out["tiled"], out["squashed"]
    log(f"large image {side}² ({mp:.1f} MP): tiled CLIP ({out['tiles']} tiles of {tile} px) + SAM on "
        f"{tiled['crops']} crops ({tiled['components']} components) {tiled['total_s']:.1f} s = "
        f"{tiled['s_per_mp']:.2f} s/MP; squashed {squashed['total_s']:.1f} s = {squashed['s_per_mp']:.2f} s/MP "
        f"({tiled['total_s'] / squashed['total_s']:.1f}×)")
    return out
