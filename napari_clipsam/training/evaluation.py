"""Evaluate the engine on a dataset (method §4): rough map (CLIP only) and final map (ClipSAM) side by side.

Published style: every map and mask is squashed to ``resolution`` × ``resolution`` (default: the CLIP input
size), maps bilinearly and masks bilinearly then thresholded at 0.5; the rough map is Gaussian-smoothed with
σ = ``sigma`` px at 518 (scaled with the CLIP input size; the published protocol uses 4). Metrics pool every
pixel of a category (:func:`napari_clipsam.metrics.evaluate`); the mean is over categories. Image scores are
the maximum of each evaluated map; image labels come from the dataset (normal vs defect folder).

With ``mutual=True`` each category's picked test images are one folder for
:meth:`~napari_clipsam.engine.clipsam.ClipSAM.segment_folder` (method §5): the ``rough`` row is the fused map MMR ran
on, ``final`` the final map, and the image metrics of both rows use each result's ``image_score``
(:mod:`.mutual_eval`).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

import numpy as np

from ..errors import InvalidInputError
from ..io.images import normalise_image
from ..metrics import METRIC_NAMES, evaluate
from .map_cache import MapCache
from .resize import squash_map, squash_mask
from .trainer import object_name

MAPS = ("rough", "final")
PUBLISHED_SIGMA = 4.0
SHORT = {"pixel_auroc": "pAUROC", "pixel_ap": "pAP", "pixel_f1_max": "pF1max", "aupro_official": "PRO",
         "aupro_published": "PRO-pub", "image_auroc": "iAUROC", "image_ap": "iAP", "image_f1_max": "iF1max"}


def spread_subset(n: int, limit: int | None) -> list[int]:
    """At most ``limit`` indices evenly spread over ``range(n)`` (so every defect folder and the normal images of a
    sorted category stay represented); all of them when ``limit`` is None or ≥ n."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {limit}.")
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, limit)})


def rough_maps_only(engine, images: list[np.ndarray], name: str) -> list[np.ndarray]:
    """Rough maps at image resolution without SAM (CLIP, UMCI and few-shot references), as ``segment``
    computes them."""
    return engine.rough_maps_for_images(images, name)


def evaluate_dataset(engine, dataset, *, categories: Iterable[str] | None = None, resolution: int | None = None,
                     sigma: float | None = PUBLISHED_SIGMA, limit: int | None = None, batch_size: int | None = None,
                     rough_only: bool = False, object_names: dict[str, str] | None = None,
                     max_fpr: float = 0.3, progress: bool = True, map_cache: bool | str | os.PathLike = False,
                     mutual: bool = False, curves: bool = False) -> dict:
    """Run the engine over a dataset and compute every §4 metric per category and on average.

    Args:
        engine: a :class:`~napari_clipsam.engine.clipsam.ClipSAM` (UMCI or training-free).
        dataset: an :class:`~napari_clipsam.data.AnomalyDataset` (test split, with masks).
        categories: the categories to evaluate (default: all of the dataset's).
        resolution: side of the squashed maps and masks (default: the engine's CLIP input size).
        sigma: rough-map smoothing σ at 518 px for this run (None: keep the engine's ``rough_sigma``).
        limit: at most this many images per category, evenly spread over its samples.
        batch_size: images per :meth:`~napari_clipsam.engine.clipsam.ClipSAM.segment_many` call (None: the engine's
            default, 1 on the CPU and 4 on CUDA).
        rough_only: skip SAM entirely and evaluate the rough map only (``final`` is None).
        object_names: category → object name (default: the category with underscores as spaces).
        max_fpr: FPR limit of both AUPRO flavours.
        map_cache: keep each image's squashed maps on disk (:class:`.map_cache.MapCache`) and reuse them, so a
            second run with the same engine and settings computes only the metrics: True for the default folder
            under the napari-clipsam cache, or a folder. Not used with ``mutual`` (a map depends on the whole folder).
        mutual: folder mutual scoring, each category's picked test images as one folder (:mod:`.mutual_eval`).
        curves: also keep each category's ROC and PR curves (pixel and image level, thinned,
            :func:`~napari_clipsam.metrics.curves.roc_and_pr`) under ``"curves"`` (what ``eval --plots`` draws).

    Returns:
        ``{"categories": {cat: {"images", "anomalous", "rough": {metric: value}, "final": {...} | None}},
        "mean": {"rough": {...}, "final": {...} | None}, "settings": {...}, "engine": provenance}``
        (``settings["mode"]`` is ``"mutual"`` or ``"per-image"``);
        metric names are :data:`~napari_clipsam.metrics.METRIC_NAMES`, values in [0, 1] or nan.
    """
    from tqdm.auto import tqdm

    resolution, cats, picks, names = plan_evaluation(engine.config.image_size, dataset, categories, resolution,
                                                     limit, object_names)
    if mutual:
        from .mutual_eval import check_mutual_plan

        check_mutual_plan(engine, picks, rough_only)
        map_cache = False
    subsets = {c: dataset.category(c) for c in cats}
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    with engine.using(**evaluation_settings(engine.config, sigma)):
        cache = None
        if map_cache:
            root = None if map_cache is True else map_cache
            cache = MapCache.for_run(engine, resolution=resolution, rough_only=rough_only, root=root)
        with tqdm(total=sum(map(len, picks.values())), disable=not progress, unit="img", dynamic_ncols=True) as bar:
            for c in cats:
                bar.set_description(c)
                if mutual:
                    from .mutual_eval import mutual_category

                    results[c] = mutual_category(engine, subsets[c], picks[c], names[c], resolution, max_fpr, bar,
                                                 curves)
                else:
                    results[c] = _category(engine, subsets[c], picks[c], names[c], resolution, batch_size,
                                           rough_only, max_fpr, bar, cache, curves)
        provenance = engine.provenance("")
        if mutual:
            from .mutual_eval import mutual_provenance

            provenance = mutual_provenance(provenance, results)
    return summarise(results, provenance, dataset=dataset, resolution=resolution, sigma=sigma, limit=limit,
                     rough_only=rough_only, max_fpr=max_fpr, seconds=time.perf_counter() - t0,
                     cached=0 if cache is None else cache.cache_info().hits, mode="mutual" if mutual else "per-image")


def plan_evaluation(image_size: int, dataset, categories=None, resolution: int | None = None,
                    limit: int | None = None, object_names: dict[str, str] | None = None):
    """``(resolution, categories, picks, names)``: the evaluation resolution (default ``image_size``), the
    categories, each category's picked sample indices (:func:`spread_subset`) and its object name."""
    resolution = int(image_size if resolution is None else resolution)
    if resolution < 8:
        raise InvalidInputError(f"resolution must be at least 8 px, got {resolution}.")
    cats = list(categories) if categories is not None else list(dataset.categories)
    picks = {c: spread_subset(len(dataset.category(c)), limit) for c in cats}
    names = {c: (object_names or {}).get(c, object_name(c)) for c in cats}
    return resolution, cats, picks, names


def evaluation_settings(config, sigma: float | None) -> dict:
    """The per-call engine settings an evaluation runs with: rough-map σ ``sigma`` (None: unchanged), and no SAM
    embedding for images without prompts (nothing refines them)."""
    return dict(rough_sigma=config.rough_sigma if sigma is None else float(sigma), embed_without_prompts=False)


def evaluation_config(config, sigma: float | None):
    """The config an evaluation's maps are made with (what its map cache is keyed by)."""
    return config.replace(**evaluation_settings(config, sigma))


def summarise(results: dict[str, dict], provenance: dict, *, dataset, resolution, sigma, limit, rough_only,
              max_fpr, seconds: float, cached: int, mode: str = "per-image") -> dict:
    """The :func:`evaluate_dataset` return value from per-category results and the engine's provenance."""
    provenance = dict(provenance)
    provenance.pop("object_name", None)
    provenance.pop("created", None)
    cats = list(results)
    mean = {m: (None if rough_only and m == "final" else _mean([results[c][m] for c in cats])) for m in MAPS}
    settings = {"root": str(dataset.root), "layout": getattr(dataset, "layout", "generic"), "categories": cats,
                "resolution": resolution, "sigma": sigma, "limit": limit, "rough_only": rough_only,
                "max_fpr": max_fpr, "seconds": round(seconds, 3), "cached_images": cached, "mode": mode}
    return {"categories": results, "mean": mean, "settings": settings, "engine": provenance}


def _squashed_maps(engine, images, name, resolution, batch_size, rough_only) -> list[dict[str, np.ndarray]]:
    """Each image's rough (and final) map, squashed to ``resolution``."""
    if rough_only:
        return [{"rough": squash_map(r, resolution)} for r in rough_maps_only(engine, images, name)]
    return [{"rough": squash_map(r.rough_map, resolution), "final": squash_map(r.final_map, resolution)}
            for r in engine.segment_many(images, name, batch_size=batch_size)]


def squashed_maps(engine, images, name, resolution, batch_size, rough_only, cache=None) -> list[dict]:
    """Each image's evaluated maps ``{"rough": (R, R) float32[, "final": ...]}``, from ``cache`` (a
    :class:`.map_cache.MapCache`) where it holds them, computed (and stored there) otherwise. The engine must be
    configured for evaluation (:func:`evaluation_config`)."""
    rgbs = [normalise_image(im)[0] for im in images] if cache is not None else None
    got = [cache.get(rgb, name) for rgb in rgbs] if cache is not None else [None] * len(images)
    todo = [j for j, g in enumerate(got) if g is None]
    if todo:
        for j, new in zip(todo, _squashed_maps(engine, [images[j] for j in todo], name, resolution, batch_size,
                                               rough_only)):
            got[j] = new
            if cache is not None:
                cache.put(rgbs[j], name, new)
    return got


def category_metrics(maps: list[dict], masks: list[np.ndarray], labels: list[int], max_fpr: float,
                     image_scores=None, curves: bool = False) -> dict:
    """One category's result from its images' evaluated maps, squashed masks and labels (in the same order).

    ``image_scores``: one score per image for the image metrics of every map (default: each map's maximum).
    ``curves``: add ``"curves": {map: {"pixel": roc_and_pr | None, "image": roc_and_pr | None}}``."""
    from ..metrics.curves import roc_and_pr

    labels = np.asarray(labels)
    out = {"images": len(labels), "anomalous": int(labels.sum())}
    masks = np.stack(masks)
    drawn = {}
    for m in MAPS:
        found = [g[m] for g in maps if m in g]
        if not found:
            out[m] = None
            continue
        stacked = np.stack(found)
        scores = stacked.reshape(len(stacked), -1).max(axis=1) if image_scores is None else np.asarray(image_scores)
        out[m] = evaluate(stacked, masks, image_scores=scores, labels=labels, max_fpr=max_fpr)
        if curves:
            drawn[m] = {"pixel": roc_and_pr(stacked, masks), "image": roc_and_pr(scores, labels.astype(bool))}
    if curves:
        out["curves"] = drawn
    return out


def _category(engine, subset, picks, name, resolution, batch_size, rough_only, max_fpr, bar, cache,
              curves=False) -> dict:
    maps, masks, labels = [], [], []
    step = batch_size or engine.default_batch_size
    for start in range(0, len(picks), step):
        items = [subset[i] for i in picks[start:start + step]]
        maps += squashed_maps(engine, [im for im, _, _ in items], name, resolution, batch_size, rough_only, cache)
        for _, mask, sample in items:
            masks.append(squash_mask(mask, resolution))
            labels.append(int(sample.label))
        bar.update(len(items))
    return category_metrics(maps, masks, labels, max_fpr, curves=curves)


def _mean(rows: list[dict | None]) -> dict:
    out = {}
    for k in METRIC_NAMES:
        vals = [r[k] for r in rows if r is not None and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def result_rows(results: dict) -> list[dict]:
    """Flat rows (one per category, then ``mean``): ``category, images, anomalous, rough_<metric>…,
    final_<metric>…`` (final columns empty for a rough-only run)."""
    rows = []
    entries = list(results["categories"].items())
    entries.append(("mean", {"images": sum(v["images"] for _, v in entries),
                             "anomalous": sum(v["anomalous"] for _, v in entries), **results["mean"]}))
    for cat, r in entries:
        row = {"category": cat, "images": r["images"], "anomalous": r["anomalous"]}
        for m in MAPS:
            for k in METRIC_NAMES:
                row[f"{m}_{k}"] = "" if r[m] is None else r[m][k]
        rows.append(row)
    return rows


def _percent(value: float) -> str:
    """``value`` in percent with one decimal, never ``-0.0`` (a value a hair below zero rounds to 0.0)."""
    return f"{round(100 * value, 1) + 0.0:.1f}"


def format_table(results: dict, few_shot: dict | None = None) -> str:
    """A fixed-width table in percent: per category its rows (rough, final), then the mean. With ``few_shot``
    (K → :func:`evaluate_few_shot`'s summary), under each category's rows one row per map and K, ``rough K-shot``,
    with mean±std over the seeds."""
    few_shot = few_shot or {}
    label_w, cell_w = (11, 10) if few_shot else (6, 8)
    header = f"{'category':<16} {'map':<{label_w}} {'n':>5} " + " ".join(f"{SHORT[k]:>{cell_w}}" for k in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    entries = list(results["categories"].items()) + [("mean", {"images": "", **results["mean"]})]
    for cat, r in entries:
        if cat == "mean":
            lines.append("-" * len(header))
        rows = [(m, r[m], None, r["images"] if m == "rough" else "") for m in MAPS if r[m] is not None]
        for k, fs in few_shot.items():
            src = fs["mean"] if cat == "mean" else fs["categories"][cat]
            rows += [(f"{m} {k}-shot", src[m], src[m + "_std"], "") for m in MAPS if src[m] is not None]
        for label, vals, std, n in rows:
            cells = " ".join(f"{'n/a':>{cell_w}}" if math.isnan(vals[key]) else
                             f"{_percent(vals[key]):>{cell_w}}" if std is None else
                             f"{f'{_percent(vals[key])}±{_percent(std[key])}':>{cell_w}}" for key in METRIC_NAMES)
            lines.append(f"{cat[:16]:<16} {label:<{label_w}} {n!s:>5} {cells}")
            cat = ""
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ few-shot (issue 11)
def pick_shots(n_train: int, k: int, seed: int) -> list[int]:
    """K distinct indices into a category's ``n_train`` normal training images, drawn with ``seed`` (the usual
    few-shot protocol: a new random draw of references per seed)."""
    if k > n_train:
        raise InvalidInputError(f"{k} shots asked for, but the category has only {n_train} normal training image(s); "
                         f"give --shots ≤ {n_train}.")
    return sorted(int(i) for i in np.random.default_rng([seed, k]).choice(n_train, size=k, replace=False))


def evaluate_few_shot(engine, dataset, train_dataset, shots: Iterable[int], seeds: Iterable[int] = (0, 1, 2), *,
                      categories: Iterable[str] | None = None, object_names: dict[str, str] | None = None,
                      **kwargs) -> dict:
    """:func:`evaluate_dataset` with K normal references per category, for each K in ``shots`` and each seed.

    For each (K, seed), every category gets K normal images of ``train_dataset`` (its train split) drawn with
    :func:`pick_shots` as references (``engine.set_normal_references(..., object_name)``); the engine's
    ``fewshot_weight`` decides the fusion. The references are cleared afterwards.

    Returns ``{K: {"categories": {cat: {"images", "anomalous", map: {metric: mean}, map + "_std": {…}}},
    "mean": {map: {…}, map + "_std": {…}}, "seeds": [...], "references": {seed: {cat: [file names]}},
    "runs": [evaluate_dataset results]}}``; std is the standard deviation over seeds (0 with one seed).
    """
    cats = list(categories) if categories is not None else list(dataset.categories)
    names = {c: (object_names or {}).get(c, object_name(c)) for c in cats}
    seeds, out = list(seeds), {}
    if not seeds:
        raise InvalidInputError("give at least one seed for the few-shot evaluation.")
    train = {c: train_dataset.category(c) for c in cats}
    try:
        for k in shots:
            runs, refs = [], {}
            for seed in seeds:
                engine.clear_normal_references()
                refs[seed] = {}
                for c in cats:
                    idx = pick_shots(len(train[c]), int(k), seed)
                    engine.set_normal_references([train[c][i][0] for i in idx], names[c])
                    refs[seed][c] = [train[c].samples[i].image_path.name for i in idx]
                runs.append(evaluate_dataset(engine, dataset, categories=cats, object_names=names, **kwargs))
            out[int(k)] = summarise_few_shot(runs, cats, seeds, refs)
    finally:
        engine.clear_normal_references()
    return out


def summarise_few_shot(runs: list[dict], cats: list[str], seeds, references: dict) -> dict:
    """One K's few-shot summary from its runs (one :func:`evaluate_dataset` result per seed, in ``seeds`` order):
    per category and for the mean, each map's metrics as mean and ``_std`` over the seeds, with the seeds, the
    reference file names per seed and category, and the runs themselves (the local and the Ray evaluation)."""
    return _summarise(runs, cats) | {"seeds": list(seeds), "references": references, "runs": runs}


def _summarise(runs: list[dict], cats: list[str]) -> dict:
    def stats(entries: list[dict]) -> dict:
        res: dict = {}
        for m in MAPS:
            if entries[0].get(m) is None:
                res[m] = res[m + "_std"] = None
                continue
            res[m] = {k: _nanstat(np.nanmean, [e[m][k] for e in entries]) for k in METRIC_NAMES}
            res[m + "_std"] = {k: _nanstat(np.nanstd, [e[m][k] for e in entries]) for k in METRIC_NAMES}
        return res

    categories = {c: {"images": runs[0]["categories"][c]["images"], "anomalous": runs[0]["categories"][c]["anomalous"],
                      **stats([r["categories"][c] for r in runs])} for c in cats}
    return {"categories": categories, "mean": stats([r["mean"] for r in runs])}


def _nanstat(fn, values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(fn(vals)) if vals else float("nan")


def few_shot_rows(few_shot: dict) -> list[dict]:
    """Flat CSV rows of a few-shot evaluation: ``shots, category, images, <map>_<metric>, <map>_<metric>_std``."""
    rows = []
    for k, fs in few_shot.items():
        entries = list(fs["categories"].items()) + [("mean", {"images": sum(v["images"] for v in
                                                                            fs["categories"].values()), **fs["mean"]})]
        for cat, r in entries:
            row = {"shots": k, "category": cat, "images": r["images"]}
            for m in MAPS:
                for key in METRIC_NAMES:
                    row[f"{m}_{key}"] = "" if r[m] is None else r[m][key]
                    row[f"{m}_{key}_std"] = "" if r[m] is None else r[m + "_std"][key]
            rows.append(row)
    return rows
