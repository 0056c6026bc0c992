"""``segment --ray``: the engine actors compute, the driver exports (the only writer of the output folder).

The job (which images, their stems, what resume skips, how an image is exported and a failure reported) is the
local command's :class:`~napari_clipsam.cli.segment_job.SegmentJob`; only where the masks are computed differs.
"""
from __future__ import annotations

import time
from collections import Counter

from ..common import note, training_free_note
from ..segment_groups import MUTUAL
from ...errors import ClusterError
from .cluster import connect, disconnect, pool_shape
from .pool import EnginePool
from .workers import unpack_instances


def cluster_shape(args):
    """The :class:`~.cluster.PoolShape` for the connected cluster, and how many nodes it has."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    shape = pool_shape(args, ray.cluster_resources(), [n["Resources"].get("CPU", 0) for n in nodes])
    return shape, len(nodes)


def start_pool(args, cfg, normal=None, mutual: bool = False):
    """Size and start the engine actors on the connected cluster (each given ``normal``, see
    :class:`~.workers.EngineWorker`); returns (pool, first actor's ready info). ``mutual``: the run's rough maps
    come from folder mutual scoring (what the training-free note says)."""
    shape, n_nodes = cluster_shape(args)
    note(f"ray: {shape.describe()}, on a cluster of {n_nodes} node(s)")
    pool = EnginePool(cfg, shape, args.ray_retries, normal)
    try:
        info = pool.ready()
    except BaseException:
        pool.close()
        raise
    note(f"engine: {info[0]['engine']}")
    if info[0]["training_free"]:
        note(training_free_note(mutual, cfg.mutual_clip_weight))
    return pool, info[0]


def put_normal_references(job):
    """``segment --normal``'s references for the actors: read here (the reference folder need not exist on the
    workers' nodes) and put in Ray's object store once; every actor sets them when it starts (one CLIP pass
    over them per actor, none when its node's reference-bank cache has them). None without ``--normal``."""
    if not job.normal:
        return None
    import ray

    from ...io.images import read_image

    return ray.put({"images": [read_image(f) for f in job.normal], "object_name": job.args.object})


def failed_call(items: list, exc: Exception) -> list[dict]:
    """Per-image failures (one per item of the call, in order) for a call that returned no results: an error
    raised by the worker's own code (a bug: its traceback is shown), or Ray giving up on the call after its
    retries (first line of Ray's message)."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        why, trace = f"{type(cause).__name__}: {cause}", str(exc)
    elif isinstance(exc, ClusterError):
        why, trace = str(exc), None
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = f"{type(exc).__name__}: {lines[0] if lines else 'the call failed'} (Ray gave up after its retries)"
        trace = None
    return [{"item": it, "error": why, "trace": trace} for it in items]


def _image_calls(job, batch: int) -> tuple[str, list[tuple], int]:
    """Per-image mode: ``("segment", chunks of up to ``batch`` items to do, how many)``."""
    todo = job.todo
    return "segment", [(todo[i:i + batch],) for i in range(0, len(todo), batch)], len(todo)


def _group_calls(job) -> tuple[str, list[tuple], int]:
    """Mutual mode: ``("segment_group", one call per group that holds images to do, how many images to do)``;
    each call is ``(the group's items, which of them to do, its provenance record)``, as the local run cuts them
    (:attr:`~napari_clipsam.cli.segment_job.SegmentJob.groups`). note() says the group count."""
    pending = set(job.todo)
    note(f"ray: mutual scoring, one call per group ({len(job.groups)} of the run's {job.n_groups} group(s) hold "
         "images to do)")
    chunks = [(group, [it in pending for it in group], job.group_record(group)) for group in job.groups]
    return "segment_group", chunks, len(job.todo)


def _export(job, result: dict, per_node: Counter) -> None:
    """Export one image's result (:meth:`~.workers.EngineWorker.segment`'s dict), or report its failure."""
    item = result["item"]
    if "error" in result:
        job.fail(item, result["error"], result.get("trace"))
        return
    try:
        job.export(item, unpack_instances(result["instances"]), result["provenance"])
        per_node[result["node"]] += 1
    except Exception as exc:  # an export error: reported, the others go on
        job.fail_with(item, exc)


def segment_on_ray(job) -> int:
    """Compute ``job.todo`` on the Ray cluster named by ``job.args.ray`` and export each result as it arrives.

    Progress (done/total, img/s, ETA), per-image failures, Ctrl+C and the summary are the local command's.
    """
    from tqdm.auto import tqdm

    args = job.args
    t0 = time.perf_counter()
    note(f"mode: {job.mode} ({job.why})")  # as the local command says it, before anything starts
    if not job.todo:  # everything is done: no cluster needed
        return job.report(time.perf_counter() - t0)
    started = connect(args.ray)
    pool = None
    per_node: Counter = Counter()
    try:
        import ray

        address = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        pool, _ = start_pool(args, job.cfg, put_normal_references(job), mutual=job.mode == MUTUAL)
        load_seconds = time.perf_counter() - t0
        if job.normal:
            note(f"few-shot: {len(job.normal)} normal reference(s) from {args.normal}, weight "
                 f"{job.cfg.fewshot_weight:g}, set on every actor")
        method, chunks, total = _group_calls(job) if job.groups else _image_calls(job, pool.shape.batch)
        try:
            with tqdm(total=total, desc="segment", unit="img", disable=not args.progress,
                      dynamic_ncols=True) as bar:
                for chunk, result in pool.run(method, chunks, {"object_name": args.object}):
                    if isinstance(result, Exception):
                        result = failed_call(chunk[0], result)
                        if job.groups:  # a group call: only its images to do are reported
                            result = [r for r, w in zip(result, chunk[1]) if w]
                    for item in result:
                        _export(job, item, per_node)
                        bar.update(1)
                    bar.set_postfix(done=job.done, failed=len(job.failed))
        except KeyboardInterrupt:
            job.say_interrupted()
            raise
        finally:
            job.merge()  # this run's shards into coco/annotations.json, also when interrupted
    finally:
        if pool is not None:
            pool.close()
        disconnect(started)
    seconds = time.perf_counter() - t0
    work = seconds - load_seconds
    timing = (f" (starting {pool.shape.actors} actor(s) {load_seconds:.1f} s, then {work / len(job.todo):.2f} "
              f"s/image, {len(job.todo) / max(work, 1e-9):.2f} img/s)")
    code = job.report(seconds, timing)
    print("  ray: images per node (address/node id): " + (", ".join(
        f"{address.get(node, '?')}/{node[:8]} {n}" for node, n in sorted(per_node.items())) or "none"))
    return code
