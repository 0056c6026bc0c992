"""Ray stays optional: without ``--ray`` nothing imports it; the ``--ray`` options are checked before anything
starts; pool sizing and the compact result encoding. No Ray is started here (default run)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_clipsam.cli.ray.cluster import PoolShape, pool_shape
from napari_clipsam.cli.ray.options import check_ray_options
from napari_clipsam.cli.ray.workers import pack_instances, unpack_instances
from napari_clipsam.errors import ClusterError, InvalidInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a CLI process that segments (~18 s)
def test_a_local_segment_run_imports_no_ray(tmp_path):
    from napari_clipsam.testing import write_tiny_clip, write_tiny_sam

    clip, sam = write_tiny_clip(tmp_path / "clip"), write_tiny_sam(tmp_path / "sam")
    image = tmp_path / "a.png"
    import imageio.v3 as iio

    iio.imwrite(image, (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    code = ("import sys\nfrom napari_clipsam.cli import main\n"
            "import napari_clipsam.cli.ray.segment, napari_clipsam.cli.ray.evaluate  # modules alone: no ray\n"
            "code = main(sys.argv[1:])\n"
            "assert code == 0, code\n"
            "print(sorted(m for m in ('ray',) if m in sys.modules))")
    args = ["segment", str(image), "--object", "metal", "--out", str(tmp_path / "out"), "--clip-model",
            f"local-dir:{clip}", "--image-size", "56", "--sam-model", f"local-dir:{sam}", "--device", "cpu",
            "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "NAPARI_CLIPSAM_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "masks" / "a_mask.png").is_file()


def _args(**changes) -> argparse.Namespace:
    base = dict(ray="", ray_actors=None, ray_cpus_per_actor=None, ray_batch_size=None, ray_retries=3, device=None)
    return argparse.Namespace(**{**base, **changes})


def test_ray_options_are_checked_before_anything_starts(tmp_path):
    check_ray_options(_args())
    check_ray_options(_args(ray="auto"))
    with pytest.raises(InvalidInputError, match="not a Ray address; give --ray after the inputs"):
        check_ray_options(_args(ray=str(tmp_path)))  # `segment --ray plates/ ...` took the folder as address
    with pytest.raises(InvalidInputError, match="--ray-actors must be at least 1"):
        check_ray_options(_args(ray_actors=0))
    with pytest.raises(InvalidInputError, match="--ray-retries must be 0 or more"):
        check_ray_options(_args(ray_retries=-1))


def test_pool_shape_follows_the_cluster():
    # CPU cluster: 4 CPUs per actor (at most a node's), one actor per 4 CPUs, one image per call
    assert pool_shape(_args(), {"CPU": 16}, [8, 8]) == PoolShape(actors=4, cpus=4, gpus=0, batch=1)
    assert pool_shape(_args(), {"CPU": 2}, [2]) == PoolShape(actors=1, cpus=2, gpus=0, batch=1)
    # GPUs: one actor per GPU, 1 CPU each, 4 images per call; --device cpu keeps CPU actors
    assert pool_shape(_args(), {"CPU": 32, "GPU": 4}, [16, 16]) == PoolShape(actors=4, cpus=1, gpus=1, batch=4)
    assert pool_shape(_args(device="cpu"), {"CPU": 32, "GPU": 4}, [16, 16]).gpus == 0
    assert pool_shape(_args(ray_actors=2, ray_cpus_per_actor=1, ray_batch_size=3), {"CPU": 2}, [1, 1]) == \
        PoolShape(actors=2, cpus=1, gpus=0, batch=3)
    with pytest.raises(ClusterError, match="no node of the Ray cluster has more than 2"):
        pool_shape(_args(ray_cpus_per_actor=4), {"CPU": 4}, [2, 2])
    with pytest.raises(ClusterError, match="do not fit"):
        pool_shape(_args(ray_actors=3, ray_cpus_per_actor=1), {"CPU": 2}, [2])
    with pytest.raises(ClusterError, match="has no GPU"):
        pool_shape(_args(device="cuda"), {"CPU": 2}, [2])


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64])
def test_packed_instances_come_back_exactly(dtype):
    a = np.random.default_rng(1).integers(0, 7, (33, 47)).astype(dtype)
    packed = pack_instances(a)
    assert len(packed["data"]) < a.nbytes
    b = unpack_instances(packed)
    assert b.dtype == a.dtype and np.array_equal(a, b)
