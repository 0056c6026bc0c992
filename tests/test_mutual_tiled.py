"""Folder mutual scoring of large images, tile position by tile position (engine/folder_tiled.py, issues 20 and
24): thin scratches that squashing loses are found by comparing each tile with the same tile of the other images.
Folders of 8 metal images, 2 good and 6 with a 2-px-wide scratch (≤ 0.03 % of the image), no references."""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.clip.tiling import tile_grid
from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.errors import InvalidInputError
from napari_clipsam.metrics.pixel import pixel_auroc
from test_tiling import _engine, _scratch


def _folder(n: int):
    ims, masks = [], []
    for i in range(8):
        im = synthetic_image("metal", None, n, 200 + i)[0]
        m = np.zeros(im.shape[:2], bool)
        if i >= 2:
            im, m = _scratch(im, np.random.default_rng(10 + i), max(14, n // 28))
        ims.append(im)
        masks.append(m)
    assert max(m.mean() for m in masks) <= 0.0003
    return ims, np.stack(masks)


def _figures(results, masks) -> dict:
    return {"auroc": pixel_auroc(np.stack([r.rough_map for r in results]), masks),
            "hits": sum(bool((r.mask & m).any()) for r, m in zip(results[2:], masks[2:])),
            "good_objects": [r.num_instances for r in results[:2]],
            "largest": max(int(r.mask.sum()) for r in results)}


def test_tiles_by_position_find_what_squashing_loses():
    """Default-run form: 56-px tiny CLIP, 400² images, 112-px tiles (25 a image). Measured: pixel AUROC 0.988
    tiled, 0.513 squashed (at this scale a tile holds 4×4 CLIP patches, too few for objects: see the slow test)."""
    engine = _engine(56)
    ims, masks = _folder(400)
    tiled = engine.segment_folder(ims, "metal plate", settings={"tiling": 112})
    n_tiles = len(tile_grid(ims[0].shape, 112))
    assert engine.cache_info().clip_features.misses == 8 * n_tiles  # one CLIP pass a tile of each image
    folder = tiled[0].provenance["folder"]
    assert folder["tiles"] == {"side": 112, "per_image": n_tiles} and folder["size"] == 8
    assert "112-px tiles by position" in tiled[0].provenance["rough_map"]
    got = _figures(tiled, masks)
    print("400², tiled", got)
    assert got["auroc"] >= 0.95  # squashed (tiling "off"): 0.513, measured; compared in the slow test
    misses = engine.cache_info().clip_features.misses
    again = engine.segment_folder(ims, "metal plate", settings={"tiling": 112})
    assert engine.cache_info().clip_features.misses == misses  # the tiles' features came from the cache
    for a, b in zip(again, tiled):
        np.testing.assert_array_equal(a.rough_map, b.rough_map)
        assert a.image_score == b.image_score


def test_images_of_mixed_sizes_are_squashed_under_auto_and_refused_with_a_tile_side(caplog):
    engine = _engine(56, embed_without_prompts=False, prompt_threshold=1.0)  # no SAM needed here
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 255, (1024 + 8 * (i % 2), 1024, 3), dtype=np.uint8) for i in range(5)]
    with caplog.at_level("INFO"):
        results = engine.segment_folder(ims, "metal plate")  # tiling "auto" would tile each of them
    assert "tiles" not in results[0].provenance["folder"] and "mixed sizes" in caplog.text
    with pytest.raises(InvalidInputError, match="one size"):
        engine.segment_folder(ims, "metal plate", settings={"tiling": 448})


@pytest.mark.slow
def test_tiled_folder_gives_objects_of_the_scratches_size():
    """112-px tiny CLIP, 640² images, 224-px tiles (16 a image; 8×8 patches each). Measured: pixel AUROC 0.998
    tiled vs 0.425 squashed; objects on 4 of 6 scratches (squashed 0), none on the good images (squashed: 2 on
    one), the largest object 483 px (squashed 37,427)."""
    engine = _engine(112)
    ims, masks = _folder(640)
    got = _figures(engine.segment_folder(ims, "metal plate", settings={"tiling": 224}), masks)
    squashed = engine.segment_folder(ims, "metal plate", settings={"tiling": "off"})
    assert "tiles" not in squashed[0].provenance["folder"]
    off = _figures(squashed, masks)
    print("640², tiled", got, "squashed", off)
    assert got["auroc"] >= 0.95 > 0.7 > off["auroc"]
    assert got["hits"] >= 4 > off["hits"] and got["good_objects"] == [0, 0]
    assert got["largest"] <= 0.002 * 640 * 640 < off["largest"]
