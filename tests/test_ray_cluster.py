"""Two Ray nodes on one machine (Ray's own ``ray.cluster_utils.Cluster``): ``segment --ray`` runs on both.

Marked ``ray`` (``python -m pytest -q -n 0 -m ray``). Its own module, so that ``test_ray.py``'s single-node Ray is
down before this cluster starts.
"""
from __future__ import annotations

import os

import pytest

from ray_helpers import (GROUPS, N_IMAGES, RAY_ENV, assert_ray_listens_on_loopback_only,  # noqa: F401
                         assert_same_outputs, cli, local_reference, models, processes, ray_processes_gone)

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_torch_thread")]


def test_two_nodes_on_one_machine_share_the_work(models, local_reference, tmp_path):
    """Ray's own Cluster helper: a head and a second node, 1 CPU each, so each node hosts one engine actor and
    scores one of the run's 2 mutual-scoring groups."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**RAY_ENV, "NAPARI_CLIPSAM_CACHE": str(models["cache"])}.items():
            mp.setenv(key, value)
        import ray  # after RAY_ENV: Ray reads it when imported
        from ray.cluster_utils import Cluster

        assert not ray.is_initialized()
        before = processes(descendants_of=os.getpid())
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        started: set[int] = set()
        try:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
            assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            started = {pid: cmd for pid, cmd in processes(descendants_of=os.getpid()).items() if pid not in before}
            out = tmp_path / "two"
            code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"],
                                    *GROUPS, "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1)
            assert code == 0, err
            assert "on a cluster of 2 node(s)" in err
            listed = stdout.split("images per node (address/node id): ")[1].strip().split(", ")
            per_node = dict(item.rsplit(" ", 1) for item in listed)
            assert sorted(per_node) == sorted(f"127.0.0.1/{n[:8]}" for n in nodes)
            assert sorted(map(int, per_node.values())) == [N_IMAGES // 2] * 2  # one group of 6 each
            assert sum(map(int, per_node.values())) == N_IMAGES
            assert_same_outputs(out, local_reference)
            assert_ray_listens_on_loopback_only(started)
        finally:
            ray.shutdown()
            cluster.shutdown()
        assert ray_processes_gone(started, models["cache"]), "Ray processes outlived the cluster"
