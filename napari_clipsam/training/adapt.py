"""Adapt to this product: train the UMCI head on what a person accepted in a folder review.

::

    engine = ClipSAM.from_config(config)                    # the engine that labelled the folder
    report = adapt_to_review(engine, "plates_labels/")      # accepted labels → labels/umci_adapted.pt
    engine = ClipSAM.from_config(config.replace(umci_weights=str(report.checkpoint)))

The training set is the review's accepted images (their masks) and its accepted good parts (all normal), read by
:class:`~napari_clipsam.data.review_labels.ReviewDataset`. The checkpoint goes next to the labels
(``umci_adapted.pt``; when that name is taken, ``umci_adapted-2.pt``, ... unless ``overwrite``), with a JSON
sidecar (``umci_adapted.json``) that says what it was trained on: every image, the counts, the settings and the
library versions (the checkpoint holds the same under ``training_data`` and ``versions``).

Training runs on a fork of torch's RNG, reports ``progress(stage, fraction)`` and polls ``cancelled()`` before
every batch, as the engine's runs do, so a GUI can run it in a worker thread. It writes a partial file
(``.<name>.partial.pt``) while it runs and moves it into place only when every epoch is done; a cancelled or failed
run leaves nothing behind.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError, OutputExistsError, PathKindError
from ..io.atomic import atomic_file
from .trainer import TrainReport, TrainSettings, describe_dataset, library_versions, train_umci

MIN_ACCEPTED = 4
"""The fewest accepted images (with objects or good parts; at least one with objects) an adaptation needs."""
ADAPT_EPOCHS = 30
"""Default epochs for an adaptation: a review gives few images, so more passes than a dataset run (measured:
docs/method.md#adapting-to-a-product)."""
CHECKPOINT_NAME = "umci_adapted"


def adapt_settings(**overrides) -> TrainSettings:
    """The training settings of an adaptation: :class:`TrainSettings` with :data:`ADAPT_EPOCHS` epochs and no
    progress bars (``overrides`` replace any field)."""
    return TrainSettings(**{"epochs": ADAPT_EPOCHS, "progress": False, **overrides})


@dataclass
class AdaptReport:
    """What :func:`adapt_to_review` did: the training report, where the checkpoint and its sidecar are, the
    counts of accepted images used and the images left out."""

    train: TrainReport
    checkpoint: Path
    sidecar: Path
    defect_images: int
    good_images: int
    left_out: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"UMCI adapted on {self.defect_images} accepted image(s) with objects and {self.good_images} good "
                f"part(s), {self.train.epochs} epochs (final loss {self.train.final_loss:.4f}): {self.checkpoint}")


def open_review_training_set(labels_dir: str | Path, category: str | None = None, *,
                             min_images: int = MIN_ACCEPTED):
    """The review's accepted labels as a training set; a clear error when there are too few."""
    from ..data.review_labels import ReviewDataset

    dataset = ReviewDataset(labels_dir, category=category)
    defects = int(sum(s.label for s in dataset.samples))
    goods = len(dataset) - defects
    counts = dataset.review.counts()
    if len(dataset) < min_images or defects == 0:
        left = f"; {len(dataset.notes)} accepted image(s) could not be used ({dataset.notes[0]}, ...)" \
            if dataset.notes else ""
        raise InvalidInputError(
            f"The review in {dataset.root} has {defects} accepted image(s) with objects and {goods} accepted good "
            f"part(s) ({counts['rejected']} rejected, {counts['skipped']} skipped{left}); adapting needs at least "
            f"{min_images} accepted images, at least one of them with objects. Accept more images in the folder "
            "review, then train again.")
    return dataset


def checkpoint_path(labels_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Where the adapted checkpoint goes: ``out``, else ``<labels_dir>/umci_adapted.pt`` or, when taken and not
    ``overwrite``, the first free ``umci_adapted-N.pt``. An explicit ``out`` that exists raises unless
    ``overwrite``."""
    if out is not None:
        path = Path(out).expanduser()
        if path.is_dir():
            raise PathKindError(f"The checkpoint path {path} is a folder; give a file name such as umci.pt.")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"Checkpoint {path} already exists; choose another name or allow overwriting "
                                    "(--overwrite) to replace it.")
        return path
    folder = Path(labels_dir).expanduser()
    path, n = folder / f"{CHECKPOINT_NAME}.pt", 1
    while not overwrite and (path.exists() or _sidecar(path).exists()):
        n += 1
        path = folder / f"{CHECKPOINT_NAME}-{n}.pt"
    return path


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def adapt_to_review(engine, labels_dir: str | Path, settings: TrainSettings | None = None, *,
                    out: str | Path | None = None, overwrite: bool = False, category: str | None = None,
                    min_images: int = MIN_ACCEPTED, progress: Callable[[str, float], None] | None = None,
                    cancelled: Callable[[], bool] | None = None,
                    log: Callable[[str], None] = lambda message: None) -> AdaptReport:
    """Train UMCI on a review's accepted labels over the engine's frozen CLIP; save it next to the labels.

    Args:
        engine: the :class:`~napari_clipsam.engine.clipsam.ClipSAM` to adapt (its CLIP, prompts and image size
            define the head; its SAM and any UMCI it holds are not used, and it is not changed).
        labels_dir: a folder review's output folder (holding ``clipsam_manifest.json``).
        settings: training settings (default :func:`adapt_settings`).
        out, overwrite: see :func:`checkpoint_path`.
        category: the object name for every image (default: the one each label was made for).
        min_images: fewest accepted images accepted (:data:`MIN_ACCEPTED`).
        progress, cancelled: as the engine's (``progress(stage, fraction)``; ``cancelled()`` True stops the run
            with :class:`~napari_clipsam.errors.Cancelled`, nothing written).
        log: one-line messages (images left out, setting changes).

    Raises:
        InvalidInputError: not a review folder, or too few accepted images. OutputExistsError: ``out`` exists.
    """
    settings = settings or adapt_settings()
    dataset = open_review_training_set(labels_dir, category, min_images=min_images)
    for note in dataset.notes:
        log(note)
    path = checkpoint_path(labels_dir, out, overwrite)
    partial = path.with_name(f".{path.stem}.partial.pt")
    try:
        report = train_umci(engine, dataset, settings, out=partial, log=log, progress=progress, cancelled=cancelled)
        doc = {"format": "napari-clipsam/umci-adaptation", "version": 1, "checkpoint": path.name,
               "training_data": describe_dataset(dataset), "versions": library_versions(),
               "settings": {"epochs": report.epochs, "batch_size": settings.batch_size, "lr": settings.lr,
                            "betas": list(settings.betas), "seed": settings.seed, "focal_gamma": settings.focal_gamma,
                            "image_size": engine.config.image_size, "feature_layers": list(report.umci.layers)},
               "clip": {k: engine.identity.get(k) for k in ("clip_model", "clip_weights")},
               "epoch_losses": report.epoch_losses, "umci_parameters": report.parameters}
        _place(partial, path, overwrite)
    finally:
        partial.unlink(missing_ok=True)
    with atomic_file(_sidecar(path)) as f:
        f.write((json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    report.checkpoint = path
    defects = int(sum(s.label for s in dataset.samples))
    return AdaptReport(report, path, _sidecar(path), defects, len(dataset) - defects, list(dataset.notes))


def _place(partial: Path, path: Path, overwrite: bool) -> None:
    """Move the finished checkpoint into place; without ``overwrite`` never replace a file that appeared
    meanwhile (a hard link fails when the name exists; where links are not supported, check then rename)."""
    if overwrite:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)
    except FileExistsError:
        raise OutputExistsError(f"Checkpoint {path} was created by someone else while training ran; nothing was "
                                "replaced. Train again to get a new name.") from None
    except OSError:
        if path.exists():
            raise OutputExistsError(f"Checkpoint {path} appeared while training ran; nothing was replaced.") from None
        os.replace(partial, path)
