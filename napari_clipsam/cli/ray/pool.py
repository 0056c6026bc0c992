"""A pool of engine actors fed with chunks of work, results handed back as they arrive.

Each actor is a Ray actor with ``max_restarts`` and ``max_task_retries`` set to ``retries``: when its process
dies (killed, out of memory, node lost) Ray starts it again and re-runs the calls it had not answered, so no
image is lost and none is answered twice. A call that still fails after its retries is handed back as an error
for its chunk (the driver reports those images as failed; a rerun does them). An actor lost more than
``retries`` times stays dead: its calls come back as errors and it gets no more work; the others go on. Every
actor holds up to two calls, so it starts the next one while the driver exports the last result.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from ...errors import ClusterError
from .cluster import PoolShape

IN_FLIGHT = 2


class EnginePool:
    """``shape.actors`` :class:`~.workers.EngineWorker` actors on the connected Ray cluster.

    Args:
        config: the engine's :class:`~napari_clipsam.config.ClipSAMConfig`.
        shape: actors and what each reserves (:class:`~.cluster.PoolShape`).
        retries: Ray's ``max_task_retries`` per call.
        normal: every actor's ``normal`` argument (:class:`~.workers.EngineWorker`), best an object ref (one
            copy in the object store for all actors and their restarts), or None.
    """

    def __init__(self, config, shape: PoolShape, retries: int, normal=None):
        import ray

        from .workers import EngineWorker

        remote = ray.remote(EngineWorker).options(num_cpus=shape.cpus, num_gpus=shape.gpus, max_restarts=retries,
                                                  max_task_retries=retries)
        self.shape = shape
        self.actors = [remote.remote(config, shape.cpus, normal) for _ in range(shape.actors)]

    def ready(self) -> list[dict]:
        """Wait until every actor has loaded its engine; returns their :meth:`~.workers.EngineWorker.ready`.
        ClusterError when an actor cannot load it (e.g. model files missing on its node)."""
        import ray

        try:
            return ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise ClusterError(f"An engine actor could not start: {' '.join(str(cause).split())[:2000]}; "
                               "every node needs the package and the model files at the same paths.") from None

    def run(self, method: str, chunks: Iterable[tuple], kwargs: dict) -> Iterator[tuple[tuple, object]]:
        """Call ``actor.method(*chunk, **kwargs)`` for every chunk, spreading the chunks over the actors; yields
        ``(chunk, result)`` in completion order, ``result`` being a ``ray.exceptions.RayError`` for a call that
        failed after its retries (or a ClusterError for chunks left when every actor was lost)."""
        import ray

        queue = deque(chunks)
        pending: dict = {}  # object ref -> (actor, chunk)
        dead: set = set()

        def submit(actor) -> None:
            if queue:
                chunk = queue.popleft()
                pending[getattr(actor, method).remote(*chunk, **kwargs)] = (actor, chunk)

        for _ in range(IN_FLIGHT):
            for actor in self.actors:
                submit(actor)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, chunk = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # retries spent, or a bug in the worker code
                result = exc
                if isinstance(exc, ray.exceptions.ActorDiedError):
                    dead.add(id(actor))  # restarts spent: no more work for it
            if id(actor) not in dead:
                submit(actor)
            yield chunk, result
        lost = ClusterError("not run: every engine actor was lost (Ray restarted each as often as --ray-retries "
                            "allows); run the same command again to do these images")
        while queue:
            yield queue.popleft(), lost

    def close(self) -> None:
        """Stop the actors (their unfinished calls are dropped; nothing was written by them)."""
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
