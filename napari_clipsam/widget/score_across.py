"""The dock's folder mutual scoring: the viewer's image layers, or the frames of a stack, scored against each other.

*Across* chooses the set; *Score* runs :meth:`~napari_clipsam.ClipSAM.segment_folder` over it in a background
:class:`~.workers.Task` (progress bar, Cancel) and shows each image's result in its output layers as a Run does.
Fewer than the engine's minimum (5) images: the status line says how many are needed and what to do instead.
"""
from __future__ import annotations

from .source import contrast_limits_for, frame_count, read_frame
from .workers import Outcome, Task, end_background_task, ensure_engine, folder_settings

LAYERS, FRAMES = "image layers", "stack frames"


def _folder_job(engine, config, images: list, object_name: str, settings: dict, contrast_limits):
    def job(progress, cancelled):
        eng, base = ensure_engine(engine, config, progress, cancelled)
        results = eng.segment_folder(images, object_name, progress=lambda s, f: progress(s, base + (1 - base) * f),
                                     cancelled=cancelled, settings=settings,
                                     contrast_limits=contrast_limits)
        return eng, results

    return job


class ScoreAcross:
    """Wires *Across* / *Score* to the dock ``w`` (a :class:`~.clipsam_widget.ClipSAMWidget`)."""

    def __init__(self, w):
        self.w = w
        w.c.across_run.clicked.connect(lambda: self.start())

    def _targets(self) -> tuple[list, list]:
        """(sources, [(source, frame)]) for the chosen set; raises ValueError with what to do."""
        w = self.w
        if w.c.across.currentText() == FRAMES:
            src = w.picker.current
            n = None if src is None else frame_count(src)
            if not n:
                raise ValueError("Choose a stack (an N×H×W image layer) as Image to score its frames, or score "
                                 "across all image layers.")
            return [src], [(src, f) for f in range(n)]
        layers = [x for x in w.picker._candidates() if frame_count(x) is None]
        return layers, [(x, None) for x in layers]

    def start(self) -> bool:
        """Score the chosen set in the background. Returns False when refused (the status line says why)."""
        w = self.w
        if w.busy:
            w.set_status("ClipSAM is already running: wait for it to finish or press Cancel.")
            return False
        if not w.object_name:
            w.set_status("Enter what the image shows (Object), e.g. 'metal plate'.")
            return False
        try:
            sources, items = self._targets()
            config = None if w._engine is not None else w.engine_config()
        except ValueError as err:
            w.set_status(str(err))
            return False
        need = (w._engine.config if w._engine is not None else config).mutual_min_images
        if len(items) < need:
            what = "frames" if w.c.across.currentText() == FRAMES else "image layers"
            w.set_status(f"Mutual scoring needs at least {need} images; there are {len(items)} {what}. Add more "
                         "images of the same object, or use Run with normal references instead.")
            return False
        images = [read_frame(src, f) for src, f in items]
        limits = [contrast_limits_for(src) for src, _ in items]  # each layer by its own, as a Run maps it
        datas = [src.data for src in sources]
        w.save_settings()
        w.heartbeat.start(f"Mutual scoring across {len(items)} images…")
        w.c.progress.setValue(0)
        w._set_running(True)
        w.c.across_run.setEnabled(False)
        job = _folder_job(w._engine, config, images, w.object_name,
                          folder_settings(w.thresholds, w.c.aligned.isChecked()), limits)
        w.task = Task(job, w._on_progress, lambda outcome: self._done(items, sources, datas, outcome), owner=w)
        w._task_source = sources[0]
        w.task.start()
        return True

    def _done(self, items, sources, datas, outcome: Outcome) -> None:
        w = self.w
        if not end_background_task(w, outcome, w.c.across_run):
            return
        engine, results = outcome.value
        w._engine = engine
        per_source: dict = {}
        for (src, frame), result in zip(items, results):
            per_source.setdefault(sources.index(src), {})[frame] = result
        shown = 0
        for i, frame_results in per_source.items():
            src = sources[i]
            if src not in w.viewer.layers or src.data is not datas[i]:
                continue  # removed or given new pixels while scoring: its results are dropped
            outputs, loop = w._session_for(src, frame_count(src))
            outputs.set_classes(w.class_names)
            outputs.corrections(frame_results)
            outputs.show(frame_results, w.classes.selected)
            w.cues.apply(outputs)
            loop.reset(list(frame_results))
            shown += len(frame_results)
        w.c.progress.setValue(100)
        n_obj = sum(r.num_instances for r in results)
        w.set_status(f"Mutual scoring: {len(results)} images scored against each other, {shown} shown, "
                     f"{n_obj} objects.")
        w.objects.refresh()
        w.run_finished.emit(outcome)
