"""Worst first in the Review tab: score the folder in the background, walk it by score, show the table.

When a review opens, its first image is shown at once (in file order, as before). Once ClipSAM has run on it
(the engine exists then), the whole folder is scored in one background job (:func:`~napari_clipsam.review.
scoring.score_folder`: mutual scoring from five images), with its progress and a *Stop* button in the tab. When
the scores arrive they are kept in the labels folder (``clipsam_review_scores.json``) and the review order becomes
worst first; if the shown image is undecided and untouched, the review moves to the highest-scored undecided
image; if it stays there (file order, or it is the worst), untouched, it is re-shown with its scored result, so
every image the review shows after scoring runs on the folder's mutual map. *File order* goes back to file order
(the current image stays). A reopened review whose files, object, thresholds and scores key (engine, settings, references: see
:func:`~napari_clipsam.review.order.scores_key`) have not changed takes its
order from that file (worst first at once) and makes the mutual maps again in the background (the CLIP features
come from the disk cache).

The scoring job and the dock's Run share one engine, never at the same time: a Run started while the folder is
being scored waits for it (and then takes that image's scored result, so moving on after scoring runs nothing).
Once scored, every Run of a review image uses the folder's mutual map: Run again, an image visited again, and a
changed τ_prompt / τ_mask / α (``engine.remask``: MMR again on that map, no CLIP) never fall back to the image's
own map. The scored results are kept for the review's life (one per image, as the scoring made them); another
object or other *aligned parts* than the scoring's segment afresh.
Verdicts live in the manifest and drafts in the journal, by image: reordering only changes which image comes
next, never what was decided or corrected.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
from qtpy.QtCore import QObject

from ..errors import Cancelled, EngineMismatchError
from ..review.flags import ACCEPTED_HIGH, REJECTED_LOW, ImageFacts, image_flags, score_bounds
from ..review.order import ReviewOrder, file_signatures, load_scores_file, save_scores, scores_key
from ..review.scoring import score_folder
from .folder_table import FolderTable
from .workers import Task, folder_settings, threshold_settings

log = logging.getLogger(__name__)
_VERDICT_FLAGS = (ACCEPTED_HIGH, REJECTED_LOW)


class _Scoring:
    """One scoring job's shared state: written by the worker thread, read by the GUI thread and by a Run's
    worker (which waits on ``done`` before it uses the engine)."""

    def __init__(self, engine, object_name: str, thresholds: tuple):
        self.engine, self.object_name, self.thresholds = engine, object_name, thresholds
        self.done = threading.Event()
        self.results: dict = {}  # image path → its ClipSAMResult on the folder's mutual map (kept for the review)
        self.settings: dict = {}  # the per-call settings it scores with (they key the kept scores)
        self.lock = threading.Lock()

    def has(self, key) -> bool:
        """``key`` (path, object name, thresholds) can be answered from the folder's mutual map."""
        with self.lock:
            return key[1] == self.object_name and key[0] in self.results

    def result_for(self, key, read_image):
        """The result for ``key`` on the folder's mutual map: the scored one at the scoring's thresholds, else
        MMR again on its map with ``key``'s (``engine.remask``: no CLIP, the map is kept); None when the folder
        has no result for that image and object. ``read_image()`` gives the image if SAM must embed it again."""
        path, object_name, thresholds = key
        with self.lock:
            scored = self.results.get(path) if object_name == self.object_name else None
        if scored is None or tuple(thresholds) == tuple(self.thresholds):
            return scored
        settings = threshold_settings(*thresholds)
        try:
            return self.engine.remask(scored, settings=settings)
        except EngineMismatchError:  # its SAM embedding is no longer cached: embed the image again
            return self.engine.remask(scored, image=read_image(), settings=settings)


class ReviewOrdering(QObject):
    """The order and overview of a :class:`~.folder.FolderPanel`'s review (see the module notes)."""

    def __init__(self, panel):
        super().__init__(panel)
        self.panel = panel
        layout = panel.c.qa_open.parentWidget().layout()
        self.table = FolderTable(layout, on_open=panel.goto, on_worst_first=self.set_worst_first,
                                 on_next_flagged=panel.next_flagged, on_stop=self.stop,
                                 file_order=panel.widget.settings.qa_file_order)  # remembered (settings_binding)
        self.order: ReviewOrder | None = None
        self.facts: dict[str, ImageFacts] = {}
        self.left_out: dict[str, str] = {}
        self.task: Task | None = None
        self.scoring: _Scoring | None = None
        self.needs_scoring = False
        self.scored = False  # scores arrived (or were reused) for this review
        self.reused = False
        self._generation = 0
        self._note: tuple[str, int] | None = None  # the scores' note without its "now on X", and X's index
        self._running: list[_Scoring] = []  # jobs that may still use the engine (a stopped one until it stops)
        self._gone = False  # the dock's Qt objects were deleted (a viewer closed without closing the dock)
        panel.c.qa_open.destroyed.connect(lambda *_: self._dock_gone())
        self.table.show_scoring(None)

    # ------------------------------------------------------------------ the review's life
    def open(self, session) -> bool:
        """A review opened: take the kept scores when they still hold (True), else score after the first Run."""
        self.stop(quiet=True)
        self._generation += 1
        self._note = None
        if not self._edits_hooked:  # the current image's edits settled (the drafts' debounce): live object count
            self.panel.drafts.timer.timeout.connect(self.refresh)
            self._edits_hooked = True
        self.facts, self.left_out, self.scored, self.reused = {}, {}, False, False
        self.order = ReviewOrder(session, worst_first=not self.table.file_order.isChecked())
        data = self._kept(session)
        if data is not None:
            self.facts = {k: ImageFacts(data["scores"].get(k), *v) for k, v in data.get("facts", {}).items()
                          if isinstance(v, list) and len(v) == 3}
            self.left_out = dict(data.get("left_out", {}))
            self.order.set_scores(data["scores"])
            self.scored = self.reused = True
            self.needs_scoring = True  # the order is known; the mutual maps are made again (features from disk)
            self.table.show_scoring(None, f"Worst first from the kept scores of this folder ({len(data['scores'])} "
                                          "images, nothing changed since); its mutual maps are made again in the "
                                          "background after ClipSAM's first result (features from the cache).")
        else:
            self.needs_scoring = True
            self.table.show_scoring(None, "Shown in file order until the folder is scored (it starts after "
                                          "ClipSAM's first result).")
        return self.reused

    def _dock_gone(self) -> None:
        self._gone = True
        if self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        self.stop(quiet=True)
        self._note = None
        self.order = None
        self.needs_scoring = False
        self.table.fill([], None)
        self.table.show_scoring(None)

    def _inputs(self) -> tuple:
        engine, object_name, thresholds = self.panel.widget.run_inputs()
        return engine, object_name, tuple(float(t) for t in thresholds)

    def _kept(self, session) -> dict | None:
        """The kept scores when they still hold for this review: the same files, object and thresholds, and the
        same :func:`~napari_clipsam.review.order.scores_key` (engine, settings, references, format). Before the
        dock's first Run there is no engine to key them with: they are taken for now (worst first at once) and
        checked when the engine exists (:attr:`needs_scoring`); made by another engine, they are scored again."""
        engine, object_name, thresholds = self._inputs()
        files = file_signatures(session)
        data = load_scores_file(session.output_dir, session.input_dir, object_name)
        if data is None or data.get("files") != files or data.get("thresholds") != list(thresholds):
            return None
        if engine is None:
            self._unchecked = (data.get("key"), self._generation)
            return data
        key = self._key_of(engine, session, object_name, thresholds, files)
        return data if key is not None and data.get("key") == key else None

    def _settings(self, thresholds: tuple) -> dict:
        """The scoring's per-call settings: the thresholds and the dock's *aligned parts* (part of the key)."""
        return folder_settings(thresholds, self.panel.c.aligned.isChecked())

    def _key_of(self, engine, session, object_name: str, thresholds: tuple, files: dict) -> str | None:
        return scores_key(engine, object_name, self._settings(thresholds), files, session.input_dir)

    _edits_hooked = False
    _unchecked: tuple | None = None  # (key, generation) of kept scores taken before there was an engine
    _needs_scoring = False

    @property
    def needs_scoring(self) -> bool:
        """The review still has to be scored (once, after ClipSAM's first result). Kept scores taken before there
        was an engine are checked here, the first time it is asked with an engine: another key means score."""
        unchecked, session = self._unchecked, self.panel.session
        engine, object_name, thresholds = self._inputs()
        if unchecked is not None and engine is not None and session is not None:
            self._unchecked = None
            key = self._key_of(engine, session, object_name, thresholds, file_signatures(session))
            if unchecked[1] == self._generation and (key is None or key != unchecked[0]):
                self._needs_scoring = True
                self.reused = False
                self.table.show_scoring(None, "The kept scores were made by another engine or other settings: "
                                              "the folder is scored again.")
        return self._needs_scoring

    @needs_scoring.setter
    def needs_scoring(self, value: bool) -> None:
        self._needs_scoring = bool(value)

    # ------------------------------------------------------------------ scoring
    def start_scoring(self) -> bool:
        """Score the folder in the background (once per review, after ClipSAM's first result). True if started."""
        panel = self.panel
        session = panel.session
        engine, object_name, thresholds = self._inputs()
        if not self.needs_scoring or self.task is not None or engine is None or session is None:
            return False
        self.needs_scoring = False
        scoring = self.scoring = _Scoring(engine, object_name, thresholds)
        self._running = [s for s in self._running if not s.done.is_set()] + [scoring]
        settings = scoring.settings = self._settings(thresholds)
        prefetcher = panel.prefetcher
        generation = self._generation

        def job(progress, cancelled):
            try:
                if prefetcher is not None:
                    prefetcher.cancel(wait=True)  # one engine job at a time
                scores = score_folder(engine, session, object_name, settings, progress, cancelled)
                paths = {session.key(i): str(p) for i, p in enumerate(session.images)}
                with scoring.lock:
                    for key, result in scores.results.items():
                        scoring.results[paths[key]] = result
                scores.results = {}  # the Runs take them from `scoring` (see `scored_result`)
                return scores
            finally:
                scoring.done.set()

        self.task = Task(job, self._on_progress, lambda outcome: self._on_scored(generation, outcome), owner=self)
        self._note = None
        self.table.show_scoring(0.0, "Scoring the folder in the background; you can work on this image "
                                     "meanwhile.")
        self.task.start()
        return True

    def stop(self, quiet: bool = False) -> None:
        """Stop the scoring (the review stays in its order)."""
        if self.task is not None:
            self.task.cancel()
            if not quiet:
                self.table.show_scoring(None, "Stopping the scoring…")
        if quiet:
            self.task = None
            self.scoring = None

    def _on_progress(self, stage: str, fraction: float) -> None:
        if self.task is not None and not self._gone:
            self.table.show_scoring(fraction, f"{stage[:1].upper()}{stage[1:]}…")

    def _on_scored(self, generation: int, outcome) -> None:
        if generation != self._generation or self.order is None or self._gone:
            return  # a review closed or reopened since
        self.task = None
        panel, session = self.panel, self.panel.session
        if not outcome.ok:
            self.scoring = None
            where = "in the kept scores' order, each image on its own map" if self.reused else "in file order"
            if isinstance(outcome.error, Cancelled):
                text = f"Scoring stopped: the review stays {where} (reopen it to score the folder again)."
            else:
                log.error("Scoring the review folder failed:\n%s", outcome.traceback)
                text = (f"Scoring the folder failed ({type(outcome.error).__name__}: {outcome.error}); the review "
                        f"stays {where}. The traceback is in the log.")
            self.table.show_scoring(None, text)
            panel.widget.set_status(text)
            return
        scores = outcome.value
        self.facts, self.left_out = dict(scores.facts), dict(scores.left_out)
        self.scored = True
        kept = ""
        try:
            object_name, thresholds = self.scoring.object_name, self.scoring.thresholds
            files = file_signatures(session)
            save_scores(session.output_dir, session.input_dir, object_name, scores.mode, scores.scores, extra={
                "files": files, "thresholds": list(thresholds), "left_out": scores.left_out,
                "facts": {k: [f.n_objects, f.hot, f.outside] for k, f in scores.facts.items()}},
                key=scores_key(self.scoring.engine, object_name, self.scoring.settings, files, session.input_dir))
        except OSError as err:
            kept = f" (the scores could not be kept in the labels folder: {err}; they are scored again next time)"
        self.order.set_scores(scores.scores)
        moved = not self.reused and self._go_worst_first()  # a reopened review is in its order already
        mutual = not moved and scores.mode == "mutual" and self._show_scored_current()
        text = scores.describe(int(self.scoring.engine.config.mutual_min_images))
        how = "Worst first" if self.order.worst_first else "File order (untick it for worst first)"
        where = f" Now on the highest-scored undecided image, {session.key()}." if moved else \
            f" {session.key()} now shows its mutual-scoring result." if mutual else ""
        self.table.show_scoring(None, f"{text} {how}.{where}{kept}")
        self._note = (f"{text} {how}.{kept}", session.index)  # "where" holds only while that image is shown
        panel.widget.set_status(f"{text} {how}.{where}{kept}")
        panel.refresh()

    def _go_worst_first(self) -> bool:
        """After scoring: move to the first undecided image of the order when the shown one is undecided and
        untouched (no correction, no run going), so the review starts where it matters. True when it moved."""
        panel, order = self.panel, self.order
        if not order.worst_first or panel.widget.busy or panel.session.verdict() is not None \
                or panel.drafts.saved is not None or panel.drafts.timer.isActive():
            return False
        target = order.first_undecided()
        if target is None or target == panel.session.index:
            return False
        panel.goto(target)
        return True

    def _show_scored_current(self) -> bool:
        """After scoring: the shown image was segmented on its own map before the folder was scored; when it is
        undecided and untouched (no edit since ClipSAM's result, no draft offered, no run going), show its
        scored result instead (a Run that takes it: the dock's usual path). True when that Run started."""
        panel = self.panel
        session, layer = panel.session, panel.layer
        if panel.widget.busy or layer is None or session.verdict() is not None or not panel.drafts.untouched():
            return False
        outputs = panel.widget.outputs_for(layer)
        shown = None if outputs is None else outputs.results.get(None)
        if shown is None or shown.provenance.get("mode") == "mutual":
            return False  # saved labels, a stack's frames, or already the scored result
        if not self.scoring.has(panel.key_for(session.index)):
            return False  # another object since: Run segments afresh
        return panel.widget.run(source=layer, on_done=panel.after_run, all_frames=True)

    def wait_for_scoring(self, cancelled) -> None:
        """In a Run's worker thread: wait until the folder scoring (if any) has stopped using the engine."""
        for scoring in list(self._running):
            while not scoring.done.wait(0.05):
                if cancelled():
                    raise Cancelled("cancelled while waiting for the folder scoring")

    def scored_result(self, key, engine, read_image):
        """In a Run's worker: the result for ``key`` (path, object name, thresholds) on the folder's mutual map
        made by ``engine`` (at other thresholds, MMR again on that map; see :meth:`_Scoring.result_for`), so a
        re-Run, a changed τ or an image visited again never falls back to the image's own, weaker map; None when
        the folder is not scored (yet), by another engine, with other mutual settings or for another object."""
        scoring = self.scoring  # read once: the GUI thread may start another scoring meanwhile
        if not self._answers(scoring, key, engine) or not scoring.done.is_set():
            return None
        return scoring.result_for(key, read_image)

    def has_scored(self, key, engine) -> bool:
        """The scoring (finished or not) can answer ``key``'s Run (no prefetch needed)."""
        return self._answers(self.scoring, key, engine)

    def _answers(self, scoring, key, engine) -> bool:
        return scoring is not None and scoring.engine is engine and scoring.has(key) \
            and self._mutual_part(self._settings(key[2])) == self._mutual_part(scoring.settings)

    @staticmethod
    def _mutual_part(settings: dict) -> dict:
        """The settings that make the mutual map (the thresholds only act on MMR)."""
        return {k: v for k, v in settings.items() if k not in threshold_settings(0, 0, 0)}

    # ------------------------------------------------------------------ order and table
    def set_worst_first(self, worst_first: bool) -> None:
        if self.order is None:
            return
        self.order.set_worst_first(worst_first)
        how = "worst first" if worst_first else "file order"
        if worst_first and not self.order.scores:
            how += " once the folder is scored"
        self.panel.widget.set_status(f"Review order: {how}. Next ▶ and Accept follow it; verdicts are kept.")
        self.panel.refresh()

    def step(self, forward: bool) -> bool:
        """Move one image along the order; False at its end."""
        order = self.order
        if order is None or (order.at_end() if forward else order.at_start()):
            return False
        order.next() if forward else order.previous()
        return True

    def next_index(self) -> int | None:
        """The session position after the current one in the order (None at its end)."""
        order = self.order
        if order is None or order.at_end():
            return None
        return order.order[order.position + 1]

    def worst_first_active(self) -> bool:
        """Worst first, with scores to order by."""
        return self.order is not None and self.order.worst_first and bool(self.order.scores)

    def first_undecided(self) -> int | None:
        return None if self.order is None else self.order.first_undecided()

    def flags(self, index: int, bounds=None) -> list[str]:
        session = self.panel.session
        key = session.key(index)
        entry = session.entry(index)
        verdict = session.verdict(index)
        facts = self.facts.get(key)
        if facts is None and key in self.order.scores:
            facts = ImageFacts(self.order.scores[key], 0, False, 0)
        if bounds is None:
            bounds = score_bounds(self.order.scores.values())
        return image_flags(facts, None if verdict is None else verdict.value,
                           None if entry is None else entry.n_instances, bounds)

    def needs_look(self, index: int, bounds) -> bool:
        """Flagged and undecided, or a verdict its score contradicts (what *Next flagged* looks for)."""
        flags = self.flags(index, bounds)
        if self.panel.session.verdict(index) is None:
            return bool(flags)
        return any(f in _VERDICT_FLAGS for f in flags)

    def next_flagged(self) -> int | None:
        """The next image that needs a look, or else the next undecided one (None when neither)."""
        order = self.order
        if order is None:
            return None
        bounds = score_bounds(order.scores.values())
        found = order.next_matching(lambda i: self.needs_look(i, bounds))
        if found is None:
            found = order.next_matching(lambda i: self.panel.session.verdict(i) is None)
        return found

    def rows(self) -> list[dict]:
        """The table's rows in review order. Objects: the current image's as its masks layer holds them now (a
        person's erasing and painting count at once, before Accept), else the accepted labels' (manifest), else
        ClipSAM's from the scoring."""
        panel = self.panel
        session, order = panel.session, self.order
        bounds = score_bounds(order.scores.values())
        shown = panel.layer is not None and panel.layer.metadata.get("clipsam_qa") == str(session.current)
        outputs = panel.widget.outputs_for(panel.layer) if shown else None  # not another image's, while moving
        live = None
        if outputs is not None and outputs.masks is not None and (outputs.results or outputs.frames):
            data = np.asarray(outputs.masks.data)
            live = len(np.unique(data[data > 0]))  # sorts the object pixels only: cheap on a large image
        out = []
        for i in order.order:
            key, entry, verdict = session.key(i), session.entry(i), session.verdict(i)
            facts = self.facts.get(key)
            if i == session.index and live is not None:
                objects = live
            elif entry is not None and entry.n_instances is not None:
                objects = entry.n_instances
            else:
                objects = None if facts is None else facts.n_objects
            out.append({"index": i, "name": key, "score": order.scores.get(key),
                        "verdict": None if verdict is None else verdict.value, "objects": objects,
                        "flags": self.flags(i, bounds)})
        return out

    def refresh(self) -> None:
        """Fill the table for the review now (in review order, the current image selected)."""
        if self.order is None or self.panel.session is None:
            self.table.fill([], None)
            return
        self.table.fill(self.rows(), self.panel.session.index)
        if self._note is not None and self._note[1] != self.panel.session.index:  # moved on: "now on X" is old
            self.table.show_scoring(None, self._note[0])
            self._note = None
