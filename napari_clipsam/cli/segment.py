"""``napari-clipsam segment``: pseudo-label many images with the same exporter as the plugin.

Inputs are image files, folders (their images, in natural order; ``--recursive`` for sub-folders) and glob
patterns. Each image's outputs go under ``--out`` with an export stem made from its path relative to the
folder it was found from (``sub/a.png`` → ``sub__a``; clashing names are told apart as in the folder review).

Resumable: an image that is done (every file of every requested format in place, and its provenance: the
exporter's own definition, :mod:`napari_clipsam.export.done`) is skipped (``--overwrite`` redoes it); the
formats an interrupted run left missing or unfinished are written again. COCO shards are merged into
``coco/annotations.json`` at the end of the run (also when interrupted), and temporary files left by a crashed
run are removed at the start. A failing image (unreadable file, unusable
shape, export error) is reported and skipped; the others are still processed and the exit code is 1.

Mutual scoring (:mod:`.segment_groups`): a run of at least 5 images (multi-frame TIFFs count one image per frame,
exported as ``<stem>_f000``…) scores them against each other by default, in groups of at most
``--mutual-group-size``; ``--no-mutual``, or fewer images: each image alone. The summary says which mode ran, and
each image's provenance records it (``scoring``).

``--object`` is required: it is the text the CLIP prompts describe ("a photo of a damaged {object}"), and a
name guessed from folder names (often defect types such as ``scratch``) would silently hurt the rough map.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_engine_options, build_engine, describe_engine, note, training_free_note
from .segment_groups import MUTUAL


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .ray.options import add_ray_options
    from ..export import FORMATS
    from ..io.folders import DEFAULT_EXTENSIONS
    from .segment_groups import DEFAULT_GROUP_SIZE

    p = subparsers.add_parser(
        "segment", help="pseudo-label images (files, folders or globs) in mvtec/tiff/coco/yolo formats",
        description="Runs ClipSAM on every input image and writes its instance masks with the plugin's "
                    "exporter. Images whose outputs already exist are skipped unless --overwrite; failing "
                    "images are reported and skipped (exit code 1).")
    p.add_argument("inputs", nargs="+", help="image files, folders, or glob patterns such as 'plates/*.png'")
    p.add_argument("--object", required=True, metavar="NAME",
                   help="what the images show, used in the text prompts (e.g. 'metal plate', 'pcb')")
    p.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="output dataset folder")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), metavar="FORMAT",
                   help=f"export formats among {' '.join(FORMATS)} (default: all), space- or comma-separated; "
                        "give the inputs before list options")
    p.add_argument("--class-name", default="defect", help="class of every instance (default: defect)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of input folders")
    p.add_argument("--extensions", nargs="+", default=list(DEFAULT_EXTENSIONS), metavar="EXT",
                   help=f"file suffixes taken as images in folders and globs (default: {' '.join(DEFAULT_EXTENSIONS)})")
    p.add_argument("--coco-segmentation", choices=("rle", "polygon"), default="rle",
                   help="COCO masks as exact RLE (default) or polygons (RLE kept for instances with holes)")
    p.add_argument("--no-images", dest="dataset_images", action="store_false",
                   help="do not copy the images into coco/images/ and yolo/images/ (by default the output is a "
                        "dataset the trainers read as it is)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of images put in the 'val' split, chosen by a hash of each image's export name, "
                        "so adding images never moves earlier ones (default: 0.2)")
    p.add_argument("--split-seed", type=int, default=0, metavar="N", help="seed of the train/val hash (default: 0)")
    p.add_argument("--yolo-min-piece-area", type=int, default=4, metavar="PX",
                   help="leave pieces of an instance smaller than this many pixels out of its YOLO polygon "
                        "(its largest piece is always kept; default: 4)")
    p.add_argument("--normal", type=Path, metavar="FOLDER",
                   help="defect-free images of the same object (a few are enough): they become normal references "
                        "and a few-shot map is fused into the rough map (see --fewshot-weight)")
    p.add_argument("--fewshot-weight", type=float, metavar="W",
                   help="with --normal: rough map = (1 - W) zero-shot + W few-shot (default: the config's, 0.5)")
    p.add_argument("--no-mutual", action="store_true",
                   help="segment each image alone; by default a run of 5 or more images of the object is scored by "
                        "folder mutual scoring (each image against the others, no training or references; "
                        "docs/method.md), fewer images are segmented alone")
    p.add_argument("--mutual-group-size", type=int, default=DEFAULT_GROUP_SIZE, metavar="N",
                   help=f"mutual scoring: a run of more images is cut into interleaved groups of at most N, each "
                        f"scored as one folder, so memory and time per image stay bounded (default: "
                        f"{DEFAULT_GROUP_SIZE}; at least 10)")
    add_engine_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from .ray.options import check_ray_options
    from .segment_job import plan_job

    if getattr(args, "ray", None) is not None:
        check_ray_options(args)
    job = plan_job(args)
    if getattr(args, "ray", None) is not None:
        from .ray.segment import segment_on_ray  # Ray is imported only there

        return segment_on_ray(job)
    return _segment_here(job)


def _segment_here(job) -> int:
    """Compute every image of ``job.todo`` with one engine in this process, exporting each as it is done."""
    from tqdm.auto import tqdm

    from ..errors import Cancelled
    from ..io.images import read_image

    args = job.args
    t0 = time.perf_counter()
    load_seconds = 0.0
    note(f"mode: {job.mode} ({job.why})")
    if job.todo:
        engine = build_engine(job.cfg, args.progress)
        load_seconds = time.perf_counter() - t0
        note(f"engine: {describe_engine(engine)}")
        if engine.umci is None:
            note(training_free_note(job.mode == MUTUAL, engine.config.mutual_clip_weight))
        if job.normal:
            t_ref, misses = time.perf_counter(), engine.cache_info().reference_banks.misses
            engine.set_normal_references([read_image(f) for f in job.normal], args.object)
            built = engine.cache_info().reference_banks.misses > misses  # else read from the cache
            note(f"few-shot: {len(job.normal)} normal reference(s) from {args.normal}, weight "
                 f"{engine.config.fewshot_weight:g} ({time.perf_counter() - t_ref:.1f} s; "
                 f"{'cached for next time' if built else 'read from the cache'})")
        try:
            with tqdm(total=len(job.todo), desc="segment", unit="img", disable=not args.progress,
                      dynamic_ncols=True) as bar:
                try:
                    if job.groups:
                        _groups_here(job, engine, bar)
                    else:
                        _images_here(job, engine, bar)
                except (KeyboardInterrupt, Cancelled):
                    job.say_interrupted()
                    raise
        finally:
            job.merge()  # the shards of this run into coco/annotations.json, also when interrupted
    seconds = time.perf_counter() - t0
    timing = ""
    if job.todo:
        per_image = (seconds - load_seconds) / len(job.todo)
        timing = f" (loading models {load_seconds:.1f} s, then {per_image:.2f} s/image)"
    return job.report(seconds, timing)


def _images_here(job, engine, bar) -> None:
    """Per-image mode: read, segment and export one image at a time."""
    from .segment_items import ItemReader

    reader = ItemReader()
    for item in job.todo:
        try:
            pixels = reader.read(item)
            result = engine.segment(pixels, job.args.object)
            job.export(item, result.instances, result.provenance, pixels)
        except Exception as exc:  # one bad image must not stop the others (reported below)
            if _is_cancel(exc):
                raise
            job.fail_with(item, exc)
        bar.update(1)
        bar.set_postfix(done=job.done, failed=len(job.failed))


def _groups_here(job, engine, bar) -> None:
    """Mutual mode: each group that holds images to do is read whole, scored as one folder, and its images to do
    exported (:mod:`.segment_groups`)."""
    from .segment_groups import read_group, score_group

    pending = set(job.todo)
    for g, group in enumerate(job.groups, 1):
        bar.set_description(f"segment (group {g}/{len(job.groups)}: {len(group)} images)")
        readable, pixels, unreadable = read_group(group)
        for item, exc in unreadable:
            if item in pending:
                job.fail_with(item, exc)
                bar.update(1)
        try:
            results = score_group(engine, pixels, job.args.object, job.group_record(group))
        except Exception as exc:
            if _is_cancel(exc):
                raise
            for item in readable:
                if item in pending:
                    job.fail_with(item, exc)
                    bar.update(1)
            continue
        for item, px, result in zip(readable, pixels, results):
            if item not in pending:
                continue  # done earlier: kept as it was written
            try:
                job.export(item, result.instances, result.provenance, px)
            except Exception as exc:  # an export error: reported, the others go on
                job.fail_with(item, exc)
            bar.update(1)
        bar.set_postfix(done=job.done, failed=len(job.failed))


def _is_cancel(exc: BaseException) -> bool:
    from ..errors import Cancelled

    return isinstance(exc, Cancelled)
