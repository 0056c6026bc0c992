"""One key rule for every on-disk cache (``io.cache_files.cache_key``): each key changes with its cache's format
version and with every field that decides the content, and an entry written under an older version is a miss that
is computed and written again, never read. Plus the engine's hit/miss counts (``ClipSAM.cache_info``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_clipsam.io.cache_files import CacheInfo, cache_key
from napari_clipsam.testing import make_tiny_clip, tiny_engine

RGB = (np.random.default_rng(5).random((48, 64, 3)) * 255).astype(np.uint8)


def _all_differ(keys: list[str]) -> None:
    assert len(set(keys)) == len(keys), keys


# ------------------------------------------------------------------------------------------------ the helper
def test_cache_key_depends_on_the_version_and_every_field_only():
    base = {"model": "m", "weights": "sha256:ab", "size": 336, "layers": [6, 12], "on": True, "extra": None}
    key = cache_key(base, 1)
    assert len(key) == 32 and int(key, 16) >= 0
    assert cache_key(dict(reversed(list(base.items()))), 1) == key  # field order does not matter
    assert cache_key({**base, "layers": (6, 12)}, 1) == key  # tuples hash as lists
    changed = [cache_key(base, 2)] + [cache_key({**base, k: v}, 1) for k, v in
                                      [("model", "n"), ("weights", "sha256:ac"), ("size", 337), ("layers", [12, 6]),
                                       ("on", False), ("extra", 0), ("new", 1)]]
    _all_differ([key] + changed)
    assert cache_key({"size": 1}, 1) != cache_key({"size": "1"}, 1) != cache_key({"size": True}, 1)
    assert len(cache_key(base, 1, length=40)) == 40


@pytest.mark.parametrize("version", [0, -1, 1.0, "1", True, None])
def test_cache_key_refuses_a_version_that_is_not_a_positive_integer(version):
    with pytest.raises(ValueError, match="positive integer"):
        cache_key({"a": 1}, version)


@pytest.mark.parametrize("value", [object(), {1: "a"}, float("nan"), np.zeros(3), b"bytes"])
def test_cache_key_refuses_fields_that_are_not_plain_data(value):
    with pytest.raises(TypeError, match="cache key field"):
        cache_key({"a": value}, 1)


# ------------------------------------------------------------------------------------------- each cache's key
def test_sam_embedding_key():
    from napari_clipsam.mmr import embedding_store as es

    key = es.entry_key("img", "vit_b/sha256:1/cpu/float32/torch")
    _all_differ([key, es.entry_key("img", "vit_b/sha256:1/cpu/float32/torch", es.STORE_FORMAT + 1),
                 es.entry_key("img2", "vit_b/sha256:1/cpu/float32/torch"),
                 es.entry_key("img", "vit_b/sha256:2/cpu/float32/torch"),
                 es.entry_key("img", "vit_b/sha256:1/cpu/bfloat16/openvino-bfloat16")])


def test_text_embedding_key():
    from napari_clipsam.clip.text_encoder import TEXT_CACHE_FORMAT, TextEmbeddingCache

    clip, tok = make_tiny_clip()
    cpu = torch.device("cpu")

    def cache(model="m", weights="w", arch="a"):
        return TextEmbeddingCache(clip, tok, model, weights, None, cpu, architecture=arch)

    key = cache().key("part", "p")
    _all_differ([key, cache().key("part", "p", TEXT_CACHE_FORMAT + 1), cache("m2").key("part", "p"),
                 cache(weights="w2").key("part", "p"), cache(arch="a2").key("part", "p"),
                 cache().key("bolt", "p"), cache().key("part", "p2")])


def test_reference_bank_key(tmp_path):
    from napari_clipsam.clip.fewshot import FORMAT_VERSION
    from napari_clipsam.clip.references import bank_cache_path
    from napari_clipsam.config import ClipSAMConfig

    ident = {"clip_model": "ViT-B-16", "clip_weights": "sha256:1", "clip_architecture": "a",
             "encoders": {"backend": "torch", "clip_precision": "float32"}}
    cfg = ClipSAMConfig()
    path = bank_cache_path(tmp_path, ident, cfg, ["r1", "r2"])
    assert path.parent == tmp_path and path.suffix == ".npz"
    assert bank_cache_path(tmp_path, ident, cfg, ["r2", "r1"]) == path  # the set of references, not their order
    variants = [bank_cache_path(tmp_path, ident, cfg, ["r1", "r2"], FORMAT_VERSION + 1),
                bank_cache_path(tmp_path, ident, cfg, ["r1"])]
    for field, value in [("clip_model", "ViT-L-14"), ("clip_weights", "sha256:2"), ("clip_architecture", "b"),
                         ("encoders", {"backend": "openvino", "clip_precision": "float32"}),
                         ("encoders", {"backend": "torch", "clip_precision": "bfloat16"})]:
        variants.append(bank_cache_path(tmp_path, {**ident, field: value}, cfg, ["r1", "r2"]))
    for change in [{"image_size": 224}, {"feature_layers": (6, 12, 18)}, {"fewshot_bank_size": 512},
                   {"fewshot_neighbourhood": 3}, {"fewshot_augment": False}]:
        variants.append(bank_cache_path(tmp_path, ident, cfg.replace(**change), ["r1", "r2"]))
    _all_differ([str(p) for p in [path] + variants])


def test_converted_model_key():
    from napari_clipsam.engine.backends.ir_cache import FORMAT, entry_name

    fields = {"encoder": "clip-vision", "model": {"clip_weights": "sha256:1", "clip_architecture": "a"},
              "input": [1, 3, 336, 336], "ir_precision": "f32", "openvino": "2025.1", "torch": "2.5.1"}
    key = entry_name(fields)
    variants = [entry_name(fields, FORMAT + 1)] + [entry_name({**fields, k: v}) for k, v in [
        ("encoder", "sam-image"), ("model", {"clip_weights": "sha256:2", "clip_architecture": "a"}),
        ("model", {"clip_weights": "sha256:1", "clip_architecture": "b"}), ("input", [1, 3, 224, 224]),
        ("ir_precision", "f16"), ("openvino", "2025.2"), ("torch", "2.6.0")]]
    _all_differ([key] + variants)


def test_evaluation_map_key(tmp_path):
    from napari_clipsam.training.map_cache import MAP_CACHE_FORMAT, MapCache

    cache = MapCache(tmp_path)
    path = cache._path(RGB, "part")
    _all_differ([str(p) for p in (path, cache._path(RGB, "part", MAP_CACHE_FORMAT + 1), cache._path(RGB, "bolt"),
                                  cache._path(RGB[::-1].copy(), "part"))])
    engine = tiny_engine()
    folders = [MapCache.for_run(engine, resolution=r, rough_only=o).folder for r, o in [(64, False), (96, False),
                                                                                        (64, True)]]
    with engine.using(prompt_threshold=0.9):
        folders.append(MapCache.for_run(engine, resolution=64, rough_only=False).folder)
    _all_differ([str(f) for f in folders])


# ------------------------------------------------------------------------ an older version's entry is a miss
def test_an_older_sam_embedding_entry_is_a_miss_and_rewritten(tmp_path, monkeypatch):
    from napari_clipsam.mmr import embedding_store as es

    feats = np.random.default_rng(0).random((1, 8, 4, 4)).astype(np.float32)
    es.EmbeddingStore(tmp_path, 1 << 20).put("img", "sam", feats, (8, 8), (8, 8))
    monkeypatch.setattr(es, "STORE_FORMAT", es.STORE_FORMAT + 1)  # a newer package
    store = es.EmbeddingStore(tmp_path, 1 << 20)
    assert store.get("img", "sam") is None and store.cache_info()[:2] == (0, 1)
    store.put("img", "sam", feats + 1, (8, 8), (8, 8))
    np.testing.assert_array_equal(store.get("img", "sam")[0], feats + 1)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and store.cache_info() == CacheInfo(1, 1, 2)


def test_an_older_text_entry_is_a_miss_and_rewritten(tmp_path, monkeypatch):
    from napari_clipsam.clip import text_encoder as te
    from napari_clipsam.config import ClipSAMConfig

    clip, tok = make_tiny_clip()
    cfg, cpu = ClipSAMConfig(), torch.device("cpu")
    T = te.TextEmbeddingCache(clip, tok, "m", "w", tmp_path, cpu).get("part", cfg)
    (old,) = tmp_path.glob("*.npy")
    np.save(old, np.zeros_like(T.numpy()))  # what an older format held: must never be read
    monkeypatch.setattr(te, "TEXT_CACHE_FORMAT", te.TEXT_CACHE_FORMAT + 1)
    newer = te.TextEmbeddingCache(clip, tok, "m", "w", tmp_path, cpu)
    np.testing.assert_allclose(newer.get("part", cfg).numpy(), T.numpy(), atol=1e-6)
    assert newer.cache_info().misses == 1 and len(list(tmp_path.glob("*.npy"))) == 2
    again = te.TextEmbeddingCache(clip, tok, "m", "w", tmp_path, cpu)
    again.get("part", cfg)
    assert again.cache_info()[:2] == (1, 0)  # the rewritten entry is read


def test_an_older_reference_bank_is_a_miss_and_rebuilt(monkeypatch):
    from napari_clipsam.clip import references
    from napari_clipsam.weights.registry import cache_dir

    refs = [(np.random.default_rng(i).random((40, 40, 3)) * 255).astype(np.uint8) for i in range(2)]
    tiny_engine(fewshot_augment=False).set_normal_references(refs)
    monkeypatch.setattr(references, "FORMAT_VERSION", references.FORMAT_VERSION + 1)
    newer = tiny_engine(fewshot_augment=False)
    newer.set_normal_references(refs)
    assert newer.cache_info().reference_banks[:2] == (0, 1)
    assert len(list((cache_dir() / "references").glob("*.npz"))) == 2
    again = tiny_engine(fewshot_augment=False)
    again.set_normal_references(refs)
    assert again.cache_info().reference_banks == CacheInfo(1, 0, 1)


def test_an_older_converted_model_is_a_miss_and_converted_again(tmp_path, monkeypatch):
    from napari_clipsam.engine.backends import ir_cache
    from napari_clipsam.engine.backends.openvino_runtime import import_openvino, openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed")
    ov = import_openvino()
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1)).eval()
    converted = []

    def convert():
        converted.append(1)
        return ov.convert_model(module, example_input=torch.zeros(1, 3, 8, 8))

    fields = {"encoder": "test", "input": [1, 3, 8, 8]}
    cache = ir_cache.IRCache(tmp_path)
    cache.get_or_convert(fields, convert, "test")
    cache.get_or_convert(fields, convert, "test")
    assert len(converted) == 1
    monkeypatch.setattr(ir_cache, "FORMAT", ir_cache.FORMAT + 1)
    cache.get_or_convert(fields, convert, "test")
    assert len(converted) == 2 and len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    cache.get_or_convert(fields, convert, "test")
    assert len(converted) == 2


def test_an_older_evaluation_map_is_a_miss(tmp_path, monkeypatch):
    from napari_clipsam.training import map_cache

    maps = {"rough": np.ones((4, 4), np.float32)}
    map_cache.MapCache(tmp_path).put(RGB, "part", maps)
    reader = map_cache.MapCache(tmp_path)
    assert reader.get(RGB, "part") is not None and reader.cache_info() == CacheInfo(1, 0, 1)
    monkeypatch.setattr(map_cache, "MAP_CACHE_FORMAT", map_cache.MAP_CACHE_FORMAT + 1)
    newer = map_cache.MapCache(tmp_path)
    assert newer.get(RGB, "part") is None and newer.cache_info().misses == 1


# ------------------------------------------------------------------------------------ ClipSAM.cache_info()
def test_cache_info_counts_a_miss_per_model_run_and_a_hit_per_answer():
    engine = tiny_engine()
    info = engine.cache_info()
    assert info.sam_embeddings == info.clip_features == info.text_embeddings == CacheInfo(0, 0, 0)
    first = engine.segment(RGB, "part", settings={"prompt_threshold": 0.3})
    info = engine.cache_info()
    assert info.sam_embeddings == CacheInfo(0, 1, 1) and info.clip_features == CacheInfo(0, 1, 1)
    assert info.text_embeddings == CacheInfo(0, 1, 1) and info.reference_banks == CacheInfo(0, 0, 0)
    decoded = info.sam_decoder
    assert decoded.hits == 0 and decoded.misses == decoded.currsize > 0  # one decode per prompt and level
    engine.segment(RGB, "part", settings={"prompt_threshold": 0.3})
    info = engine.cache_info()
    assert info.sam_embeddings == CacheInfo(1, 1, 1) and info.clip_features == CacheInfo(1, 1, 1)
    assert info.text_embeddings == CacheInfo(1, 1, 1)
    assert info.sam_decoder == CacheInfo(decoded.misses, decoded.misses, decoded.currsize)  # nothing re-decoded
    engine.refine(first, points=[[10, 10]])
    info = engine.cache_info()
    assert info.sam_embeddings == CacheInfo(2, 1, 1) and info.sam_decoder.misses > decoded.misses
    engine.segment_many([RGB, RGB[::-1].copy(), RGB], "part", batch_size=3)  # a repeat in a batch counts once
    info = engine.cache_info()
    assert info.clip_features == CacheInfo(2, 2, 2) and info.sam_embeddings.misses == 2
    assert info.entries == (info.sam_embeddings.currsize + info.clip_features.currsize + info.sam_decoder.currsize
                            + info.merged_components.currsize) and 0 < info.bytes <= info.max_bytes
    assert info.merged_components.currsize > 0 and info.merged_components.hits > 0  # the repeat's components
    engine.clear_caches()
    assert engine.cache_info().sam_embeddings == CacheInfo(info.sam_embeddings.hits, 2, 0)
