"""One reader and one normalisation: training/evaluation (the dataset readers) and the engine (widget, API, CLI,
folder review) see the same pixels for 16-bit, float-with-NaN, channel-first and gray + alpha images; and the
one-file atomic write."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_clipsam.data import FolderDataset
from napari_clipsam.errors import InvalidInputError
from napari_clipsam.io.atomic import atomic_file
from napari_clipsam.io.images import image_key, normalise_image, read_image

H, W = 24, 32
RNG = np.random.default_rng(7)


def _arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (what the file holds as its writer sees it, the same image channels-last as an array in memory)."""
    deep = (RNG.integers(1000, 5000, (H, W))).astype(np.uint16)
    deep[0, 0] = 65535  # a hot pixel: the percentiles clip it
    nan = RNG.random((H, W, 3)).astype(np.float32) * 300 - 100
    nan[5:9, 6:12] = np.nan
    nan[0, 1] = np.inf
    planar = RNG.integers(0, 4096, (3, H, W)).astype(np.uint16)  # 12-bit RGB stored channel-first (planar)
    gray_alpha = np.stack([RNG.integers(0, 60000, (H, W)), np.full((H, W), 65535)], axis=-1).astype(np.uint16)
    return {"deep16.png": (deep, deep), "nan.tif": (nan, nan), "planar.tif": (planar, np.moveaxis(planar, 0, -1)),
            "gray_alpha.tif": (gray_alpha, gray_alpha)}


def _write(folder, name: str, data: np.ndarray) -> None:
    path = folder / name
    if name == "planar.tif":
        tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    elif name.endswith(".tif"):
        tifffile.imwrite(path, data)
    else:
        iio.imwrite(path, data)


def test_training_evaluation_and_engine_see_identical_pixels(tmp_path, shared_engine):
    arrays = _arrays()
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[10:14, 10:14] = 255
    iio.imwrite(tmp_path / "data" / "masks" / "deep16_mask.png", mask)
    for name, (stored, _) in arrays.items():
        _write(images, name, stored)
    dataset = FolderDataset(tmp_path / "data")  # what training and evaluation read
    by_name = {s.image_path.name: i for i, s in enumerate(dataset.samples)}
    for name, (_, in_memory) in arrays.items():
        seen_by_training = dataset[by_name[name]][0]
        assert seen_by_training.shape == (H, W, 3) and seen_by_training.dtype == np.uint8, name
        from_file = read_image(images / name)  # CLI segment, folder review, Ray workers, reference folders
        np.testing.assert_array_equal(from_file, in_memory, err_msg=name)
        rgb, valid = normalise_image(in_memory)  # the engine's input step, as the widget and the API call it
        np.testing.assert_array_equal(rgb, seen_by_training, err_msg=name)
        for image in (in_memory, from_file):
            result = shared_engine.segment(image, "plate")
            assert result.image_key == image_key(seen_by_training), name  # the engine's pixels: the same bytes
            np.testing.assert_array_equal(result.valid, valid)
    # the rules themselves, as stated in napari_clipsam.io.images
    deep = arrays["deep16.png"][0].astype(float)
    lo, hi = np.percentile(deep, (0.5, 99.5))
    rgb = dataset[by_name["deep16.png"]][0]
    assert rgb[0, 0, 0] == 255 and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[3, 4, 0] == round((min(max(deep[3, 4], lo), hi) - lo) / (hi - lo) * 255)
    nan_rgb, nan_valid = normalise_image(arrays["nan.tif"][1])
    assert (nan_rgb[5:9, 6:12] == 0).all() and not nan_valid[5:9, 6:12].any() and nan_valid.sum() == H * W - 24
    assert (nan_rgb[0, 1] == 255).all()  # +inf is white
    alpha_dropped = normalise_image(arrays["gray_alpha.tif"][1][..., :1])[0]
    np.testing.assert_array_equal(dataset[by_name["gray_alpha.tif"]][0], alpha_dropped)


def test_channel_first_arrays_are_refused_but_channel_first_files_are_read(tmp_path):
    planar = RNG.integers(0, 255, (3, H, W)).astype(np.uint8)
    with pytest.raises(InvalidInputError, match="channel-first"):  # in memory: also a 3-frame stack, as in napari
        normalise_image(planar)
    stack = RNG.integers(0, 255, (4, H, W)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert read_image(tmp_path / "planar.tif").shape == (H, W, 3)  # the file says its first axis is colour
    assert read_image(tmp_path / "stack.tif").shape == (4, H, W)  # ... and here that it is frames
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif", frame=2), stack[2])
    with pytest.raises(InvalidInputError, match="frame 4 does not exist"):
        read_image(tmp_path / "stack.tif", frame=4)
    with pytest.raises(InvalidInputError, match="one frame"):
        read_image(tmp_path / "planar.tif", frame=0)


def test_empty_and_undecodable_image_files_say_what_is_wrong(tmp_path):
    """A 0-byte file is called empty, and bytes no decoder knows are called that: not imageio's advice to install
    plugins (pyav, opencv) for what is a broken file."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(InvalidInputError, match=r"empty\.jpg is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(InvalidInputError) as info:
        read_image(tmp_path / "junk.jpg")
    assert "junk.jpg" in str(info.value) and "pip install" not in str(info.value) and "\n" not in str(info.value)


def test_atomic_file_never_leaves_half_a_file(tmp_path):
    target = tmp_path / "sub" / "settings.json"
    with atomic_file(target) as f:  # the folder is created
        f.write(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b"new, half written")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["settings.json"]
    # two writers at once (e.g. two napari windows saving settings) never share a temporary file
    with atomic_file(target) as first, atomic_file(target) as second:
        first.write(b"first")
        second.write(b"second")
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["settings.json"]
