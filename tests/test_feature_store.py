"""The on-disk CLIP feature store of folder mutual scoring (napari_clipsam/engine/feature_store.py): a second run in
a new engine reads every image's features from disk (CLIP's vision tower never runs: ``cache_info().clip_features``
counts a miss exactly per image through the tower) and gives the same maps; another model or setting never hits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_clipsam.data.synthetic import synthetic_image

N = 5


@pytest.fixture(scope="module")
def images():
    return [synthetic_image("metal", None if i < 3 else "stain", 64, 70 + i)[0] for i in range(N)]


def _engine(seed=0, quick_gelu=True, **overrides):
    import open_clip

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import TINY_CLIP_CFG, make_tiny_clip, make_tiny_sam

    clip, tok = make_tiny_clip(seed)
    if not quick_gelu:  # the same weights in another architecture (GELU instead of QuickGELU)
        other = open_clip.CLIP(**{**json.loads(json.dumps(TINY_CLIP_CFG)), "quick_gelu": False}).eval()
        other.load_state_dict(clip.state_dict())
        clip = other
    cfg = dict(image_size=56, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch",
               embed_without_prompts=False, mutual_radii=(1,), mutual_precision="float32")  # quick
    cfg.update(overrides)
    return ClipSAM.from_models(clip, tok, make_tiny_sam(0), None, ClipSAMConfig(**cfg))


def test_a_new_engine_reads_the_features_from_disk_and_gives_the_same_maps(images):
    first = _engine()
    want = first.segment_folder(images, "metal plate")
    info = first.cache_info()
    assert info.clip_features.misses == N and info.clip_feature_store.currsize == N

    second = _engine()  # the same models rebuilt: a new process, as far as the engine knows
    got = second.segment_folder(images, "metal plate")
    info = second.cache_info()
    assert info.clip_features.misses == 0  # CLIP's vision tower never ran
    assert info.clip_feature_store.hits == N and info.clip_feature_store.misses == 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.rough_map, b.rough_map)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.image_score == b.image_score

    second.clear_caches()  # in-memory features forgotten: the disk answers again, still no tower run
    second.segment_folder(images, "metal plate")
    assert second.cache_info().clip_features.misses == 0


def test_another_model_or_setting_does_not_hit(images):
    _engine().segment_folder(images, "metal plate")
    for change in ({"seed": 1}, {"quick_gelu": False}, {"feature_layers": (2, 4)}, {"dtype": "bfloat16"}):
        other = _engine(**change)
        other.segment_folder(images, "metal plate")
        info = other.cache_info()
        assert info.clip_features.misses == N and info.clip_feature_store.hits == 0, change


def test_a_damaged_entry_is_a_miss_and_is_rewritten(images, caplog):
    from napari_clipsam.weights.registry import cache_dir

    _engine().segment_folder(images, "metal plate")
    files = sorted((cache_dir() / "features").glob("*.npz"))
    assert len(files) == N
    files[0].write_bytes(b"not an npz")
    again = _engine()
    again.segment_folder(images, "metal plate")
    info = again.cache_info()
    assert info.clip_features.misses == 1 and info.clip_feature_store.hits == N - 1
    assert "unusable CLIP feature cache entry" in caplog.text
    third = _engine()
    third.segment_folder(images, "metal plate")
    assert third.cache_info().clip_features.misses == 0  # rewritten whole


def test_off_when_disabled_and_for_segment_and_within_its_bound(images):
    from napari_clipsam.io.cache_files import folder_bytes
    from napari_clipsam.weights.registry import cache_dir

    off = _engine(feature_cache_bytes=0)
    off.segment_folder(images, "metal plate")
    assert off.cache_info().clip_feature_store.currsize == 0
    assert not list((cache_dir() / "features").glob("*.npz"))
    _engine().segment_many(images, "metal plate")  # one image at a time: features stay in memory only
    assert not list((cache_dir() / "features").glob("*.npz"))

    one = _engine()
    one.segment_folder(images, "metal plate")
    size = max(p.stat().st_size for p in (cache_dir() / "features").glob("*.npz"))
    small = _engine(seed=2, feature_cache_bytes=int(2.5 * size))
    small.segment_folder(images, "metal plate")
    assert folder_bytes(cache_dir() / "features") <= int(2.5 * size)
