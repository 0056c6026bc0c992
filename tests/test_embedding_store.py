"""SAM embeddings on disk: reopening an image in a new engine runs no encoder and gives the same masks; the store
is bounded, keyed by image and SAM, and ignores damaged entries."""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.mmr.embedding_store import EmbeddingStore
from napari_clipsam.testing import tiny_config


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


def engine_from(folder, seed=0, **overrides):
    from napari_clipsam.engine.clipsam import ClipSAM

    return ClipSAM.from_config(tiny_config(folder / f"seed{seed}", seed=seed, prompt_threshold=0.5, **overrides))


def test_a_new_engine_reuses_the_embedding_from_disk(weights):
    image = synthetic_image("part", "crack", size=96, seed=1)[0]
    first = engine_from(weights)
    a = first.segment(image, "machined part")
    assert first.cache_info().sam_embeddings.misses == 1
    second = engine_from(weights)  # a new session: nothing in memory
    b = second.segment(image, "machined part")
    assert second.cache_info().sam_embeddings.misses == 0, "the encoder ran although the embedding was on disk"
    assert np.array_equal(a.instances, b.instances) and np.array_equal(a.final_map, b.final_map)
    pts = np.array([[40.0, 40.0]], np.float32)
    assert np.array_equal(first.refine(a, pts, [1]).final_map, second.refine(b, pts, [1]).final_map)
    other = engine_from(weights, seed=1)  # another SAM: never its embeddings
    other.segment(image, "machined part")
    assert other.cache_info().sam_embeddings.misses == 1
    off = engine_from(weights, embedding_cache_bytes=0)
    off.segment(synthetic_image("part", "crack", size=96, seed=2)[0], "machined part")
    assert off.cache_info().sam_embeddings.misses == 1


def test_store_is_bounded_and_ignores_damaged_entries(tmp_path):
    store = EmbeddingStore(tmp_path, max_bytes=3 * 4096 + 3 * 200)
    feats = np.random.default_rng(0).random((1, 8, 8, 16)).astype(np.float32)  # 4 KiB each
    for i in range(6):
        store.put(f"img{i}", "sam-a", feats + i, (8, 8), (8, 8))
        assert store.total_bytes() <= store.max_bytes
    assert store.get("img0", "sam-a") is None and store.get("img5", "sam-a") is not None
    got = store.get("img5", "sam-a")
    assert np.array_equal(got[0], feats + 5) and got[1:] == ((8, 8), (8, 8))
    assert store.get("img5", "sam-b") is None, "an entry was used for another SAM"
    for p in tmp_path.glob("*.npy"):
        p.write_bytes(b"not an array")
    assert store.get("img5", "sam-a") is None  # damaged: ignored (and rewritten on the next put)
    store.put("img5", "sam-a", feats, (8, 8), (8, 8))
    assert np.array_equal(store.get("img5", "sam-a")[0], feats)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_an_embedding_made_by_a_refine_is_stored_on_disk_too(tmp_path):
    """One embedding path: a refine that must embed again (its image left the cache and was never stored) writes the
    on-disk store as segment does, so the next session runs no encoder for it."""
    image = synthetic_image("part", "crack", size=96, seed=3)[0]
    first = engine_from(tmp_path, embedding_cache_bytes=0)  # segment stores nothing
    result = first.segment(image, "machined part")
    first.clear_caches("embedding")
    stored = engine_from(tmp_path)  # same SAM weights, store on: refines after the eviction
    pts = np.array([[40.0, 40.0]], np.float32)
    refined = stored.refine(result, pts, [1], image=image)
    assert stored.cache_info().sam_embeddings.misses == 1
    again = engine_from(tmp_path)  # a new session
    assert np.array_equal(again.refine(result, pts, [1], image=image).final_map, refined.final_map)
    assert again.cache_info().sam_embeddings.misses == 0, "the refine's embedding never reached the disk store"
