"""Two writers, crashes and leftovers: real processes write one output folder; kills at every rename point.

Each scenario runs the exporter in fresh Python processes (``subprocess``), so locks, renames and ``os._exit``
behave as they do for users running two ``segment`` commands or two review sessions at once.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_clipsam.export import (
    ExportError,
    clean_stale_files,
    dataset_split,
    export_pseudo_labels,
    image_done,
)
from napari_clipsam.export.locking import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this worktree first on the path."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


WRITER = """
    import sys
    import numpy as np
    from napari_clipsam.export import export_pseudo_labels
    out, prefix, cls, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for i in range(n):
        inst = np.zeros((24, 24), np.int32)
        inst[2 + i % 10 : 9 + i % 10, 3:12] = 1
        inst[15:20, 15:22] = 2
        export_pseudo_labels(out, f"{prefix}_{i:03d}", inst, {1: cls, 2: cls}, classes=[cls],
                             formats=["mvtec", "tiff", "coco", "yolo"])
"""


def test_two_processes_exporting_into_one_folder_lose_nothing(tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(out), prefix, cls, "15"],
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stderr=subprocess.PIPE,
                              text=True)
             for prefix, cls in (("A", "scratch"), ("B", "dent"))]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    coco = json.loads((out / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 30 and len(coco["annotations"]) == 60
    assert len({i["id"] for i in coco["images"]}) == 30 and len({a["id"] for a in coco["annotations"]}) == 60
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    stem_of = {i["id"]: i["stem"] for i in coco["images"]}
    for ann in coco["annotations"]:
        assert cats[ann["category_id"]] == {"A": "scratch", "B": "dent"}[stem_of[ann["image_id"]][0]]
    names = yaml.safe_load((out / "yolo" / "data.yaml").read_text())["names"]
    assert sorted(names) == ["dent", "scratch"]
    for prefix, cls in (("A", "scratch"), ("B", "dent")):
        for i in range(15):
            stem = f"{prefix}_{i:03d}"
            lines = (out / "yolo" / "labels" / dataset_split(stem) / f"{stem}.txt").read_text().splitlines()
            assert {names[int(line.split()[0])] for line in lines} == {cls}  # class ids mean the right class
            assert image_done(out, stem, ["mvtec", "tiff", "coco", "yolo"], split=dataset_split(stem),
                              image_suffix=None)


MANIFEST_WRITER = """
    import sys
    from napari_clipsam.review.manifest import Entry, Manifest, Verdict
    out, inp, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    manifest = Manifest.open(out, inp)
    for i in range(12):
        manifest.set(f"{prefix}{i}.png", Entry(Verdict.ACCEPTED, "2024-01-01T00:00:00+00:00", f"{prefix}{i}"))
"""


def test_two_review_sessions_keep_each_others_verdicts(tmp_path):
    out, inp = tmp_path / "out", tmp_path / "in"
    inp.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(MANIFEST_WRITER), str(out), str(inp), p],
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stderr=subprocess.PIPE,
                              text=True) for p in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    images = json.loads((out / "clipsam_manifest.json").read_text())["images"]
    assert sorted(images) == sorted(f"{p}{i}.png" for p in "ab" for i in range(12))


def test_yolo_class_ids_are_append_only_and_a_conflicting_order_is_refused(tmp_path):
    inst = np.zeros((16, 16), np.int32)
    inst[2:8, 2:8] = 1
    export_pseudo_labels(tmp_path, "a", inst, {1: "scratch"}, classes=["scratch", "dent"], formats=["yolo"])
    with pytest.raises(ExportError, match=r"0=scratch, 1=dent.*dent, scratch.*cannot change"):
        export_pseudo_labels(tmp_path, "b", inst, {1: "dent"}, classes=["dent", "scratch"], formats=["yolo"])
    assert not (tmp_path / "yolo" / "labels" / dataset_split("b") / "b.txt").exists()
    export_pseudo_labels(tmp_path, "c", inst, {1: "crack"}, classes=["scratch", "crack"], formats=["yolo"])
    assert yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())["names"] == ["scratch", "dent", "crack"]


# ---------------------------------------------------------------- kill at every rename point

ONE_IMAGE = """
    import os, sys
    import numpy as np
    from napari_clipsam.export import clean_stale_files, export_pseudo_labels, image_done, merge_coco
    from napari_clipsam.io import atomic
    from napari_clipsam.export import dataset_split
    src, kill_at, outs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    calls = []

    def crash(target):  # the fault: the process dies just before its n-th rename
        calls.append(str(target))
        if len(calls) == kill_at:
            os._exit(9)

    atomic.before_replace = crash
    formats = ["mvtec", "tiff", "coco", "yolo"]
    inst = np.zeros((32, 40), np.int32)
    inst[3:12, 4:20] = 1
    inst[18:30, 25:38] = 2
    inst[20:24, 28:32] = 0  # a hole
    for out in outs:  # what one `segment` run does for this image, in each folder
        clean_stale_files(out)
        merge_coco(out)
        if not image_done(out, "img", formats, split=dataset_split("img"), image_suffix=".png"):
            export_pseudo_labels(out, "img", inst, {1: "scratch", 2: "dent"}, classes=["scratch", "dent"],
                                 formats=formats, image_file=src, dataset_images=True, coco_merge=False,
                                 provenance={"run": 1})
        merge_coco(out)
    print(len(calls))
"""


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _comparable(files: dict[str, bytes]) -> dict[str, object]:
    """Contents to compare between runs: all bytes, except the time stamps in the COCO info and provenance."""
    out = dict(files)
    coco = json.loads(out.pop("coco/annotations.json"))
    coco.pop("info")
    out["coco/annotations.json"] = coco
    out.pop("provenance/img.json")
    return out


def test_a_kill_at_every_rename_point_is_repaired_by_the_next_run(tmp_path):
    import imageio.v3 as iio

    src = tmp_path / "img.png"
    iio.imwrite(src, np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8))
    clean = tmp_path / "clean"
    renames = int(run_python(ONE_IMAGE, src, 0, clean).stdout)
    assert renames == 10  # provenance, mask, tiff x2, coco image + shard, yolo image + labels, data.yaml, merge
    reference = _files(clean)
    assert LOCK_NAME in reference
    killed = {kill_at: tmp_path / f"killed{kill_at}" for kill_at in range(1, renames + 1)}
    for kill_at, out in killed.items():
        crashed = run_python(ONE_IMAGE, src, kill_at, out, check=False)
        assert crashed.returncode == 9, crashed.stderr
        assert _files(out) != reference
    run_python(ONE_IMAGE, src, 0, *killed.values())  # the rerun, in every folder
    for kill_at, out in killed.items():
        files = _files(out)
        assert sorted(files) == sorted(reference), kill_at  # the same files, no leftovers (.tmp, .bak)
        assert _comparable(files) == _comparable(reference), kill_at
        history = json.loads(files["provenance/img.json"])["exports"]
        recorded = {}
        for record in history:
            recorded.update(record["sha256"])
        assert recorded and all(hashlib.sha256(files[f]).hexdigest() == h for f, h in recorded.items()), kill_at


def test_stale_temporary_files_are_cleaned_but_a_live_writers_are_not(tmp_path):
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    stale = [out / "masks" / ".a_mask.png.0123abcd.tmp", out / ".clipsam_manifest.json.89abcdef.bak"]
    for p in stale:
        p.write_bytes(b"left by a crash")
    keep = out / "masks" / "notes.tmp"  # not one of ours
    keep.write_bytes(b"user file")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from napari_clipsam.export.locking import folder_lock
        with folder_lock(sys.argv[1]):
            live = Path(sys.argv[1]) / "masks" / ".b_mask.png.fedcba98.tmp"
            live.write_bytes(b"being written")
            print("locked", flush=True)
            time.sleep(1.5)
            live.rename(live.parent / "b_mask.png")
    """), str(out)], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    removed = clean_stale_files(out)  # waits for the live writer's lock
    assert holder.wait(timeout=60) == 0
    assert sorted(removed) == sorted(stale)
    assert (out / "masks" / "b_mask.png").read_bytes() == b"being written" and keep.exists()


def test_an_interrupted_overwrite_is_finished_and_a_hand_edit_is_kept(tmp_path, monkeypatch):
    from napari_clipsam.export import read_mvtec_mask
    from napari_clipsam.io import atomic

    first, second = np.zeros((16, 16), np.int32), np.zeros((16, 16), np.int32)
    first[2:6, 2:6] = 1
    second[8:14, 8:14] = 1
    export_pseudo_labels(tmp_path, "img", first, formats=["mvtec", "tiff"])
    calls = []

    def die_after_provenance(target):
        calls.append(target)
        if len(calls) == 2:  # the new provenance is in place, the old mask is not replaced yet
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "before_replace", die_after_provenance)
    with pytest.raises(KeyboardInterrupt):
        export_pseudo_labels(tmp_path, "img", second, formats=["mvtec", "tiff"], overwrite=True)
    monkeypatch.setattr(atomic, "before_replace", None)
    assert not image_done(tmp_path, "img", ["mvtec", "tiff"], split=dataset_split("img"), image_suffix=None)
    report = export_pseudo_labels(tmp_path, "img", second, formats=["mvtec", "tiff"])  # a resume: no overwrite
    assert {p.name for p in report.written} >= {"img_mask.png", "img.tif", "img.json"}
    np.testing.assert_array_equal(read_mvtec_mask(tmp_path / "masks" / "img_mask.png"), second > 0)
    assert image_done(tmp_path, "img", ["mvtec", "tiff"], split=dataset_split("img"), image_suffix=None)
    # a person edits the mask afterwards: a later export without overwrite leaves it alone
    import imageio.v3 as iio

    edited = np.zeros((16, 16), np.uint8)
    edited[0:3, 0:3] = 255
    iio.imwrite(tmp_path / "masks" / "img_mask.png", edited)
    report = export_pseudo_labels(tmp_path, "img", first, formats=["mvtec"])
    assert report.written == [] and (tmp_path / "masks" / "img_mask.png") in report.skipped
    np.testing.assert_array_equal(iio.imread(tmp_path / "masks" / "img_mask.png"), edited)
