"""``eval --ray``: the engine actors compute each image's evaluated maps, the driver computes the metrics.

Same plan (categories, picked images, object names), same per-image maps (:func:`~napari_clipsam.training.
evaluation.squashed_maps`, the map cache included, on each worker's node) and same metrics in the same image
order as :func:`~napari_clipsam.training.evaluation.evaluate_dataset`, so the figures are the local ones.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import ClipSAMUserError, ClusterError
from .cluster import connect, disconnect


def evaluate_on_ray(args, dataset, cfg, categories: list[str] | None) -> dict:
    """:func:`~napari_clipsam.training.evaluation.evaluate_dataset`'s result for ``dataset`` (opened from
    ``args.dataset_root``/``args.layout``/``categories``), computed on the Ray cluster named by ``args.ray``."""
    from tqdm.auto import tqdm

    from ..training.evaluation import category_metrics, evaluation_config, plan_evaluation, summarise
    from .segment import start_pool

    cfg = evaluation_config(cfg, args.sigma)
    resolution, cats, picks, names = plan_evaluation(cfg.image_size, dataset, None, args.resolution, args.limit)
    opened = {"root": str(Path(args.dataset_root).expanduser().resolve()), "layout": args.layout,
              "categories": categories}
    t0 = time.perf_counter()
    started = connect(args.ray)
    pool = None
    got: dict[str, dict[int, dict]] = {c: {} for c in cats}
    try:
        pool, info = start_pool(args, cfg)
        batch = pool.shape.batch
        chunks = [(c, picks[c][i:i + batch], names[c]) for c in cats for i in range(0, len(picks[c]), batch)]
        kwargs = {"dataset": opened, "resolution": resolution, "batch_size": args.batch_size,
                  "rough_only": args.rough_only, "map_cache": args.cache}
        with tqdm(total=sum(map(len, picks.values())), unit="img", disable=not args.progress,
                  dynamic_ncols=True) as bar:
            for (c, indices, _), result in pool.run("eval_maps", chunks, kwargs):
                if isinstance(result, Exception):
                    cause = getattr(result, "cause", None)
                    if isinstance(cause, ClipSAMUserError):
                        raise cause
                    raise ClusterError(f"Evaluating {len(indices)} image(s) of {c} failed on the cluster: "
                                       f"{' '.join(str(result).split())[:2000]}")
                got[c].update(zip(indices, result))
                bar.set_description(c)
                bar.update(len(indices))
    finally:
        if pool is not None:
            pool.close()
        disconnect(started)
    results = {}
    for c in cats:
        items = [got[c][i] for i in picks[c]]  # the local order: the metrics pool pixels in this order
        results[c] = category_metrics([x["maps"] for x in items], [x["mask"] for x in items],
                                      [x["label"] for x in items], args.max_fpr)
    cached = sum(x["cached"] for c in cats for x in got[c].values())
    return summarise(results, info["provenance"], dataset=dataset, resolution=resolution, sigma=args.sigma,
                     limit=args.limit, rough_only=args.rough_only, max_fpr=args.max_fpr,
                     seconds=time.perf_counter() - t0, cached=cached)
