"""Dataset readers, image/mask loading and the synthetic generator."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_clipsam.data import (
    CATEGORIES,
    CATEGORY_DEFECTS,
    FolderDataset,
    MVTecDataset,
    Sample,
    VisADataset,
    load_image,
    load_mask,
    make_synthetic_dataset,
    open_dataset,
    synthetic_image,
)
from napari_clipsam.data.synthetic import _image_seed

SIZE = 64
CATS = ("metal", "fabric", "pcb")
N_TRAIN, N_GOOD, N_DEFECT = 2, 2, 1


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "mvtec"
    return make_synthetic_dataset(root, CATS, N_TRAIN, N_GOOD, N_DEFECT, image_size=SIZE, seed=7)


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


# ---------------------------------------------------------------- synthetic generator


@pytest.mark.parametrize("category", CATEGORIES)
def test_synthetic_masks_are_exactly_the_changed_pixels(category):
    for defect in CATEGORY_DEFECTS[category]:
        for seed in range(3):
            image, mask = synthetic_image(category, defect, size=96, seed=seed)
            clean, clean_mask = synthetic_image(category, None, size=96, seed=seed)
            assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
            assert mask.dtype == bool and mask.shape == (96, 96)
            assert not clean_mask.any()
            np.testing.assert_array_equal(mask, (image != clean).any(axis=-1))
            assert 0.001 < mask.mean() < 0.25, (category, defect, seed, mask.mean())
            # contrast: the defect must stand out from the texture it replaced
            change = np.abs(image.astype(int) - clean.astype(int)).sum(-1)[mask].mean()
            assert change > 60, (category, defect, seed, change)


def test_synthetic_normals_vary_and_reject_bad_arguments():
    a, _ = synthetic_image("fabric", None, seed=1)
    b, _ = synthetic_image("fabric", None, seed=2)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="bogus"):
        synthetic_image("bogus")
    with pytest.raises(ValueError, match="missing_part.*metal"):
        synthetic_image("metal", "missing_part")


def test_synthetic_dataset_is_deterministic(tmp_path):
    kwargs = dict(categories=("wood", "part"), n_train_good=1, n_test_good=1, n_test_defect=1, image_size=48)
    first = make_synthetic_dataset(tmp_path / "a", seed=3, **kwargs)
    second = make_synthetic_dataset(tmp_path / "b", seed=3, **kwargs)
    other = make_synthetic_dataset(tmp_path / "c", seed=4, **kwargs)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.png"))
    assert len(files) == 2 * 2 + len(CATEGORY_DEFECTS["wood"]) * 2 + len(CATEGORY_DEFECTS["part"]) * 2
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert sum((first / f).read_bytes() != (other / f).read_bytes() for f in files) == len(files)


# ---------------------------------------------------------------- MVTec-AD


def test_mvtec_reads_back_the_generator(mvtec_root):
    data = MVTecDataset(mvtec_root)
    n_defects = {c: len(CATEGORY_DEFECTS[c]) for c in CATS}
    assert data.categories == tuple(sorted(CATS))
    assert len(data) == sum(N_GOOD + N_DEFECT * n for n in n_defects.values())
    assert data.labels.sum() == sum(N_DEFECT * n for n in n_defects.values())
    for image, mask, sample in data:
        assert (sample.label == 0) == (sample.defect == "good") == (sample.mask_path is None)
        index = int(sample.image_path.stem)
        seed = _image_seed(7, sample.category, "test", sample.defect, index)
        expected_image, expected_mask = synthetic_image(sample.category, sample.defect, SIZE, seed)
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(mask, expected_mask)
        assert mask.any() == bool(sample.label)


def test_mvtec_train_split_and_category_filter(mvtec_root):
    train = MVTecDataset(mvtec_root, categories="pcb", split="train")
    assert len(train) == N_TRAIN and train.categories == ("pcb",)
    assert all(s.label == 0 and s.mask_path is None for s in train.samples)
    two = MVTecDataset(mvtec_root, categories=["pcb", "metal"])
    assert two.categories == ("pcb", "metal")
    assert len(two.category("metal")) == N_GOOD + N_DEFECT * len(CATEGORY_DEFECTS["metal"])
    with pytest.raises(ValueError, match="split"):
        MVTecDataset(mvtec_root, split="val")


def test_mvtec_errors_name_the_problem(mvtec_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MVTecDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="'carpet'.*available categories: fabric, metal, pcb"):
        MVTecDataset(mvtec_root, categories=["metal", "carpet"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt"):
        MVTecDataset(tmp_path / "empty")

    root = _copy(mvtec_root, tmp_path)
    (root / "metal" / "ground_truth" / "stain" / "000_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"test/stain/000\.png.*000_mask\.png"):
        MVTecDataset(root, categories="metal")
    shutil.rmtree(root / "fabric" / "ground_truth")
    with pytest.raises(FileNotFoundError, match=r"'fabric' has no masks at all.*ground_truth"):
        MVTecDataset(root, categories="fabric")
    for defect in CATEGORY_DEFECTS["pcb"]:
        shutil.rmtree(root / "pcb" / "test" / defect)
    with pytest.raises(ValueError, match="'pcb'.*no anomalous images"):
        MVTecDataset(root, categories="pcb")


def test_mask_size_mismatch_and_unreadable_image(mvtec_root, tmp_path):
    root = _copy(mvtec_root, tmp_path)
    mask_path = root / "metal" / "ground_truth" / "hole" / "000_mask.png"
    iio.imwrite(mask_path, np.zeros((SIZE, SIZE + 3), np.uint8))
    data = MVTecDataset(root, categories="metal")
    index = next(i for i, s in enumerate(data.samples) if s.mask_path == mask_path)
    with pytest.raises(ValueError, match=r"000_mask\.png.*64x67.*hole/000\.png.*64x64"):
        data[index]

    broken = root / "metal" / "test" / "good" / "000.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"Could not read image file .*good/000\.png"):
        load_image(broken)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(root / "missing.png")


# ---------------------------------------------------------------- VisA and folder layouts


def _write_visa(mvtec_root: Path, root: Path, rows_override=None) -> Path:
    """Re-pack the synthetic MVTec data in the VisA layout with split_csv/1cls.csv."""
    rows = []
    for sample in MVTecDataset(mvtec_root).samples + MVTecDataset(mvtec_root, split="train").samples:
        kind = "Normal" if sample.label == 0 else "Anomaly"
        split = sample.image_path.parent.parent.name
        name = f"{split}_{sample.defect}_{sample.image_path.name}"  # decoded by _original()
        image_rel = Path(sample.category) / "Data" / "Images" / kind / name
        (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.image_path, root / image_rel)
        mask_rel = ""
        if sample.mask_path is not None:
            mask_rel = Path(sample.category) / "Data" / "Masks" / kind / name
            (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample.mask_path, root / mask_rel)
        label = "normal" if sample.label == 0 else "anomaly"
        rows.append([sample.category, split, label, str(image_rel), str(mask_rel)])
    (root / "split_csv").mkdir(parents=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows_override(rows) if rows_override else rows)
    return root


def test_visa_layout(mvtec_root, tmp_path):
    root = _write_visa(mvtec_root, tmp_path / "visa")
    data = open_dataset(root)
    assert isinstance(data, VisADataset)
    reference = MVTecDataset(mvtec_root)
    assert len(data) == len(reference) and set(data.categories) == set(CATS)
    assert data.labels.sum() == reference.labels.sum()
    assert {s.defect for s in data.samples} == {"good", "anomaly"}
    for image, mask, sample in data:
        split, rest = sample.image_path.name.split("_", 1)
        defect, file_name = rest.rsplit("_", 1)
        original = mvtec_root / sample.category / split / defect / file_name
        np.testing.assert_array_equal(image, load_image(original))
        if defect == "good":
            assert sample.label == 0 and not mask.any()
        else:
            expected = iio.imread(mvtec_root / sample.category / "ground_truth" / defect / f"{original.stem}_mask.png")
            assert sample.label == 1 and mask.any()
            np.testing.assert_array_equal(mask, expected > 0)
    assert len(VisADataset(root, categories="fabric", split="train")) == N_TRAIN
    with pytest.raises(ValueError, match="'wood'.*available categories"):
        VisADataset(root, categories="wood")


def test_visa_errors(mvtec_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split_csv.1cls\.csv"):
        VisADataset(tmp_path)
    no_mask = _write_visa(mvtec_root, tmp_path / "a", lambda rows: [r[:4] + [""] for r in rows])
    with pytest.raises(ValueError, match=r"Anomalous image .*Anomaly.* has no mask .*line \d+"):
        VisADataset(no_mask)
    bad_label = _write_visa(mvtec_root, tmp_path / "b", lambda rows: [r[:2] + ["broken"] + r[3:] for r in rows])
    with pytest.raises(ValueError, match="'broken'"):
        VisADataset(bad_label)
    gone = _write_visa(mvtec_root, tmp_path / "c")
    removed = next((gone / "pcb" / "Data" / "Masks" / "Anomaly").iterdir())
    removed.unlink()
    with pytest.raises(FileNotFoundError, match=f"Mask missing .*{removed.name}"):
        VisADataset(gone)
    header = tmp_path / "d"
    (header / "split_csv").mkdir(parents=True)
    (header / "split_csv" / "1cls.csv").write_text("object,split,image\n")
    with pytest.raises(ValueError, match="label, mask"):
        VisADataset(header)


def test_folder_layout_accepts_both_mask_names(tmp_path):
    root = tmp_path / "scans"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    expected = {}
    for index, (name, mask_name) in enumerate([("a", "a_mask.png"), ("b", "b.png"), ("c", None)]):
        image, mask = synthetic_image("wood", "stain" if mask_name else None, SIZE, seed=index)
        iio.imwrite(root / "images" / f"{name}.png", image)
        if mask_name:
            iio.imwrite(root / "masks" / mask_name, mask.astype(np.uint8) * 255)
        expected[name] = (image, mask)
    tifffile.imwrite(root / "images" / "d.tif", expected["a"][0])
    iio.imwrite(root / "masks" / "d_mask.png", expected["a"][1].astype(np.uint8) * 255)
    expected["d"] = expected["a"]

    data = open_dataset(root)
    assert isinstance(data, FolderDataset) and data.categories == ("scans",)
    assert [s.image_path.stem for s in data.samples] == ["a", "b", "c", "d"]
    assert list(data.labels) == [1, 1, 0, 1]
    for image, mask, sample in data:
        np.testing.assert_array_equal(image, expected[sample.image_path.stem][0])
        np.testing.assert_array_equal(mask, expected[sample.image_path.stem][1])
    assert FolderDataset(root, category="wood").categories == ("wood",)
    assert open_dataset(root, categories="wood").categories == ("wood",)

    shutil.rmtree(root / "masks")
    with pytest.raises(ValueError, match=r"'scans' has no masks at all.*masks"):
        FolderDataset(root)
    assert FolderDataset(root, require_masks=False).labels.sum() == 0


def test_open_dataset_detection_and_errors(mvtec_root, tmp_path):
    assert isinstance(open_dataset(mvtec_root), MVTecDataset)
    assert open_dataset(mvtec_root, layout="mvtec", categories="metal").categories == ("metal",)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        open_dataset(tmp_path / "does-not-exist")
    (tmp_path / "odd" / "stuff").mkdir(parents=True)
    (tmp_path / "odd" / "readme.md").write_text("hi")
    with pytest.raises(ValueError, match=r"Cannot recognise .*odd.*readme\.md, stuff/"):
        open_dataset(tmp_path / "odd")
    with pytest.raises(ValueError, match="layout"):
        open_dataset(mvtec_root, layout="coco")


# ---------------------------------------------------------------- image and mask loading


def test_load_image_gray_rgba_and_16_bit(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    iio.imwrite(tmp_path / "gray.png", gray)
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), np.stack([gray] * 3, axis=-1))

    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgba[..., :3])

    gray_alpha = np.stack([gray, np.full_like(gray, 7)], axis=-1)
    tifffile.imwrite(tmp_path / "la.tif", gray_alpha)
    np.testing.assert_array_equal(load_image(tmp_path / "la.tif"), np.stack([gray] * 3, axis=-1))

    # 1000 pixels 1000..1999 (+ one hot pixel): percentiles 0.5/99.5 clip the extremes.
    values = np.arange(1000, 2000, dtype=np.uint16)
    values[0] = 60000
    iio.imwrite(tmp_path / "deep.png", values.reshape(25, 40))
    out = load_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (25, 40, 3)
    lo, hi = np.percentile(values.astype(float), [0.5, 99.5])
    assert 1004 < lo < 1007 and 1994 < hi < 1996
    flat = out[..., 0].ravel()
    assert flat[0] == 255  # the hot pixel saturates
    assert flat[1] == 0 and flat[5] == 0 and flat[-1] == 255
    assert flat[500] == round((1500 - lo) * 255 / (hi - lo))
    assert np.all(np.diff(flat[1:].astype(int)) >= 0)

    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0] = 4000
    rgb16[..., 2] = np.arange(64).reshape(8, 8) * 1000
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    out = load_image(tmp_path / "rgb16.tif")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, 2] == 0 and out[-1, -1, 2] == 255 and out[0, 0, 1] == 0


def test_load_mask_for_normal_and_multichannel(tmp_path):
    normal = Sample(tmp_path / "x.png", None, "c", "good", 0)
    assert load_mask(normal, (5, 7, 3)).shape == (5, 7) and not load_mask(normal, (5, 7)).any()
    mask = np.zeros((6, 6, 3), np.uint8)
    mask[1, 2, 1] = 1  # any non-zero value in any channel counts
    iio.imwrite(tmp_path / "m.png", mask)
    iio.imwrite(tmp_path / "i.png", np.zeros((6, 6, 3), np.uint8))
    loaded = load_mask(Sample(tmp_path / "i.png", tmp_path / "m.png", "c", "d", 1))
    assert loaded.dtype == bool and loaded.sum() == 1 and loaded[1, 2]
