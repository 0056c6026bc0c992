"""Run ClipSAM on the next image in the background while the user corrects the current one.

The engine caches CLIP features and the SAM embedding by image content, so after a prefetch has run,
``engine.segment`` on the same pixels runs no image encoder: only the cheap rough map, prompts and SAM decoder.

::

    pre = Prefetcher(engine, "metal plate")
    pre.request(lambda: session.read_image(i + 1), key=i + 1)   # returns at once
    ...                                                           # user corrects image i (engine.refine is fine)
    result = pre.result(i + 1)     # waits if needed; or simply engine.segment(image) once it is done

Threads: one daemon thread per request, and at most one runs the engine at a time (a new request cancels the
previous job and starts only once that has stopped). The engine is not designed for two callers at once:
``engine.refine`` (SAM decoder only, no cache) may run beside a prefetch, but call :meth:`Prefetcher.result`
or :meth:`Prefetcher.cancel` before calling ``engine.segment`` yourself. No Qt here; a widget polls
:meth:`Prefetcher.done` or waits in its own worker.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import Cancelled


__all__ = ["Prefetcher"]


class _Job:
    def __init__(self, key: Hashable, source: Any, object_name: str):
        self.key, self.source, self.object_name = key, source, object_name
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def reusable_for(self, key: Hashable, object_name: str) -> bool:
        """Whether a new request for ``key`` can use this job: running uncancelled, or finished without error."""
        if self.key != key or self.object_name != object_name:
            return False
        return self.error is None if self.done.is_set() else not self.cancel.is_set()


class Prefetcher:
    """Background ``engine.segment`` of one image at a time, to warm the engine's per-image caches.

    Args:
        engine: a :class:`~napari_clipsam.engine.clipsam.ClipSAM` (anything with ``segment(image, object_name,
            cancelled=...)``).
        object_name: passed to ``segment``; may be changed later (``prefetcher.object_name = ...``).
        settings: per-call engine settings for ``segment`` (e.g. the widget's thresholds); may be changed later.
    """

    def __init__(self, engine, object_name: str, settings: dict | None = None):
        self.engine = engine
        self.object_name = object_name
        self.settings = dict(settings or {})
        self._job: _Job | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> Hashable | None:
        """The key of the latest request (None before the first)."""
        job = self._job
        return None if job is None else job.key

    def done(self, key: Hashable) -> bool:
        """Whether the latest request is for ``key`` and has finished (successfully or not)."""
        job = self._job
        return job is not None and job.key == key and job.done.is_set()

    def request(self, image: Callable[[], Any] | Any, key: Hashable) -> None:
        """Start segmenting ``image`` (an array, or a callable returning one, called in the background thread).

        Returns at once. A request for the key (and object name) already running or done successfully is
        ignored; any other cancels the previous job first.
        """
        with self._lock:
            previous = self._job
            if previous is not None and previous.reusable_for(key, self.object_name):
                return
            if previous is not None:
                previous.cancel.set()
            job = _Job(key, image, self.object_name)
            job.thread = threading.Thread(target=self._run, args=(job, previous), daemon=True,
                                          name=f"clipsam-prefetch-{key}")
            self._job = job
            job.thread.start()

    def result(self, key: Hashable, timeout: float | None = None):
        """The ClipSAMResult of the request for ``key``, waiting for it if it is still running.

        Returns None when the latest request is not for ``key`` (it was never requested, or was superseded).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            Cancelled: the job was cancelled before it finished.
            Exception: whatever the image loader or the engine raised, re-raised here.
        """
        job = self._job
        if job is None or job.key != key:
            return None
        if not job.done.wait(timeout):
            raise TimeoutError(f"prefetch of {key!r} still running after {timeout} s")
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, wait: bool = True) -> None:
        """Ask the running job to stop (the engine checks between stages); with ``wait``, block until it has.

        A job that has already finished keeps its result.
        """
        job = self._job
        if job is None:
            return
        job.cancel.set()
        if wait and job.thread is not None and job.thread is not threading.current_thread():
            job.thread.join()

    # ------------------------------------------------------------------ background thread
    def _run(self, job: _Job, previous: _Job | None) -> None:
        try:
            if previous is not None and previous.thread is not None:
                previous.thread.join()  # one engine job at a time
            previous = None
            if job.cancel.is_set():
                raise Cancelled(f"prefetch of {job.key!r} cancelled before it started")
            image = job.source() if callable(job.source) else job.source
            job.source = None  # the job keeps the result, not the pixels
            job.result = self.engine.segment(image, job.object_name, cancelled=job.cancel.is_set,
                                             settings=dict(self.settings))
        except BaseException as err:  # handed to result(); a daemon thread must not die noisily
            job.error = err
        finally:
            job.done.set()
