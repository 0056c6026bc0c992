"""What the Ray tests share (``test_ray.py``, ``test_ray_cluster.py``): the environment every Ray they start
gets, tiny models and images, the in-process CLI, output comparison and a process census from ``/proc``."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from napari_clipsam.testing import run_cli

# loopback only (Ray's single-machine switch makes the node address 127.0.0.1), no usage statistics
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
N_IMAGES = 12


cli = run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny CLIP and SAM folders, a --config that gives the random models some instances, 12 images and a
    small two-category dataset (3 normal training images per category: few-shot references)."""
    from napari_clipsam.data import make_synthetic_dataset
    from napari_clipsam.testing import write_tiny_clip, write_tiny_sam

    root = tmp_path_factory.mktemp("ray")
    clip, sam = write_tiny_clip(root / "clip"), write_tiny_sam(root / "sam")
    config = root / "config.json"
    config.write_text(json.dumps({"prompt_threshold": 0.025, "min_predicted_iou": 0.0, "max_outside_box": 1.0,
                                  "mask_threshold": 0.3, "feature_layers": [1, 2, 3, 4]}))  # tiny CLIP: 4 blocks
    data = make_synthetic_dataset(root / "data", ("metal", "fabric"), n_train_good=3, n_test_good=3,
                                  n_test_defect=2, image_size=64, seed=0)
    images = root / "in"
    images.mkdir()
    for i, src in enumerate(sorted(data.rglob("test/*/*.png"))[:N_IMAGES]):
        shutil.copy(src, images / f"img{i:02d}.png")
    args = ["--clip-model", f"local-dir:{clip}", "--image-size", "56", "--sam-model", f"local-dir:{sam}",
            "--device", "cpu", "--config", config]
    return {"root": root, "images": images, "data": data, "args": args, "cache": root / "cache"}


#: ``segment``'s mutual-scoring groups for the 12 images: 2 interleaved groups of 6 (each one actor call on Ray)
GROUPS = ("--mutual-group-size", 10)


@pytest.fixture(scope="module")
def local_reference(models):
    """The local command's outputs for the 12 images in its default mode, folder mutual scoring in 2 groups of 6
    (what every cluster run in that mode must equal)."""
    out = models["root"] / "local"
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"], *GROUPS)
    assert code == 0 and f"{N_IMAGES} done" in stdout, err
    assert "mode: mutual (12 images" in stdout and "2 group(s) of at most 10 images" in stdout, stdout
    return out


@pytest.fixture(scope="module")
def local_per_image(models):
    """The local command's outputs for the 12 images segmented each alone (``--no-mutual``)."""
    out = models["root"] / "local_per_image"
    code, stdout, err = cli("segment", models["images"], "--object", "metal", "--out", out, *models["args"],
                            "--no-mutual")
    assert code == 0 and f"{N_IMAGES} done" in stdout and "mode: per-image (--no-mutual)" in stdout, err
    return out


def engine_provenance(out: Path) -> dict[str, dict]:
    """Stem → the engine provenance of its (only) export, without its timestamp."""
    found = {}
    for p in sorted((out / "provenance").glob("*.json")):
        (export,) = json.loads(p.read_text())["exports"]
        found[p.stem] = {k: v for k, v in export["engine"].items() if k != "created"}
    return found


def label_files(out: Path) -> dict[str, bytes]:
    """Relative path → bytes of every mask, label TIFF (+ classes JSON) and YOLO file under ``out``."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("masks", "labels", "yolo")
            for p in sorted((out / sub).rglob("*")) if p.is_file()}


def coco_canonical(out: Path):
    """COCO images, annotations and categories without the ids a merge order assigns."""
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    stem_of = {im["id"]: im["stem"] for im in coco["images"]}
    images = sorted(({k: v for k, v in im.items() if k != "id"} for im in coco["images"]), key=lambda i: i["stem"])
    annotations = sorted(({**{k: v for k, v in a.items() if k not in ("id", "image_id")},
                           "stem": stem_of[a["image_id"]]} for a in coco["annotations"]),
                         key=lambda a: json.dumps(a, sort_keys=True))
    return images, annotations, coco["categories"]


def assert_same_outputs(out: Path, reference: Path) -> None:
    """Byte-identical masks, TIFFs and YOLO files, and the same COCO annotations, as ``reference``."""
    got, want = label_files(out), label_files(reference)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []
    assert coco_canonical(out) == coco_canonical(reference)


def processes(descendants_of: int | None = None) -> dict[int, str]:
    """pid → command line (a Ray worker's shows its title, e.g. ``ray::EngineWorker.segment``), from /proc;
    only the descendants of ``descendants_of`` when given."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (ppid, cmd)
    if descendants_of is None:
        return {pid: cmd for pid, (_, cmd) in table.items()}
    keep, grew = {descendants_of}, True
    while grew:
        new = {pid for pid, (ppid, _) in table.items() if ppid in keep} - keep
        keep |= new
        grew = bool(new)
    return {pid: table[pid][1] for pid in keep - {descendants_of}}


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def ray_processes_gone(started: dict[int, str], cache: Path | str, timeout: float = 30.0) -> bool:
    """Whether every process in ``started``, and every process titled ``ray::`` that runs with this test's
    ``NAPARI_CLIPSAM_CACHE`` = ``cache`` (an orphaned worker of this test's Ray; another test session's Ray, say
    under ``-n 2``, has its own), has exited within ``timeout``."""
    entry = f"NAPARI_CLIPSAM_CACHE={cache}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = processes()
        left = [pid for pid in started if pid in alive and alive[pid] == started[pid]]
        left += [pid for pid, cmd in alive.items() if cmd.startswith("ray::") and _environ_has(pid, entry)]
        if not left:
            return True
        time.sleep(0.2)
    return False


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_addresses(pids) -> set[str]:
    """The hex local addresses (as /proc/net/tcp{,6} writes them) of the TCP sockets ``pids`` listen on."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = str(fd.readlink()) if fd.is_symlink() else ""
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.add(fields[1].split(":")[0])
    return found


def assert_ray_listens_on_loopback_only(started: dict[int, str]) -> None:
    """Every TCP socket the Ray processes (``started``, those titled ``ray::`` and this driver) listen on is on
    loopback."""
    pids = set(started) | {pid for pid, cmd in processes().items() if cmd.startswith("ray::")} | {os.getpid()}
    addresses = listening_addresses(pids)
    assert addresses and addresses <= LOOPBACK, addresses
