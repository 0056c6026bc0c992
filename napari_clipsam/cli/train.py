"""``napari-clipsam train``: train the UMCI head on frozen CLIP (method §2) from a dataset with masks.

The checkpoint (``--out``) is rewritten atomically after every epoch and holds the optimizer and random state,
so ``--resume`` continues exactly where a run stopped (on the CPU, a resumed run ends with the same weights as
an uninterrupted one). SAM is not used: unless a ``local-dir:`` SAM is given, none is downloaded or read.

``--layout review`` adapts the head to a product from a folder review's accepted labels
(:mod:`napari_clipsam.training.adapt`): the checkpoint goes next to the labels unless ``--out`` is given, under
a new name when ``umci_adapted.pt`` is taken (or in its place with ``--overwrite``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidInputError, MissingFileError, OutputExistsError, PathKindError
from .common import (EXIT_OK, add_dataset_options, add_engine_options, build_engine, describe_engine, engine_config,
                     note, split_list, without_sam)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train the UMCI head (frozen CLIP) on a dataset with masks",
        description="Trains UMCI on the test split (images + masks) of an auxiliary dataset, as in the paper "
                    "(train on VisA to use on MVTec-AD and vice versa). Checkpoints every epoch; --resume "
                    "continues an interrupted run with identical results.")
    add_dataset_options(p, "train on")
    p.add_argument("--epochs", type=int,
                   help="total epochs (default 3, or 30 with --layout review; the paper uses 15 on VisA)")
    p.add_argument("--batch-size", type=int, default=8, help="images per training step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3, betas 0.5/0.999)")
    p.add_argument("--seed", type=int, default=111, help="seeds the initialisation and batch order (default 111)")
    p.add_argument("--feature-layers", type=int, nargs="+", metavar="N",
                   help="1-based CLIP blocks feeding UMCI (default 6 12 18 24)")
    p.add_argument("--out", type=Path, metavar="CHECKPOINT.pt",
                   help="checkpoint to write (required, except with --layout review: then "
                        "LABELS_FOLDER/umci_adapted.pt, or umci_adapted-2.pt, ... when taken)")
    p.add_argument("--resume", nargs="?", const=True, metavar="CHECKPOINT",
                   help="continue training from --out (or from the checkpoint given) until --epochs are done")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out instead of refusing")
    p.add_argument("--cache-gb", type=float, default=8.0,
                   help="memory for cached CLIP features; beyond it they go to a temporary file (default 8)")
    p.add_argument("--cache-dir", type=Path, help="folder of that temporary feature file")
    add_engine_options(p, umci=False, sam=False)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if args.layout == "review":
        return run_review(args)
    if args.out is None:
        raise InvalidInputError("--out is required: give the checkpoint file to write, such as umci.pt (only "
                                "--layout review has a default, next to the labels).")
    if args.epochs is None:
        args.epochs = 3
    from ..data import open_dataset
    from ..training.trainer import TrainSettings, train_umci
    from ..weights.umci_checkpoint import read_umci

    out = Path(args.out).expanduser()
    resume = None
    if args.resume is not None:
        resume = out if args.resume is True else Path(args.resume).expanduser()
        if not resume.is_file():
            raise MissingFileError(f"Nothing to resume: checkpoint {resume} does not exist; run without --resume "
                                   "to start training.")
    if out.is_dir():
        raise PathKindError(f"--out {out} is a folder; give a checkpoint file name such as umci.pt.")
    if out.exists() and not args.overwrite and (resume is None or out.resolve() != resume.resolve()):
        raise OutputExistsError(f"Checkpoint {out} already exists; add --resume to continue it or --overwrite to "
                                "train a new one in its place.")
    check_numbers(args, args.epochs)

    dataset = open_dataset(args.dataset_root, args.layout, split_list(args.categories), split="test")
    overrides = {}
    if args.feature_layers:
        overrides["feature_layers"] = tuple(args.feature_layers)
    if resume is not None and args.image_size is None:
        overrides["image_size"] = int(read_umci(resume)["image_size"])  # the size it was trained at
    cfg = without_sam(engine_config(args, **overrides))
    note(f"training set: {dataset!r}")
    engine = build_engine(cfg, args.progress, sam=False)
    note(f"engine: {describe_engine(engine, sam=False)} (frozen; SAM is not used in training)")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             cache_bytes=int(args.cache_gb * (1 << 30)),
                             cache_dir=None if args.cache_dir is None else str(args.cache_dir),
                             progress=args.progress)
    report = train_umci(engine, dataset, settings, out=out, resume=resume, log=note)
    losses = ", ".join(f"{v:.4f}" for v in report.epoch_losses)
    resumed = f"resumed after epoch {report.resumed_from_epoch}, " if report.resumed_from_epoch else ""
    written = f"checkpoint {report.checkpoint}" if report.checkpoint else f"nothing new written to {out}"
    print(f"train: {report.epochs} epoch(s) on {report.images} images ({resumed}losses per epoch: {losses}); "
          f"UMCI {report.parameters:,} parameters; CLIP features {report.feature_seconds:.1f} s, training "
          f"{report.train_seconds:.1f} s; {written}")
    return EXIT_OK


def run_review(args) -> int:
    """``train --layout review``: adapt UMCI to a folder review's accepted labels."""
    from ..training.adapt import ADAPT_EPOCHS, adapt_settings, adapt_to_review, checkpoint_path, \
        open_review_training_set

    if args.resume is not None:
        raise InvalidInputError("--resume is not available with --layout review (an adaptation is short); train "
                                "again, the new checkpoint gets a new name.")
    epochs = ADAPT_EPOCHS if args.epochs is None else args.epochs
    check_numbers(args, epochs)
    names = split_list(args.categories) or []
    if len(names) > 1:
        raise InvalidInputError(f"--layout review trains one object; give at most one --categories name, got {names}.")
    category = names[0] if names else None
    dataset = open_review_training_set(args.dataset_root, category)  # the clear errors before any model loads
    path = checkpoint_path(args.dataset_root, args.out, args.overwrite)
    overrides = {"feature_layers": tuple(args.feature_layers)} if args.feature_layers else {}
    cfg = without_sam(engine_config(args, **overrides))
    note(f"training set: {dataset!r}")
    engine = build_engine(cfg, args.progress, sam=False)
    note(f"engine: {describe_engine(engine, sam=False)} (frozen; SAM is not used in training)")
    settings = adapt_settings(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              cache_bytes=int(args.cache_gb * (1 << 30)),
                              cache_dir=None if args.cache_dir is None else str(args.cache_dir),
                              progress=args.progress)
    report = adapt_to_review(engine, args.dataset_root, settings, out=path, overwrite=args.overwrite,
                             category=category, log=note)
    losses = ", ".join(f"{v:.4f}" for v in report.train.epoch_losses[-3:])
    print(f"train: {report.summary()}; provenance {report.sidecar}; last losses {losses}. Use it with "
          f"--umci {report.checkpoint} (or the dock's UMCI weights).")
    return EXIT_OK


def check_numbers(args, epochs: int) -> None:
    """InvalidInputError naming each of --epochs, --batch-size (≥ 1), --lr, --cache-gb (> 0) that is out of range."""
    wrong = [f"{flag} {value:g} (must be {rule})" for flag, value, ok, rule in (
        ("--epochs", epochs, epochs >= 1, "at least 1"), ("--batch-size", args.batch_size, args.batch_size >= 1,
                                                          "at least 1"),
        ("--lr", args.lr, args.lr > 0, "greater than 0"), ("--cache-gb", args.cache_gb, args.cache_gb > 0,
                                                           "greater than 0")) if not ok]
    if wrong:
        raise InvalidInputError(f"Out of range: {'; '.join(wrong)}.")
