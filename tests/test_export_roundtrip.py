"""Exports read back by independent decoders: pycocotools for COCO, Ultralytics' rasterisation rule for YOLO.

The YOLO rule is reimplemented here from its definition (Ultralytics ``polygon2mask``): scale the normalised
vertices to pixels, truncate them to whole pixel indices, fill the polygon including its edges. Labels are
parsed as float32, as Ultralytics does. Nothing from the exporter is used to decode.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from scipy import ndimage
from skimage import draw

from napari_clipsam.export import dataset_split, export_pseudo_labels

EIGHT = np.ones((3, 3), bool)


def yolo_rasterise(line: str, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """``(class, mask)`` of one YOLO-seg line: truncate to whole pixels, fill including the edges."""
    height, width = shape
    values = np.array(line.split(), dtype=np.float32)
    xy = values[1:].reshape(-1, 2)
    cols = (xy[:, 0] * width).astype(np.int32)  # truncation, as np.asarray(..., dtype=np.int32)
    rows = (xy[:, 1] * height).astype(np.int32)
    mask = np.zeros(shape, bool)
    rr, cc = draw.polygon(rows, cols, shape)
    mask[rr, cc] = True
    for r0, c0, r1, c1 in zip(rows, cols, np.roll(rows, -1), np.roll(cols, -1)):
        rr, cc = draw.line(int(r0), int(c0), int(r1), int(c1))
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        mask[rr[keep], cc[keep]] = True
    return int(values[0]), mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ---------------------------------------------------------------- hand-made instance maps


def hand_made_maps() -> dict[str, np.ndarray]:
    """Instance maps with the cases polygon formats get wrong: holes, touching objects, diagonal pieces,
    one-pixel objects, thin bars, objects on the image border, several pieces per instance."""
    maps = {}
    m = np.zeros((48, 64), np.int32)
    m[4:24, 4:24] = 1  # the 20x20 square of the issue
    m[30:33, 2:60] = 2  # a 3x58 bar
    m[10, 40] = 3  # one pixel
    m[40:42, 40] = 4  # two pixels
    m[44:48, 56:64] = 5  # on the bottom-right border
    maps["basic"] = m

    m = np.zeros((40, 40), np.int32)
    rr, cc = draw.disk((20, 20), 15, shape=m.shape)
    m[rr, cc] = 1
    rr, cc = draw.disk((20, 20), 8, shape=m.shape)
    m[rr, cc] = 0  # a ring with its hole
    m[19:22, 19:22] = 2  # another object inside the hole
    maps["ring"] = m

    m = np.ones((32, 32), np.int32)
    m[1:-1, 1:-1] = 0  # a one-pixel frame round the image
    maps["frame"] = m

    m = np.zeros((32, 48), np.int32)
    m[4:20, 4:14] = 1
    m[4:20, 14:24] = 2  # touching along an edge
    m[22:30, 30:38] = 3
    m[14:22, 38:46] = 4  # touching at a corner
    maps["touching"] = m

    m = np.zeros((40, 40), np.int32)
    for i in range(30):
        m[5 + i, 5 + i] = 1  # a one-pixel diagonal line
    for i in range(12):
        m[2 + 2 * i : 4 + 2 * i, 36 - 2 * i : 38 - 2 * i] = 2  # a staircase of 2x2 steps touching at corners
    maps["diagonal"] = m

    m = np.zeros((48, 48), np.int32)
    for r, c in ((10, 10), (35, 30), (12, 38)):
        rr, cc = draw.disk((r, c), 6, shape=m.shape)
        m[rr, cc] = 1  # one instance, three pieces
    m[44, 4] = 1  # plus a one-pixel speck (dropped: below the minimum piece area)
    rr, cc = draw.disk((40, 20), 3, shape=m.shape)
    m[rr, cc] = 2
    m[38:43, 24:26] = 2  # a second instance touching the first's piece diagonally? no: its own two parts
    maps["pieces"] = m

    m = np.zeros((24, 24), np.int32)
    m[0, 0] = 1
    m[23, 23] = 2
    m[0, 23] = 3
    m[12, 12] = 4  # one-pixel objects, three in corners
    maps["pixels"] = m
    return maps


def read_yolo(out: Path, stem: str, shape) -> list[tuple[int, np.ndarray]]:
    text = (out / "yolo" / "labels" / dataset_split(stem) / f"{stem}.txt").read_text()
    return [yolo_rasterise(line, shape) for line in text.splitlines()]


def export_all(out: Path, maps: dict[str, np.ndarray], **kw) -> dict:
    reports = {}
    for stem, inst in maps.items():
        reports[stem] = export_pseudo_labels(out, stem, inst, formats=["coco", "yolo"], **kw)
    return reports


def yolo_expected(mask: np.ndarray, min_piece_area: int = 4) -> np.ndarray:
    """The instance as one YOLO polygon can hold it: holes filled, pieces below the minimum area dropped
    (never the largest). Cut pixels are checked separately."""
    filled = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(filled, EIGHT)
    areas = np.bincount(labels.ravel())[1:]
    keep = [k + 1 for k in range(n) if areas[k] >= min_piece_area or k == int(np.argmax(areas))]
    return np.isin(labels, keep)


def test_yolo_single_piece_objects_come_back_exactly(tmp_path):
    maps = hand_made_maps()
    reports = export_all(tmp_path, maps)
    checked = 0
    for stem, inst in maps.items():
        back = read_yolo(tmp_path, stem, inst.shape)
        ids = [i for i in np.unique(inst) if i > 0]
        assert len(back) == len(ids), stem  # one line per instance
        hole_pixels = bridge = 0
        for instance_id, (_, mask) in zip(ids, back):
            truth = inst == instance_id
            expected = yolo_expected(truth)
            assert not (expected & ~mask).any(), (stem, instance_id)  # nothing kept is lost
            extra = mask & ~expected
            bridge += int(extra.sum())
            hole_pixels += int((ndimage.binary_fill_holes(truth) & ~truth).sum())
            if ndimage.label(expected, EIGHT)[1] == 1:
                assert not extra.any(), (stem, instance_id)  # one piece: no cut, exact
                if np.array_equal(expected, truth):
                    checked += 1
                    assert iou(mask, truth) == 1.0
        assert reports[stem].summary["yolo_bridge_pixels"] == bridge, stem
        assert reports[stem].summary["yolo_hole_pixels"] == hole_pixels, stem
    assert checked >= 12


def test_yolo_summary_counts_holes_pieces_and_cuts(tmp_path):
    maps = hand_made_maps()
    reports = export_all(tmp_path, maps)
    assert reports["frame"].summary["yolo_hole_pixels"] == 30 * 30  # the frame's inside comes back filled
    assert reports["ring"].summary["yolo_hole_pixels"] == int((ndimage.binary_fill_holes(maps["ring"] == 1)
                                                               & (maps["ring"] != 1)).sum())
    assert reports["pieces"].summary["yolo_dropped_pieces"] == 1  # the one-pixel speck
    assert reports["pieces"].summary["yolo_dropped_pixels"] == 1
    assert reports["pieces"].summary["yolo_bridge_pixels"] > 0  # three discs joined by cuts
    assert reports["diagonal"].summary["yolo_bridge_pixels"] == 0  # 8-connected: one piece each
    prov = json.loads((tmp_path / "provenance" / "pieces.json").read_text())["exports"][-1]
    assert prov["summary"] == reports["pieces"].summary
    # a smaller minimum keeps the speck
    report = export_pseudo_labels(tmp_path / "b", "p", maps["pieces"], formats=["yolo"], yolo_min_piece_area=1)
    assert report.summary["yolo_dropped_pieces"] == 0


def test_yolo_random_shapes_round_trip(tmp_path):
    """Random single-piece masks (holes filled): the rule gives each back exactly."""
    rng = np.random.default_rng(7)
    tried = 0
    for k in range(150):
        h, w = (int(v) for v in rng.integers(2, 20, 2))
        raw = ndimage.binary_fill_holes(rng.random((h, w)) < rng.uniform(0.3, 0.9))
        labels, n = ndimage.label(raw, EIGHT)
        if n == 0:
            continue
        piece = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        export_pseudo_labels(tmp_path, f"r{k}", piece, formats=["yolo"])
        (_, back), = read_yolo(tmp_path, f"r{k}", piece.shape)
        np.testing.assert_array_equal(back, piece)
        tried += 1
    assert tried > 100



def _speckle(rng, shape, density):
    """Random specks, single pixels or grown to 3×3 blobs (8-connected specks join into one piece)."""
    specks = rng.random(shape) < density
    return ndimage.binary_dilation(specks) if rng.random() < 0.5 else specks


def test_many_piece_spanning_tree_from_delaunay_weighs_what_every_pair_gives():
    """Above PAIRWISE_PIECES pieces the cuts' tree comes from the Delaunay triangulation of the boundary pixels:
    it must weigh what the tree over every pair of pieces weighs (ties may pick other, equally long cuts),
    including grids of collinear and cocircular pixels."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    from napari_clipsam.export import outline

    def tree_weight(pairs, m):
        keys = list(pairs)
        graph = csr_matrix(([pairs[k][0] + 1e-9 for k in keys], ([i for i, _ in keys], [j for _, j in keys])),
                           shape=(m, m))
        return float(minimum_spanning_tree(graph).sum())

    rng = np.random.default_rng(3)
    cases = [_speckle(rng, (int(rng.integers(30, 70)),) * 2, rng.uniform(0.01, 0.06)) for _ in range(12)]
    grid = np.zeros((40, 40), bool)
    grid[::4, ::4] = True  # 100 single pixels on a grid: every distance tied
    row = np.zeros((3, 200), bool)
    row[1, ::5] = True  # 40 collinear pixels
    for mask in cases + [grid, row]:
        labels, m = ndimage.label(ndimage.binary_fill_holes(mask), EIGHT)
        pieces = [outline.piece_outline(labels[r] == k + 1) + [r[0].start, r[1].start]
                  for k, r in enumerate(ndimage.find_objects(labels))]
        assert m > outline.PAIRWISE_PIECES
        plain, fast = outline._closest_pairs(pieces), outline._delaunay_pairs(pieces)
        assert set(fast) <= set(plain)
        for key, (d, a, b) in fast.items():  # each cut joins the two pieces' own boundary pixels, d apart
            assert np.isclose(np.hypot(*(pieces[key[0]][a] - pieces[key[1]][b])), d) and d >= plain[key][0] - 1e-9
        assert tree_weight(fast, m) == pytest.approx(tree_weight(plain, m), abs=1e-6)


def test_an_instance_of_thousands_of_pieces_round_trips(tmp_path):
    """A speckled instance (a random model's fragmented mask; thousands of pieces in a chain) is exported at once
    and read back under Ultralytics' rule: every kept piece comes back, the extra pixels are the cuts counted."""
    rng = np.random.default_rng(5)
    mask = _speckle(rng, (256, 256), 0.03)
    chain = np.zeros((3, 6000), bool)
    chain[1, ::4] = True  # 1500 one-pixel pieces in a row: a spanning tree as deep as it can be
    for stem, inst in (("speckle", mask), ("chain", chain)):
        report = export_pseudo_labels(tmp_path, stem, inst.astype(np.int32), formats=["yolo"],
                                      yolo_min_piece_area=1)
        (_, back), = read_yolo(tmp_path, stem, inst.shape)
        expected = yolo_expected(inst, 1)
        assert not (expected & ~back).any(), stem
        assert int((back & ~expected).sum()) == report.summary["yolo_bridge_pixels"] > 0, stem


def test_coco_round_trip_with_pycocotools(tmp_path):
    maps = hand_made_maps()
    for mode in ("rle", "polygon"):
        out = tmp_path / mode
        reports = export_all(out, maps, coco_segmentation=mode)
        coco = COCO(str(out / "coco" / "annotations.json"))
        holes = 0
        for image in coco.loadImgs(coco.getImgIds()):
            inst = maps[image["stem"]]
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                truth = inst == ann["instance_id"]
                back = coco.annToMask(ann).astype(bool)
                # RLE is exact; so are the pixel-edge polygons of hole-free instances under pycocotools' rule
                np.testing.assert_array_equal(back, truth, err_msg=f"{mode} {image['stem']}:{ann['instance_id']}")
                holes += mode == "polygon" and isinstance(ann["segmentation"], dict)
        if mode == "polygon":  # ring, frame: written as RLE because of their holes
            assert holes == sum(r.summary["coco_polygon_holes_as_rle"] for r in reports.values()) == 2


# ---------------------------------------------------------------- a folder to train on


def _write_image(path: Path, shape, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)
    iio.imwrite(path, pixels)
    return pixels


def test_dataset_with_images_layout(tmp_path):
    maps = hand_made_maps()
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    for stem, inst in maps.items():
        _write_image(src / f"{stem}.png", inst.shape, len(stem))
        export_pseudo_labels(out, stem, inst, formats=["coco", "yolo"], image_file=src / f"{stem}.png",
                             dataset_images=True)
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    assert "path" not in data and data["train"] == "images/train" and data["val"] == "images/val"
    for stem in maps:
        split = dataset_split(stem)
        image = out / "yolo" / "images" / split / f"{stem}.png"
        assert image.read_bytes() == (src / f"{stem}.png").read_bytes()
        assert (out / "yolo" / "labels" / split / f"{stem}.txt").is_file()  # Ultralytics' images->labels rule
    coco = COCO(str(out / "coco" / "annotations.json"))
    for image in coco.loadImgs(coco.getImgIds()):
        path = out / "coco" / image["file_name"]
        assert image["file_name"] == f"images/{image['split']}/{image['stem']}.png"
        assert iio.imread(path).shape[:2] == (image["height"], image["width"])
    # the folder can be moved: nothing absolute inside
    for text in ((out / "yolo" / "data.yaml").read_text(), (out / "coco" / "annotations.json").read_text()):
        assert str(tmp_path) not in text


def test_dataset_images_from_pixels_and_clear_errors(tmp_path):
    inst = hand_made_maps()["basic"]
    pixels = np.random.default_rng(0).integers(0, 255, inst.shape, dtype=np.uint8)
    export_pseudo_labels(tmp_path, "layer", inst, formats=["yolo"], image=pixels, dataset_images=True)
    written = tmp_path / "yolo" / "images" / dataset_split("layer") / "layer.png"
    np.testing.assert_array_equal(iio.imread(written), pixels)
    from napari_clipsam.export import ExportError

    with pytest.raises(ExportError, match="image_file"):
        export_pseudo_labels(tmp_path / "x", "a", inst, formats=["yolo"], dataset_images=True)
    with pytest.raises(ExportError, match="does not exist"):
        export_pseudo_labels(tmp_path / "x", "a", inst, formats=["coco"], dataset_images=True,
                             image_file=tmp_path / "missing.png")
    with pytest.raises(ExportError, match="val_fraction"):
        export_pseudo_labels(tmp_path / "x", "a", inst, val_fraction=1.5)
    assert not (tmp_path / "x").exists()


def test_split_is_seeded_and_stable_when_images_are_added():
    first = {f"img{i:04d}": dataset_split(f"img{i:04d}") for i in range(200)}
    more = {f"img{i:04d}": dataset_split(f"img{i:04d}") for i in range(2000)}
    assert all(more[k] == v for k, v in first.items())
    share = sum(v == "val" for v in more.values()) / len(more)
    assert 0.17 < share < 0.23  # default val_fraction 0.2
    assert [dataset_split(k, 0.2, seed=1) for k in first] != list(first.values())
    assert {dataset_split(k, 0.0) for k in first} == {"train"} and {dataset_split(k, 1.0) for k in first} == {"val"}


def test_an_image_keeps_its_split_and_overwrite_moves_it_without_leaving_a_copy(tmp_path):
    """Exporting an image again with another split setting never puts it in both train and val (Ultralytics would
    validate on training images): it stays where it was written (also when its labels are overwritten, as the
    dock's Accept does); with resplit (``segment --overwrite``) it moves and its files in the old split go. COCO, read back with pycocotools, names the file where it is."""
    from pycocotools.coco import COCO

    inst = hand_made_maps()["basic"]
    source = tmp_path / "plate.png"
    iio.imwrite(source, np.random.default_rng(0).integers(0, 255, inst.shape, dtype=np.uint8))
    out = tmp_path / "out"
    opts = dict(formats=["yolo", "coco", "mvtec"], image_file=source, dataset_images=True)

    def files(split):
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and f"/{split}/" in
                      f"/{p.relative_to(out).as_posix()}")

    first = export_pseudo_labels(out, "plate", inst, val_fraction=0.0, **opts)
    assert first.split == "train" and len(files("train")) == 3 and files("val") == []
    again = export_pseudo_labels(out, "plate", inst, val_fraction=1.0, **opts)  # the rule now says val
    assert again.split == "train" and files("val") == [] and not again.removed
    kept = export_pseudo_labels(out, "plate", inst, val_fraction=1.0, overwrite=True, **opts)  # new labels only
    assert kept.split == "train" and files("val") == [] and not kept.removed
    moved = export_pseudo_labels(out, "plate", inst, val_fraction=1.0, overwrite=True, resplit=True, **opts)
    assert moved.split == "val" and files("train") == [] and len(files("val")) == 3
    assert sorted(p.relative_to(out).as_posix() for p in moved.removed) == [
        "coco/images/train/plate.png", "yolo/images/train/plate.png", "yolo/labels/train/plate.txt"]
    coco = COCO(str(out / "coco" / "annotations.json"))
    assert [img["file_name"] for img in coco.dataset["images"]] == ["images/val/plate.png"]
    assert (out / "coco" / coco.dataset["images"][0]["file_name"]).is_file()
