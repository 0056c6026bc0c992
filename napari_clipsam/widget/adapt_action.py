"""The dock's *Adapt to this product*: train the UMCI head on a folder review's accepted labels, in the background.

The labels folder is the review's (*Labels* on the Review tab). Training runs
:func:`~napari_clipsam.training.adapt.adapt_to_review` in a :class:`~.workers.Task` (progress bar, Cancel; a
cancelled run leaves no file), saves ``umci_adapted[-N].pt`` with its JSON provenance next to the labels (never over
an existing one), then the dock's engine becomes the same models with the adapted head: the *UMCI* setting names
the checkpoint, so the next Runs (and later sessions) use it, and their provenance names its SHA-256.
"""
from __future__ import annotations

from pathlib import Path

from .workers import Outcome, Task, end_background_task, ensure_engine


def with_adapted_head(engine, umci, checkpoint: Path):
    """A new engine with ``engine``'s CLIP, tokenizer and SAM (shared, not copied) and the adapted ``umci`` head,
    identified by the checkpoint file's SHA-256 as an engine loaded from that file is."""
    from ..engine.clipsam import ClipSAM
    from ..weights.loaders import file_id

    identity = {k: v for k, v in engine.identity.items() if k not in ("encoders", "config_replaced")}
    identity["umci_weights"] = file_id(checkpoint)
    config = engine.config.replace(umci_weights=str(checkpoint))
    return ClipSAM(engine.clip_model, engine.text.tokenizer, engine.sam.model, umci.eval(), config,
                   identity=identity)


def _adapt_job(engine, config, labels: str, settings):
    def job(progress, cancelled):
        from ..training.adapt import adapt_to_review

        eng, base = ensure_engine(engine, config, progress, cancelled)
        report = adapt_to_review(eng, labels, settings, cancelled=cancelled,
                                 progress=lambda s, f: progress(f"adapting: {s}", base + (1 - base) * f))
        return with_adapted_head(eng, report.train.umci, report.checkpoint), report

    return job


class AdaptAction:
    """Wires *Adapt to this product* to the dock ``w`` (a :class:`~.clipsam_widget.ClipSAMWidget`).

    ``settings``: training settings for :func:`~napari_clipsam.training.adapt.adapt_to_review` (default: the
    adaptation's, :func:`~napari_clipsam.training.adapt.adapt_settings`); tests use fewer epochs.
    """

    def __init__(self, w, settings=None):
        self.w, self.settings = w, settings
        w.c.qa_adapt.clicked.connect(lambda: self.start())

    def start(self) -> bool:
        """Train in the background. Returns False when refused (the status line says why)."""
        w = self.w
        if w.busy:
            w.set_status("ClipSAM is already running: wait for it to finish or press Cancel.")
            return False
        labels = w.c.qa_output.text().strip()
        if not labels or not (Path(labels).expanduser() / "clipsam_manifest.json").is_file():
            w.set_status("Adapting needs a folder review's labels: set Labels (Review tab) to the folder the "
                         "review writes, accept at least 4 images there, then press Adapt to this product.")
            return False
        try:
            config = None if w._engine is not None else w.engine_config()
        except ValueError as err:
            w.set_status(str(err))
            return False
        w.save_settings()
        w.heartbeat.start(f"Adapting the UMCI head to the accepted labels in {labels}…")
        w.c.progress.setValue(0)
        w._set_running(True)
        w.c.qa_adapt.setEnabled(False)
        generation = w._engine_generation
        w.task = Task(_adapt_job(w._engine, config, labels, self.settings), w._on_progress,
                      lambda outcome: self._done(outcome, generation), owner=w)
        w.task.start()
        return True

    def _done(self, outcome: Outcome, generation: int) -> None:
        w = self.w
        if not end_background_task(w, outcome, w.c.qa_adapt):
            return
        engine, report = outcome.value
        used = f"rough map: adapted head {report.checkpoint.name}, {report.defect_images + report.good_images} images"
        if generation == w._engine_generation:  # the engine settings did not change meanwhile
            w.c.umci.blockSignals(True)
            w.c.umci.setText(str(report.checkpoint))
            w.c.umci.blockSignals(False)
            w._built_for = w._engine_key()
            w._engine = engine
            w.save_settings()
            note = "the next images use it"
        else:
            note = "the engine settings changed meanwhile: set UMCI to it to use it"
        w.c.progress.setValue(100)
        w.set_status(f"{used} ({report.defect_images} with objects, {report.good_images} good), saved with its "
                     f"provenance in {report.checkpoint.parent}; {note}.")
        w.run_finished.emit(outcome)
