"""``eval --ray``: the engine actors compute each image's evaluated maps, the driver computes the metrics.

Same plan (categories, picked images, object names), same per-image maps (:func:`~napari_clipsam.training.
evaluation.squashed_maps`, the map cache included, on each worker's node) and same metrics in the same image
order as :func:`~napari_clipsam.training.evaluation.evaluate_dataset`, so the figures are the local ones. With
``--shots``, every (K, seed) draw is one more run over the same images: the driver draws each category's
references with :func:`~napari_clipsam.training.evaluation.pick_shots` as the local
:func:`~napari_clipsam.training.evaluation.evaluate_few_shot` does, and an actor sets a draw's reference sets
(every category's, read from the dataset's train split on its node) before its first image of that draw.
"""
from __future__ import annotations

import time
from pathlib import Path

from ...errors import ClipSAMUserError, ClusterError
from .cluster import connect, disconnect

#: A run's reference sets: ``((category, object name, train indices), ...)``, or None for the zero-shot run.
References = tuple | None


def few_shot_draws(train, cats: list[str], names: dict[str, str], shots, seeds) -> dict[tuple[int, int], tuple]:
    """(K, seed) → that draw's reference sets (:data:`References`), picked as the local evaluation picks them."""
    from ...training.evaluation import pick_shots

    return {(int(k), seed): tuple((c, names[c], tuple(pick_shots(len(train.category(c)), int(k), seed)))
                                  for c in cats) for k in shots for seed in seeds}


def evaluate_on_ray(args, dataset, cfg, categories: list[str] | None, train=None, shots=(),
                    seeds=()) -> tuple[dict, dict]:
    """``(results, few_shot)``: :func:`~napari_clipsam.training.evaluation.evaluate_dataset`'s result for
    ``dataset`` (opened from ``args.dataset_root``/``args.layout``/``categories``) and, for each K in ``shots``,
    :func:`~napari_clipsam.training.evaluation.evaluate_few_shot`'s (references from ``train``, its train split,
    one draw per seed; ``{}`` without shots), computed on the Ray cluster named by ``args.ray``."""
    from ...training.evaluation import evaluation_config, plan_evaluation, summarise_few_shot

    cfg = evaluation_config(cfg, args.sigma)
    resolution, cats, picks, names = plan_evaluation(cfg.image_size, dataset, None, args.resolution, args.limit)
    draws = few_shot_draws(train, cats, names, shots, seeds) if shots else {}
    mutual = bool(getattr(args, "mutual", False))
    if mutual:
        from types import SimpleNamespace

        from ...training.mutual_eval import check_mutual_plan

        check_mutual_plan(SimpleNamespace(config=cfg), picks, args.rough_only)  # before the cluster starts
    t0 = time.perf_counter()
    collect = _mutual_on_ray if mutual else _maps_on_ray
    got, provenance = collect(args, cfg, categories, resolution, cats, picks, names, [None, *draws.values()])
    seconds = time.perf_counter() - t0

    def run(references: References) -> dict:  # curves (for --plots) of the zero-shot run only
        if mutual:
            return _mutual_result(args, dataset, got[references], provenance, resolution, cats, seconds)
        return _run_result(args, dataset, got[references], provenance, resolution, cats, picks, seconds,
                           curves=references is None and getattr(args, "plots", None) is not None)

    results, few = run(None), {}
    for k in dict.fromkeys(k for k, _ in draws):
        runs = [run(draws[k, seed]) for seed in seeds]
        refs = {seed: {c: [train.category(c).samples[i].image_path.name for i in idx]
                       for c, _, idx in draws[k, seed]} for seed in seeds}
        few[k] = summarise_few_shot(runs, cats, seeds, refs)
    return results, few


def _raise_failure(result: Exception, what: str) -> None:
    """Raise a worker's failure: the user's own error as it is (a bad file, a bad setting), anything else as a
    :class:`ClusterError` saying ``what`` failed, with the worker's message on one line."""
    cause = getattr(result, "cause", None)
    if isinstance(cause, ClipSAMUserError):
        raise cause
    raise ClusterError(f"{what}: {' '.join(str(result).split())[:2000]}")


def _maps_on_ray(args, cfg, categories, resolution, cats, picks, names, runs: list[References]):
    """Every picked image's evaluated items for each distinct run's references (references → category → index
    → item, see :meth:`~.workers.EngineWorker.eval_maps`), and the engine's provenance."""
    from tqdm.auto import tqdm

    from .segment import start_pool

    runs = list(dict.fromkeys(runs))  # two draws of the same references give the same maps: computed once
    opened = {"root": str(Path(args.dataset_root).expanduser().resolve()), "layout": args.layout,
              "categories": categories}
    started = connect(args.ray)
    pool = None
    got: dict = {r: {c: {} for c in cats} for r in runs}
    try:
        pool, info = start_pool(args, cfg)
        batch = pool.shape.batch
        chunks = [(c, picks[c][i:i + batch], names[c], r) for r in runs for c in cats
                  for i in range(0, len(picks[c]), batch)]
        kwargs = {"dataset": opened, "resolution": resolution, "batch_size": args.batch_size,
                  "rough_only": args.rough_only, "map_cache": args.cache}
        with tqdm(total=sum(len(ch[1]) for ch in chunks), unit="img", disable=not args.progress,
                  dynamic_ncols=True) as bar:
            for (c, indices, _, r), result in pool.run("eval_maps", chunks, kwargs):
                if isinstance(result, Exception):
                    _raise_failure(result, f"Evaluating {len(indices)} image(s) of {c} failed on the cluster")
                got[r][c].update(zip(indices, result))
                bar.set_description(c if r is None else f"{c} (few-shot)")
                bar.update(len(indices))
    finally:
        if pool is not None:
            pool.close()
        disconnect(started)
    return got, info["provenance"]


def _run_result(args, dataset, got: dict, provenance: dict, resolution, cats, picks, seconds: float,
                curves: bool = False) -> dict:
    """One run's :func:`~napari_clipsam.training.evaluation.evaluate_dataset` result from its items."""
    from ...training.evaluation import category_metrics, summarise

    results = {}
    for c in cats:
        items = [got[c][i] for i in picks[c]]  # the local order: the metrics pool pixels in this order
        results[c] = category_metrics([x["maps"] for x in items], [x["mask"] for x in items],
                                      [x["label"] for x in items], args.max_fpr,
                                      curves=curves)
    cached = sum(x["cached"] for c in cats for x in got[c].values())
    return summarise(results, provenance, dataset=dataset, resolution=resolution, sigma=args.sigma,
                     limit=args.limit, rough_only=args.rough_only, max_fpr=args.max_fpr, seconds=seconds,
                     cached=cached)


def _mutual_on_ray(args, cfg, categories, resolution, cats, picks, names, runs: list[References]):
    """``eval --mutual``: each category's picked test images scored as one folder by one actor call
    (:meth:`~.workers.EngineWorker.eval_mutual`), for each distinct run's references: references → category →
    that category's metrics dict (as :func:`~napari_clipsam.training.mutual_eval.mutual_category` returns it),
    and the engine's provenance. Categories (and draws) run in parallel over the actors."""
    from tqdm.auto import tqdm

    from .segment import start_pool

    runs = list(dict.fromkeys(runs))
    opened = {"root": str(Path(args.dataset_root).expanduser().resolve()), "layout": args.layout,
              "categories": categories}
    started = connect(args.ray)
    pool = None
    got: dict = {r: {} for r in runs}
    try:
        pool, info = start_pool(args, cfg, mutual=True)
        chunks = [(c, picks[c], names[c], r) for r in runs for c in cats]
        kwargs = {"dataset": opened, "resolution": resolution, "max_fpr": args.max_fpr,
                  "curves": getattr(args, "plots", None) is not None}
        with tqdm(total=sum(len(ch[1]) for ch in chunks), unit="img", disable=not args.progress,
                  dynamic_ncols=True) as bar:
            for (c, indices, _, r), result in pool.run("eval_mutual", chunks, kwargs):
                if isinstance(result, Exception):
                    _raise_failure(result, f"Mutual scoring of {c}'s folder of {len(indices)} image(s) failed on "
                                           "the cluster")
                result.pop("node", None)
                got[r][c] = result
                bar.set_description(c if r is None else f"{c} (few-shot)")
                bar.update(len(indices))
    finally:
        if pool is not None:
            pool.close()
        disconnect(started)
    return got, info["provenance"]


def _mutual_result(args, dataset, got: dict, provenance: dict, resolution, cats, seconds: float) -> dict:
    """One mutual run's :func:`~napari_clipsam.training.evaluation.evaluate_dataset` result (``mutual=True``)
    from its categories' metrics, in the local category order and with the local provenance."""
    from ...training.evaluation import summarise
    from ...training.mutual_eval import mutual_provenance

    results = {c: got[c] for c in cats}
    if not getattr(args, "plots", None):
        results = {c: {k: v for k, v in r.items() if k != "curves"} for c, r in results.items()}
    return summarise(results, mutual_provenance(provenance, results), dataset=dataset, resolution=resolution,
                     sigma=args.sigma, limit=args.limit, rough_only=args.rough_only, max_fpr=args.max_fpr,
                     seconds=seconds, cached=0, mode="mutual")
