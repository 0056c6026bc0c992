"""Connecting to Ray, and sizing the actor pool from what the cluster has.

A local Ray started for a job (``--ray`` without an address) serves this machine only: every process binds to
the loopback address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's own single-machine switch, makes the node
address 127.0.0.1 and its servers listen there), the dashboard is off, and usage statistics are off
(``RAY_USAGE_STATS_ENABLED=0``) unless the user set that variable. Both variables are read by Ray when it is
imported, so they are set before the first ``import ray``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import ClusterError
from .options import LOCAL


def import_ray(local: bool):
    """``import ray`` with this package's defaults (see the module doc); ClusterError when it is missing."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"--ray needs Ray, which is not installed ({exc}); install it with "
                           "pip install \"napari-clipsam[ray]\" (or pip install ray).") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ('' or 'local': start a local one for this job).

    A process already connected to Ray (a script or test that called ``ray.init``) keeps its connection.
    Returns True when this call started the connection (then :func:`disconnect` ends it).
    """
    local = address is None or address in LOCAL
    ray = import_ray(local)
    if ray.is_initialized():
        return False
    try:
        if local:
            ray.init(address="local", include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    except ConnectionError as exc:
        raise ClusterError(f"Cannot reach a Ray cluster at --ray {address}: {exc}. Start one (`ray start --head` "
                           "on its head node) or give its address: auto on a cluster node, HOST:PORT, or "
                           "ray://HOST:10001.") from None
    return True


def disconnect(started: bool) -> None:
    """Shut Ray down in this process when :func:`connect` started the connection (a local Ray stops)."""
    if started:
        import ray

        ray.shutdown()


@dataclass(frozen=True)
class PoolShape:
    """How many engine actors, and what each reserves: ``gpus`` 1 (GPU actors) or 0, ``cpus`` also the torch
    threads each uses; ``batch`` images per actor call."""

    actors: int
    cpus: int
    gpus: int
    batch: int

    def describe(self) -> str:
        kind = "GPU" if self.gpus else "CPU"
        return (f"{self.actors} {kind} actor(s), {self.cpus} CPU(s){' + 1 GPU' if self.gpus else ''} each, "
                f"{self.batch} image(s) per call")


def pool_shape(args, resources: dict, node_cpus: list[float]) -> PoolShape:
    """The pool for this cluster: ``resources`` as ``ray.cluster_resources()``, ``node_cpus`` the CPUs of each
    alive node. GPU actors (one GPU each) when the cluster has GPUs and the engine may use them (``--device``
    auto or cuda); CPU actors otherwise. Raises ClusterError when the requested actors cannot fit on any node.
    """
    gpus = int(resources.get("GPU", 0))
    device = str(getattr(args, "device", None) or "auto")
    use_gpu = gpus > 0 and device != "cpu"
    if device.startswith("cuda") and not gpus:
        raise ClusterError(f"--device {device}: the Ray cluster has no GPU; leave --device out (auto) or use cpu.")
    biggest = int(max(node_cpus, default=0))
    if use_gpu:
        cpus = args.ray_cpus_per_actor or 1
        actors = args.ray_actors or gpus
        batch = args.ray_batch_size or 4
    else:
        cpus = args.ray_cpus_per_actor or max(1, min(4, biggest))
        actors = args.ray_actors or max(1, int(resources.get("CPU", 0)) // cpus)
        batch = args.ray_batch_size or 1
    if cpus > biggest:
        raise ClusterError(f"Each actor would reserve {cpus} CPUs, but no node of the Ray cluster has more than "
                           f"{biggest}; lower --ray-cpus-per-actor.")
    have = gpus if use_gpu else int(resources.get("CPU", 0)) // cpus
    if actors > have:
        what = f"{gpus} GPU(s)" if use_gpu else f"{int(resources.get('CPU', 0))} CPU(s) ({cpus} per actor)"
        raise ClusterError(f"{actors} engine actors do not fit on this Ray cluster's {what}; lower --ray-actors "
                           f"to {max(have, 1)} or add nodes.")
    return PoolShape(actors=actors, cpus=cpus, gpus=1 if use_gpu else 0, batch=batch)
