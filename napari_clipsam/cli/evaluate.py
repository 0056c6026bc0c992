"""``napari-clipsam eval``: the published-protocol metrics (method §4) of the rough map (CLIP only) and the final
map (ClipSAM) side by side, per category and on average; a printed table plus optional CSV and JSON files."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from ..errors import InvalidInputError, PathKindError
from .common import (EXIT_OK, add_dataset_options, add_engine_options, build_engine, training_free_note,
                     describe_engine, engine_config, json_safe, note, split_list, without_sam, write_text_atomic)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .ray.options import add_ray_options

    p = subparsers.add_parser(
        "eval", help="pixel/image AUROC, AP, F1-max and AUPRO of the rough and final maps on a dataset",
        description="Evaluates the engine on the test split of a dataset with masks (MVTec-AD, VisA or a "
                    "folder): pixel AUROC, AP, F1-max, AUPRO@0.3 (official and published flavours) and image "
                    "AUROC, AP, F1-max, per category and their mean, for the rough and final maps. Maps and "
                    "masks are squashed to --resolution and the rough map is smoothed with --sigma, as in the "
                    "published tables.")
    add_dataset_options(p, "evaluate")
    p.add_argument("--limit", type=int, metavar="N",
                   help="at most N images per category, evenly spread over its normal and defect images")
    p.add_argument("--rough-only", action="store_true",
                   help="evaluate the rough map only (no SAM: much faster, and no SAM weights needed)")
    p.add_argument("--resolution", type=int, metavar="PX",
                   help="side of the squashed maps and masks (default: the CLIP input size)")
    p.add_argument("--sigma", type=float, default=4.0,
                   help="Gaussian smoothing of the rough map, px at 518 (default 4, as published; 0 = off)")
    p.add_argument("--max-fpr", type=float, default=0.3, help="FPR limit of AUPRO (default 0.3)")
    p.add_argument("--batch-size", type=int, help="images per engine call (default: 1 on the CPU, 4 on CUDA)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="do not keep the evaluated maps on disk (by default they are kept under the napari-clipsam "
                        "cache, about 0.4 MB per image and map at 336 px, so a second run with the same engine "
                        "and settings only recomputes the metrics)")
    p.add_argument("--shots", type=int, nargs="+", metavar="K",
                   help="also evaluate with K normal training images per category as references (few-shot), "
                        "for each K given (e.g. --shots 1 2 4), each over --seeds random draws: mean ± std rows "
                        "under the zero-shot rows")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="random draws of the references per K (default 3)")
    p.add_argument("--fewshot-weight", type=float, metavar="W",
                   help="rough map = (1 - W) zero-shot + W few-shot (default: the config's, 0.5; 1 = few-shot only)")
    p.add_argument("--mutual", action="store_true",
                   help="folder mutual scoring (method §5): each category's test images are scored as one folder "
                        "(segment_folder), fused with the CLIP map as configured; the rough row is the fused map, "
                        "image metrics use each result's image score. Needs ≥ 5 images per category")
    p.add_argument("--plots", type=Path, metavar="DIR",
                   help="write PNG plots here: per category the pixel-level ROC and PR curves (and the image-level "
                        "ones where a category has normal and defective images) of each map, and a bar chart of "
                        "its metrics (<category>_pixel_roc.png, …_pixel_pr.png, …_image_roc.png, …_image_pr.png, "
                        "…_metrics.png, and mean_metrics.png); files of those names are replaced, like --csv/--json")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write one row per category (and the mean) here")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure, the settings and the engine here")
    add_engine_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..data import open_dataset
    from ..training.evaluation import (evaluate_dataset, evaluate_few_shot, few_shot_rows,
                                       format_table, result_rows)

    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {args.limit}.")
    if (args.batch_size is not None and args.batch_size < 1) or args.sigma < 0 or not 0 < args.max_fpr <= 1:
        raise InvalidInputError("--batch-size must be ≥ 1, --sigma ≥ 0 and --max-fpr in (0, 1].")
    for path in (args.csv, args.json):
        if path is not None and Path(path).expanduser().is_dir():
            raise PathKindError(f"{path} is a folder; give a file name for the results.")
    if args.plots is not None and Path(args.plots).expanduser().exists() and not Path(args.plots).expanduser().is_dir():
        raise PathKindError(f"--plots {args.plots} is a file; give a folder for the plots (it is created if missing).")
    shots = sorted(set(args.shots or []))
    if any(k < 1 for k in shots) or args.seeds < 1:
        raise InvalidInputError("--shots must be ≥ 1 (normal images per category) and --seeds ≥ 1.")
    if getattr(args, "ray", None) is not None:
        from .ray.options import check_ray_options

        check_ray_options(args)
    dataset = open_dataset(args.dataset_root, args.layout, split_list(args.categories), split="test")
    train = open_dataset(args.dataset_root, args.layout, split_list(args.categories), split="train") if shots else None
    weight = {} if args.fewshot_weight is None else {"fewshot_weight": args.fewshot_weight}
    if weight and not shots:
        note(f"--fewshot-weight {args.fewshot_weight:g} has no effect without --shots (the few-shot map it weighs "
             "comes from normal references).")
    cfg = engine_config(args, **weight)
    if args.rough_only:
        cfg = without_sam(cfg)
    if shots:
        from ..clip.fewshot import check_settings

        check_settings(cfg)
    if getattr(args, "ray", None) is not None:
        from .ray.evaluate import evaluate_on_ray  # Ray is imported only there

        results, few = evaluate_on_ray(args, dataset, cfg, split_list(args.categories), train, shots,
                                       range(args.seeds))
    else:
        engine = build_engine(cfg, args.progress, sam=not args.rough_only)
        note(f"engine: {describe_engine(engine)}")
        if engine.umci is None:
            note(training_free_note(bool(args.mutual), engine.config.mutual_clip_weight))
        results = evaluate_dataset(engine, dataset, resolution=args.resolution, sigma=args.sigma,
                                   limit=args.limit, batch_size=args.batch_size, rough_only=args.rough_only,
                                   max_fpr=args.max_fpr, progress=args.progress, map_cache=args.cache,
                                   mutual=args.mutual, curves=args.plots is not None)
        few = {}
        if shots:
            few = evaluate_few_shot(engine, dataset, train, shots, range(args.seeds), resolution=args.resolution,
                                    sigma=args.sigma, limit=args.limit, batch_size=args.batch_size,
                                    rough_only=args.rough_only, max_fpr=args.max_fpr, progress=args.progress,
                                    map_cache=args.cache, mutual=args.mutual)
    if args.mutual:
        print("mode: mutual (folder mutual scoring; each category's test images are one folder; rough = the fused "
              "map SAM refined; image metrics from each result's image score)")
    else:
        print("mode: per-image")
    print(f"rough map: {results['engine']['rough_map']}")
    if few and args.mutual:
        print(f"few-shot rows: K normal training images per category as references, mean ± std over "
              f"{args.seeds} draws, fused with the folder's mutual map (weights: mutual {cfg.mutual_weight:g}, "
              f"few-shot {cfg.mutual_fewshot_weight:g}, CLIP {cfg.mutual_clip_weight:g})")
    elif few:
        print(f"few-shot rows: K normal training images per category as references, mean ± std over "
              f"{args.seeds} draws; rough = {1 - cfg.fewshot_weight:g} × zero-shot + {cfg.fewshot_weight:g} × "
              "few-shot")
    print(format_table(results, few) if few else format_table(results))
    cached = results["settings"]["cached_images"]
    print(f"({sum(r['images'] for r in results['categories'].values())} images, "
          f"{results['settings']['seconds']:.1f} s{f', {cached} from the map cache' if cached else ''})")
    if args.csv is not None:
        buf = io.StringIO()
        rows = result_rows(results)
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        if few:
            few_rows = few_shot_rows(few)
            buf.write("\n")
            writer = csv.DictWriter(buf, fieldnames=list(few_rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(few_rows)
        print(f"CSV written to {write_text_atomic(args.csv, buf.getvalue())}")
    if args.plots is not None:
        from ..report.eval_plots import write_eval_plots

        written = write_eval_plots(results, args.plots)
        print(f"{len(written)} plot(s) written to {Path(args.plots).expanduser()}")
    if args.json is not None:
        results = {**results, "categories": {c: {k: v for k, v in r.items() if k != "curves"}
                                             for c, r in results["categories"].items()}}
        payload = results if not few else {**results, "few_shot": {str(k): {kk: vv for kk, vv in v.items()
                                                                           if kk != "runs"} for k, v in few.items()}}
        text = json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n"
        print(f"JSON written to {write_text_atomic(args.json, text)}")
    return EXIT_OK
