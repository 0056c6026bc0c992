"""One ``segment`` job, whoever computes the masks: the plan (which images, their stems and splits, what resume
skips), the export of one image's instances, failure and interruption reporting, the end-of-run COCO merge and
the summary. The local loop (:mod:`.segment`) and the Ray driver (:mod:`napari_clipsam.cli.ray.segment`)
both go through :class:`SegmentJob`, so they write the same files and say the same things.
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClipSAMUserError, InvalidInputError, PathKindError
from .common import EXIT_FAILED, EXIT_OK, engine_config, note, split_list

TOP_SCORES = 10
"""How many of the highest image scores the summary lists."""


@dataclass
class SegmentJob:
    """What a ``segment`` run does, and what it did so far.

    Attributes:
        args: the parsed command line; cfg: the validated engine config; out: the output folder (absolute).
        formats: the export formats in canonical order; files: every image of the run
        (:class:`~.segment_items.Item`: a file or one frame of a multi-frame TIFF), in input order;
        stems: item → export stem; split: item → ``"train"``/``"val"``; todo: the items to compute (not done,
        or ``--overwrite``); skipped: how many were done already; normal: ``--normal`` reference images.
        mode, why: ``"mutual"`` or ``"per-image"`` and the reason (:mod:`.segment_groups`); groups: the
        mutual-scoring groups of items that hold something to do (empty in per-image mode).
        done: images exported in this run; failed: ``(file, why)`` of the images that failed;
        lost: what the formats could not hold, summed over this run's exports.
        scores: item → image score (``image_score`` of its provenance) of the images exported in this run;
        kept_scores: the same of the skipped images, from the provenance their earlier run wrote (a resumed run's
        summary ranks the whole folder, not only the images it redid).
    """

    args: object
    cfg: object
    out: Path
    formats: list[str]
    files: list
    stems: dict
    split: dict
    todo: list
    skipped: int
    normal: list[Path] = field(default_factory=list)
    mode: str = "per-image"
    why: str = ""
    groups: list = field(default_factory=list)
    n_groups: int = 0
    done: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=lambda: {"verified": 0, "pseudo": 0})
    scores: dict = field(default_factory=dict)
    kept_scores: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ per image
    def export(self, item, instances, provenance: dict, pixels=None) -> None:
        """Write one image's instances ((H, W) int ids, 0 background) in every requested format; counts it done.
        ``pixels``: a frame's pixels (written into the dataset as PNG; a file is copied). The provenance gets
        this run's ``scoring`` (mode and why) unless it has one. COCO shards are merged later (:meth:`merge`)."""
        from .segment_groups import scoring_record

        import numpy as np

        from ..export import ExportRequest, write_export

        a = self.args
        ids = [int(i) for i in np.unique(instances) if i > 0]
        provenance = dict(provenance)
        provenance.setdefault("scoring", scoring_record(self.mode, self.why))
        if item.frame is not None:
            provenance["frame"] = item.frame
            if pixels is None:
                from .segment_items import ItemReader

                pixels = ItemReader().read(item)
        report = write_export(ExportRequest(
            out_dir=self.out, stem=self.stems[item], instances=instances,
            instance_classes=dict.fromkeys(ids, a.class_name), classes=[a.class_name],
            formats=self.formats, provenance=provenance, image_file=item.path, overwrite=a.overwrite,
            coco_merge=False, image=None if item.frame is None else pixels,
            coco_segmentation=a.coco_segmentation, dataset_images=a.dataset_images, val_fraction=a.val_fraction,
            split_seed=a.split_seed, resplit=a.overwrite, yolo_min_piece_area=a.yolo_min_piece_area))
        for key, value in report.summary.items():
            self.lost[key] = self.lost.get(key, 0) + value
        self.objects["verified"] += report.n_verified
        self.objects["pseudo"] += report.n_pseudo
        if provenance.get("image_score") is not None:
            self.scores[item] = float(provenance["image_score"])
        self.done += 1

    def group_record(self, group: list) -> dict:
        """What the provenance says of a mutual-scoring group: its index (interleaved: the position of its first
        image), how many groups the run has, its size, the size limit and the run's number of images."""
        return {"index": self.files.index(group[0]), "count": self.n_groups, "size": len(group),
                "limit": self.args.mutual_group_size, "run_images": len(self.files)}

    def fail(self, path, why: str, trace: str | None = None) -> None:
        """Record a failed image and say so on stderr (with ``trace``, the traceback of a bug, first)."""
        from tqdm.auto import tqdm

        why = " ".join(why.split())
        self.failed.append((path, why))
        if trace:
            tqdm.write(trace.rstrip(), file=sys.stderr)
        tqdm.write(f"failed: {path}: {why}", file=sys.stderr)

    def fail_with(self, path, exc: BaseException) -> None:
        """:meth:`fail` for an exception: a user error (bad image) without traceback, anything else with it."""
        trace = None if isinstance(exc, ClipSAMUserError) else "".join(traceback.format_exception(exc))
        self.fail(path, f"{type(exc).__name__}: {exc}", trace)

    def say_interrupted(self) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"interrupted after {self.done} image(s) done, {len(self.failed)} failed; their outputs are "
                   "complete (each written atomically): run the same command again to continue.", file=sys.stderr)

    def merge(self) -> None:
        """Fold this run's COCO shards into ``coco/annotations.json`` (also after an interruption)."""
        from ..export import merge_coco

        if self.done and "coco" in self.formats:
            merge_coco(self.out)

    # ------------------------------------------------------------------ end of run
    def report(self, seconds: float, timing: str = "") -> int:
        """Print the summary (stdout) and return the exit code (1 when an image failed)."""
        a = self.args
        frames = sum(it.frame is not None for it in self.files)
        n_stacks = len({it.path for it in self.files if it.frame is not None})
        of = f" ({frames} of them frames of {n_stacks} multi-frame file(s))" if frames else ""
        print(f"segment: {len(self.files)} images{of}: {self.done} done, {self.skipped} skipped (outputs exist"
              f"{'' if a.overwrite else '; --overwrite redoes them'}), {len(self.failed)} failed, "
              f"in {seconds:.1f} s{timing}; outputs in {self.out}")
        if any(self.lost.values()):
            print("  what the formats could not hold (docs/export-formats.md): "
                  + ", ".join(f"{key} {value}" for key, value in self.lost.items() if value))
        print(f"  mode: {self.mode} ({self.why})" + (
            f"; {self.n_groups} group(s) of at most {a.mutual_group_size} images" if self.mode == "mutual" else ""))
        if self.done:
            print(f"  objects exported: {self.objects['pseudo']} pseudo-label(s) (unreviewed), "
                  f"{self.objects['verified']} verified by a person")
        scores = {**self.kept_scores, **self.scores}
        if scores:
            top = sorted(scores.items(), key=lambda kv: -kv[1])[:TOP_SCORES]
            print(f"  highest image scores (review these first; napari-clipsam report {self.out}): "
                  + ", ".join(f"{self.stems[item]} {score:.3f}" for item, score in top))
        failed = {f for f, _ in self.failed}
        kept = [f for f in self.files if f not in failed]  # a failed image is in no split
        n_val = sum(self.split[f] == "val" for f in kept)
        if "yolo" in self.formats:
            print(f"  split: {len(kept) - n_val} train, {n_val} val" + (
                " (val is empty: Ultralytics needs val images; raise --val-fraction or change --split-seed)"
                if n_val == 0 else ""))
        for path, why in self.failed:
            print(f"  failed: {path}: {why}")
        return EXIT_FAILED if self.failed else EXIT_OK


def check_writable_folder(folder: Path, option: str) -> None:
    """Refuse, before any model loads, a folder that cannot be made or written: the nearest existing folder on
    its path must be a folder this user may write in."""
    import os

    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise PathKindError(f"{option} {folder} cannot be made: {existing} is a file, not a folder. Give a folder "
                            "path whose parents are folders.")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == folder else f"would be made inside {existing}, which is"
        raise PathKindError(f"{option} {folder} {what} not writable by you; choose a folder you can write to.")


def plan_job(args) -> SegmentJob:
    """Check the options, find the images and decide what to compute (resume: the images not done, by the
    exporter's own definition). Removes temporary files an interrupted run left and merges its COCO shards.
    Raises a :class:`~napari_clipsam.errors.ClipSAMUserError` naming a bad option or input."""
    from ..clip.text_prompts import clean_object_name
    from ..export import FORMATS, clean_stale_files, dataset_split, image_done, merge_coco, resolve_split
    from ..export.dataset import IMAGE_SUFFIXES, check_split_options
    from .segment_groups import MUTUAL, check_group_size, choose_mode, folder_groups
    from ..report.collect import score_of
    from .segment_inputs import collect_images, labelled_for_other_objects, latest_exports, normal_images, stems_for
    from .segment_items import expand_frames, item_stems

    formats = split_list(args.formats) or []
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InvalidInputError(f"Unknown export format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}.")
    formats = [f for f in FORMATS if f in formats]
    if not formats:
        raise InvalidInputError(f"--formats is empty; give one or more of {','.join(FORMATS)}.")
    clean_object_name(args.object)
    if not args.class_name.strip():
        raise InvalidInputError("--class-name must not be empty.")
    try:
        check_split_options(args.val_fraction, args.split_seed)
    except ValueError as err:
        raise InvalidInputError(str(err)) from None
    if args.yolo_min_piece_area < 1:
        raise InvalidInputError(f"--yolo-min-piece-area must be at least 1 pixel, got {args.yolo_min_piece_area}.")
    weight = {} if args.fewshot_weight is None else {"fewshot_weight": args.fewshot_weight}
    cfg = engine_config(args, **weight)  # refuse bad engine options before looking at any image
    normal = normal_images(args.normal, args.extensions) if args.normal is not None else []
    if args.fewshot_weight is not None and args.normal is None:
        note(f"--fewshot-weight {args.fewshot_weight:g} has no effect without --normal (the few-shot map it "
             "weighs comes from normal references).")
    if normal:
        from ..clip.fewshot import check_settings

        check_settings(cfg)
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise PathKindError(f"--out {out} is a file; give a folder for the pseudo-labels.")
    check_writable_folder(out, "--out")
    extensions = split_list(args.extensions)
    if not extensions:
        raise InvalidInputError("--extensions is empty; give file suffixes such as .png,.tif")
    if getattr(args, "no_mutual", False) is False:
        check_group_size(args.mutual_group_size, cfg.mutual_min_images)
    keys = collect_images(args.inputs, extensions, args.recursive, exclude=out)
    files = expand_frames(list(keys))
    stems = item_stems(files, stems_for(keys))
    mode, why = choose_mode(len(files), bool(getattr(args, "no_mutual", False)), cfg.mutual_min_images)
    if out.is_dir():
        stale = clean_stale_files(out)
        if stale:
            note(f"removed {len(stale)} temporary file(s) left in {out} by an interrupted run")
        if "coco" in formats:
            merge_coco(out)  # shards an interrupted run did not merge yet
    split = {f: resolve_split(out, stems[f], formats, args.val_fraction, args.split_seed, args.overwrite)[0]
             for f in files}  # an image written before keeps its split unless --overwrite
    stayed = [f for f in files if split[f] != dataset_split(stems[f], args.val_fraction, args.split_seed)]
    if stayed:
        note(f"{len(stayed)} image(s) keep the train/val split they were written in, which --val-fraction "
             f"{args.val_fraction:g} / --split-seed {args.split_seed} would change (no image is put in both); "
             "add --overwrite to re-split them.")
    with_images = args.dataset_images and bool({"coco", "yolo"} & set(formats))

    def suffix(item) -> str | None:
        s = item.path.suffix.lower()
        return (s if s in IMAGE_SUFFIXES and item.frame is None else ".png") if with_images else None

    todo = [f for f in files if args.overwrite
            or not image_done(out, stems[f], formats, split=split[f], image_suffix=suffix(f))]
    pending = set(todo)
    records = latest_exports(out, [stems[f] for f in files if f not in pending])  # read once: both uses below
    others = labelled_for_other_objects(records, args.object)
    kept_scores = {f: score for f in files
                   if stems[f] in records and (score := score_of(records[stems[f]])) is not None}
    if others:
        note(f"{len(others)} skipped image(s) were labelled for another object ({', '.join(sorted(set(others)))!s}"
             f"), not {args.object!r}; add --overwrite to label them again.")
    groups = folder_groups(files, args.mutual_group_size) if mode == MUTUAL else []
    return SegmentJob(args=args, cfg=cfg, out=out, formats=formats, files=files, stems=stems, split=split,
                      todo=todo, skipped=len(files) - len(todo), normal=normal, mode=mode, why=why,
                      groups=[g for g in groups if pending & set(g)], n_groups=len(groups),
                      kept_scores=kept_scores)
