"""``segment --ray`` and ``eval --ray`` on a real Ray (tiny ``local-dir:`` models): same outputs as one machine.

Marked ``ray`` (left out of the default run, which is ``-m "not ray and not slow"``): run them with
``python -m pytest -q -n 0 -m ray``. Every Ray started here binds to 127.0.0.1 with the dashboard off and usage
statistics disabled, and each fixture checks that no Ray process outlives it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ray_helpers import (GROUPS, N_IMAGES, RAY_ENV, assert_ray_listens_on_loopback_only,  # noqa: F401
                         assert_same_outputs, cli, engine_provenance, local_per_image, local_reference, models,
                         processes, ray_processes_gone)

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_ray(models):
    """One local Ray with 2 CPUs for this module (loopback only, no dashboard, no usage statistics)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**RAY_ENV, "NAPARI_CLIPSAM_CACHE": str(models["cache"])}.items():
            mp.setenv(key, value)
        import ray

        before = processes(descendants_of=os.getpid())
        ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            assert ctx.address_info["node_ip_address"] == "127.0.0.1"
            started = {pid: cmd for pid, cmd in processes(descendants_of=os.getpid()).items() if pid not in before}
            yield ctx
            assert_ray_listens_on_loopback_only(started)
        finally:
            ray.shutdown()
        assert ray_processes_gone(started, models["cache"]), "Ray processes outlived ray.shutdown()"


def test_segment_on_ray_writes_what_the_local_command_writes(models, local_ray, local_reference, tmp_path):
    """Mutual mode (the default for 12 images): the same 2 groups, each one actor call, the same files, mode and
    provenance as the local run."""
    out = tmp_path / "ray"
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"],
                            *GROUPS, "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1)
    assert code == 0, err
    assert f"{N_IMAGES} done, 0 skipped" in stdout and "0 failed" in stdout and "img/s" in stdout
    assert "mode: mutual (12 images" in stdout and "2 group(s) of at most 10 images" in stdout, stdout
    assert "mode: mutual (12 images" in err
    assert "ray: mutual scoring, one call per group (2 of the run's 2 group(s)" in err
    assert f"{N_IMAGES}/{N_IMAGES}" in err
    assert_same_outputs(out, local_reference)
    ray, local = engine_provenance(out), engine_provenance(local_reference)
    assert sorted(ray) == [f"img{i:02d}" for i in range(N_IMAGES)] and ray == local
    assert ray["img00"]["mode"] == "mutual" and ray["img00"]["scoring"]["group"]["size"] == 6
    assert {p["scoring"]["group"]["index"] for p in ray.values()} == {0, 1}
    instances = sum(len(json.loads((out / "labels" / f"img{i:02d}.json").read_text())) for i in range(N_IMAGES))
    assert instances > 0  # the comparison covers real masks, not only empty ones
    # everything done: a rerun skips all of it without starting an actor
    code, stdout, _ = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"], *GROUPS,
                          "--ray")
    assert code == 0 and f"0 done, {N_IMAGES} skipped" in stdout and "mode: mutual" in stdout


def test_segment_no_mutual_on_ray_writes_what_the_local_command_writes(models, local_ray, local_per_image,
                                                                        tmp_path):
    out = tmp_path / "ray"
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"],
                            "--no-mutual", "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1,
                            "--ray-batch-size", 2)
    assert code == 0, err
    assert f"{N_IMAGES} done, 0 skipped" in stdout and "mode: per-image (--no-mutual)" in stdout
    assert "2 CPU actor(s), 1 CPU(s) each, 2 image(s) per call" in err and f"{N_IMAGES}/{N_IMAGES}" in err
    assert_same_outputs(out, local_per_image)
    assert engine_provenance(out) == engine_provenance(local_per_image)


def test_a_bad_image_fails_alone_on_ray(models, local_ray, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for name in ("img00.png", "img01.png"):
        shutil.copy(models["images"] / name, images / name)
    (images / "broken.png").write_bytes(b"this is not a png")
    code, stdout, err = cli("segment", images, "--object", "metal", "--out", tmp_path / "o", *models["args"],
                            "--ray=local", "--ray-actors", 1, "--ray-cpus-per-actor", 1, "--ray-batch-size", 3)
    assert code == 1, err
    assert "2 done, 0 skipped" in stdout and "1 failed" in stdout and "broken.png" in stdout
    assert "failed: " in err and "broken.png" in err and "Traceback" not in err


def test_a_bad_image_fails_alone_in_a_mutual_group_on_ray(models, local_ray, tmp_path):
    """One unreadable file among 6 images: it fails alone, the 5 others are still scored against each other."""
    images = tmp_path / "in"
    images.mkdir()
    for i in range(5):
        shutil.copy(models["images"] / f"img{i:02d}.png", images / f"img{i:02d}.png")
    (images / "broken.png").write_bytes(b"this is not a png")
    local, ray = tmp_path / "local", tmp_path / "ray"
    code, stdout_local, err = cli("segment", images, "--object", "metal", "--out", local, *models["args"])
    assert code == 1, err
    code, stdout, err = cli("segment", images, "--object", "metal", "--out", ray, *models["args"], "--ray",
                            "--ray-actors", 1, "--ray-cpus-per-actor", 1)
    assert code == 1, err
    assert "5 done, 0 skipped" in stdout and "1 failed" in stdout and "mode: mutual (6 images" in stdout
    failed = [line for line in stdout.splitlines() if line.startswith("  failed:")]
    assert failed == [line for line in stdout_local.splitlines() if line.startswith("  failed:")] and \
        "broken.png" in failed[0]
    assert "Traceback" not in err
    assert_same_outputs(ray, local)
    assert engine_provenance(ray) == engine_provenance(local)
    assert engine_provenance(ray)["img00"]["folder"]["size"] == 5


def test_multi_frame_tiffs_on_ray_write_what_the_local_command_writes(models, local_ray, tmp_path):
    """A 6-frame TIFF: frame by frame (``stack_f000``…), one mutual group, the frames written into the dataset."""
    import imageio.v3 as iio
    import numpy as np

    images = tmp_path / "in"
    images.mkdir()
    stack = np.stack([iio.imread(models["images"] / f"img{i:02d}.png") for i in range(6)])
    iio.imwrite(images / "stack.tif", stack)
    for mode in ((), ("--no-mutual",)):
        outs = [tmp_path / f"{where}{len(mode)}" for where in ("local", "ray")]
        code, stdout, err = cli("segment", images, "--object", "metal", "--out", outs[0], *models["args"], *mode)
        assert code == 0 and "6 done" in stdout, err
        code, stdout, err = cli("segment", images, "--object", "metal", "--out", outs[1], *models["args"], *mode,
                                "--ray", "--ray-actors", 1, "--ray-cpus-per-actor", 1)
        assert code == 0 and "6 done" in stdout and "6 of them frames of 1 multi-frame file(s)" in stdout, err
        assert_same_outputs(*outs)
        assert engine_provenance(outs[1]) == engine_provenance(outs[0])
        assert sorted(p.name for p in (outs[1] / "coco" / "images").rglob("*.png")) == \
            [f"stack_f{f:03d}.png" for f in range(6)]


def test_resume_after_the_driver_is_interrupted(models, local_ray, local_reference, tmp_path):
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "napari_clipsam", "segment", str(models["images"]), "--object", "metal",
               "--out", str(out), *map(str, models["args"]), *map(str, GROUPS), "--ray",
               local_ray.address_info["gcs_address"],
               "--ray-actors", 1, "--ray-cpus-per-actor", 1, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([str(c) for c in command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 90
    while len(list((out / "provenance").glob("*.json"))) < 2 and driver.poll() is None:
        assert time.monotonic() < deadline, "the driver exported nothing in 90 s"
        time.sleep(0.02)
    driver.send_signal(signal.SIGINT)  # Ctrl+C
    stdout, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, (stdout, err)
    assert "interrupted after" in err and "run the same command again to continue" in err
    hidden = [p for p in out.rglob(".*") if p.suffix in (".tmp", ".bak")]
    assert not hidden, f"the interrupted run left {hidden}"  # Ctrl+C mid-export cleans up after itself
    first = len(list((out / "provenance").glob("*.json")))
    assert 2 <= first < N_IMAGES
    written = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"],
                            *GROUPS, "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1)
    assert code == 0, err
    done = int(stdout.split(" done,")[0].rsplit(" ", 1)[1])
    assert f"{N_IMAGES - done} skipped" in stdout and done <= N_IMAGES - first
    # a resumed run keeps what it wrote; the rest, scored against their whole groups, are as an unbroken run's
    assert {name: (out / "masks" / name).stat().st_mtime_ns for name in written} == written
    assert_same_outputs(out, local_reference)
    assert engine_provenance(out) == engine_provenance(local_reference)


def kill_a_busy_worker(killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the first engine actor seen running a segment call (so the call is surely
    unanswered) and appends its pid to ``killed``."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid, title in processes().items():
                if title.startswith("ray::EngineWorker.segment"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.parametrize("mode", [(*GROUPS,), ("--no-mutual", "--ray-batch-size", "1")], ids=["mutual", "per-image"])
def test_a_killed_worker_costs_no_image_and_no_duplicate(models, local_ray, local_reference, local_per_image, mode,
                                                        tmp_path):
    """SIGKILL an actor in a call (a group call in mutual mode): Ray restarts it and runs the call again."""
    out = tmp_path / "ray"
    killed: list[int] = []
    watcher = kill_a_busy_worker(killed)
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"], *mode,
                            "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1)
    watcher.join(timeout=5)
    assert killed, "no engine actor was seen in a segment call to kill"
    assert code == 0, err
    assert f"{N_IMAGES} done, 0 skipped" in stdout and "0 failed" in stdout
    reference = local_per_image if "--no-mutual" in mode else local_reference
    assert_same_outputs(out, reference)
    assert engine_provenance(out) == engine_provenance(reference)
    for i in range(N_IMAGES):  # exported once each: one provenance record per image
        assert len(json.loads((out / "provenance" / f"img{i:02d}.json").read_text())["exports"]) == 1
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert sorted(im["stem"] for im in coco["images"]) == [f"img{i:02d}" for i in range(N_IMAGES)]


def same_figures(want: dict, got: dict, maps: tuple[str, ...]) -> int:
    """Assert that every figure of ``maps`` per category and on average agrees to 1e-9 (None: nan in JSON) in two
    eval JSON results (or two K entries of their ``few_shot``); returns how many numbers were compared."""
    compared = 0
    for where in [*(("categories", c) for c in want["categories"]), ("mean",)]:
        a, b = want, got
        for key in where:
            a, b = a[key], b[key]
        for m in maps:
            for k, v in a[m].items():
                w = b[m][k]
                assert (v is None and w is None) or abs(v - w) <= 1e-9, (where, m, k, v, w)
                compared += v is not None
    return compared


def test_eval_on_ray_equals_eval(models, local_ray, tmp_path):
    args = ("eval", "--dataset-root", models["data"], "--limit", 4, "--no-cache", "--no-progress", *models["args"])
    code, _, err = cli(*args, "--json", tmp_path / "local.json", "--plots", tmp_path / "local_plots")
    assert code == 0, err
    code, stdout, err = cli(*args, "--json", tmp_path / "ray.json", "--ray", "--ray-actors", 2,
                            "--ray-cpus-per-actor", 1, "--ray-batch-size", 2, "--plots", tmp_path / "ray_plots")
    assert code == 0, err
    assert "pAUROC" in stdout
    # --plots draws the same curves from the driver's metrics
    plotted = sorted(p.name for p in (tmp_path / "local_plots").iterdir())
    assert plotted == sorted(p.name for p in (tmp_path / "ray_plots").iterdir()) and "metal_pixel_roc.png" in plotted
    local, ray = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert ray["engine"] == local["engine"]
    assert {k: v for k, v in ray["settings"].items() if k != "seconds"} == \
        {k: v for k, v in local["settings"].items() if k != "seconds"}
    assert list(ray["categories"]) == list(local["categories"]) == ["fabric", "metal"]
    assert same_figures(local, ray, ("rough", "final")) > 20


def test_segment_normal_on_ray_writes_what_the_local_command_writes(models, local_ray, local_reference, tmp_path):
    """--normal on Ray: every actor (also one Ray restarts after a SIGKILL) uses the local run's references, here
    fused with mutual scoring (the default mode) in the local run's 2 groups."""
    normal = tmp_path / "normal"
    normal.mkdir()
    for src in sorted((models["data"] / "metal" / "train" / "good").glob("*.png")):
        shutil.copy(src, normal / src.name)
    few = ("--normal", normal, "--fewshot-weight", "1")
    code, _, err = cli("segment", models["images"], "--object", "metal", "--out", tmp_path / "local", *few,
                       *models["args"], *GROUPS)
    assert code == 0 and "few-shot: 3 normal reference(s)" in err, err
    killed: list[int] = []
    watcher = kill_a_busy_worker(killed)
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", tmp_path / "ray", *few,
                            *models["args"], *GROUPS, "--ray", "--ray-actors", 2, "--ray-cpus-per-actor", 1)
    watcher.join(timeout=5)
    assert killed, "no engine actor was seen in a segment call to kill"
    assert code == 0, err
    assert f"{N_IMAGES} done, 0 skipped" in stdout and "0 failed" in stdout
    assert "few-shot: 3 normal reference(s)" in err and "weight 1, set on every actor" in err
    assert_same_outputs(tmp_path / "ray", tmp_path / "local")
    with pytest.raises(AssertionError):  # the references changed the masks: the comparison is not zero-shot's
        assert_same_outputs(tmp_path / "ray", local_reference)
    local, ray = engine_provenance(tmp_path / "local"), engine_provenance(tmp_path / "ray")
    assert sorted(ray) == [f"img{i:02d}" for i in range(N_IMAGES)] and ray == local
    assert ray["img00"]["fewshot"]["count"] == 3 and ray["img00"]["fewshot"]["weight"] == 1.0
    assert ray["img00"]["mode"] == "mutual" and ray["img00"]["scoring"]["group"]["count"] == 2


def test_eval_shots_on_ray_equals_eval_shots(models, local_ray, tmp_path):
    """Same references per category and seed, same few-shot figures (mean and std over the seeds)."""
    args = ("eval", "--dataset-root", models["data"], "--rough-only", "--limit", 3, "--shots", 1, 2, "--seeds", 2,
            "--no-progress", *models["args"])
    code, stdout, err = cli(*args, "--no-cache", "--json", tmp_path / "local.json")
    assert code == 0, err
    # with the map cache on the Ray side: the few-shot maps are keyed by the references as locally
    code, stdout_ray, err = cli(*args, "--json", tmp_path / "ray.json", "--ray", "--ray-actors", 2,
                                "--ray-cpus-per-actor", 1)
    assert code == 0, err
    table = stdout.split("few-shot rows:")[1].split("\n(")[0]
    assert stdout_ray.split("few-shot rows:")[1].split("\n(")[0] == table and "rough 2-shot" in table
    local, ray = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert ray["engine"] == local["engine"] and local["engine"]["fewshot"] is None
    assert set(ray["few_shot"]) == set(local["few_shot"]) == {"1", "2"}
    compared = 0
    for k, want in local["few_shot"].items():
        got = ray["few_shot"][k]
        assert got["seeds"] == want["seeds"] == [0, 1] and got["references"] == want["references"]
        compared += same_figures(want, got, ("rough", "rough_std"))
    assert compared > 40
    assert local["few_shot"]["1"]["mean"]["rough"] != local["mean"]["rough"]  # the references changed the maps
    assert local["few_shot"]["2"]["references"]["0"] != local["few_shot"]["2"]["references"]["1"]


def test_eval_mutual_on_ray_equals_eval_mutual(models, local_ray, tmp_path):
    """eval --mutual on Ray: each category's folder scored by one actor call, the same figures, settings,
    provenance and plots as the local run; with --shots the same few-shot rows."""
    args = ("eval", "--dataset-root", models["data"], "--mutual", "--limit", 6, "--no-progress", *models["args"])
    code, stdout, err = cli(*args, "--json", tmp_path / "local.json", "--plots", tmp_path / "local_plots")
    assert code == 0, err
    code, stdout_ray, err = cli(*args, "--json", tmp_path / "ray.json", "--ray", "--ray-actors", 2,
                                "--ray-cpus-per-actor", 1, "--plots", tmp_path / "ray_plots")
    assert code == 0, err
    assert "mode: mutual" in stdout_ray and stdout_ray.split("rough map:")[1].split("\n")[0] == \
        stdout.split("rough map:")[1].split("\n")[0]
    plotted = sorted(p.name for p in (tmp_path / "local_plots").iterdir())
    assert plotted == sorted(p.name for p in (tmp_path / "ray_plots").iterdir()) and "metal_pixel_roc.png" in plotted
    local, ray = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert ray["engine"] == local["engine"] and ray["engine"]["mode"] == "mutual"
    assert {k: v for k, v in ray["settings"].items() if k != "seconds"} == \
        {k: v for k, v in local["settings"].items() if k != "seconds"}
    assert list(ray["categories"]) == list(local["categories"]) == ["fabric", "metal"]
    for c in ("fabric", "metal"):
        assert ray["categories"][c]["folder"] == local["categories"][c]["folder"]
        assert ray["categories"][c]["folder"]["size"] == 6
    assert same_figures(local, ray, ("rough", "final")) > 20
    shots = ("--shots", 1, "--seeds", 1, "--categories", "metal")
    code, _, err = cli(*args, *shots, "--json", tmp_path / "local_s.json")
    assert code == 0, err
    code, _, err = cli(*args, *shots, "--json", tmp_path / "ray_s.json", "--ray", "--ray-actors", 2,
                       "--ray-cpus-per-actor", 1)
    assert code == 0, err
    local, ray = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local_s", "ray_s"))
    assert ray["few_shot"]["1"]["references"] == local["few_shot"]["1"]["references"]
    assert same_figures(local["few_shot"]["1"], ray["few_shot"]["1"], ("rough", "final")) > 5
