"""Issue 18 item 4: caches never serve the wrong thing (architecture, backend and precision in keys; validated,
versioned entries), a cache that cannot be written never stops a run, and killed writers' leftovers are swept."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from napari_clipsam.io.cache_files import architecture_fingerprint, sweep_stale
from napari_clipsam.mmr.embedding_store import EmbeddingStore


def _two_clips():
    """Two tiny open_clip CLIPs with the same state_dict: one QuickGELU, one GELU."""
    import open_clip

    from napari_clipsam.testing import TINY_CLIP_CFG, make_tiny_clip

    quick, tok = make_tiny_clip(seed=0)
    cfg = json.loads(json.dumps(TINY_CLIP_CFG))
    cfg["quick_gelu"] = False
    gelu = open_clip.CLIP(**cfg).eval()
    gelu.load_state_dict(quick.state_dict())
    return quick, gelu, tok


def test_same_weights_other_activation_get_other_keys_and_their_own_features(tmp_path):
    from napari_clipsam.clip.text_encoder import TextEmbeddingCache, weights_fingerprint
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.identity import complete_identity
    from napari_clipsam.testing import make_tiny_sam

    quick, gelu, tok = _two_clips()
    assert weights_fingerprint(quick) == weights_fingerprint(gelu)
    assert architecture_fingerprint(quick) != architecture_fingerprint(gelu)
    assert architecture_fingerprint(quick) == architecture_fingerprint(_two_clips()[0])  # stable
    sam = make_tiny_sam()
    iq, ig = complete_identity(None, quick, sam, None), complete_identity(None, gelu, sam, None)
    assert iq["clip_weights"] == ig["clip_weights"] and iq["clip_architecture"] != ig["clip_architecture"]

    cfg = ClipSAMConfig()
    cpu = torch.device("cpu")
    cq = TextEmbeddingCache(quick, tok, iq["clip_model"], iq["clip_weights"], tmp_path, cpu)
    Tq = cq.get("part", cfg)
    cg = TextEmbeddingCache(gelu, tok, ig["clip_model"], ig["clip_weights"], tmp_path, cpu)  # same disk cache
    assert cq.key("part", cfg.prompt_set_hash()) != cg.key("part", cfg.prompt_set_hash())
    Tg = cg.get("part", cfg)
    assert cg.cache_info().misses == 1, "the GELU model was served the QuickGELU model's text embeddings"
    fresh = TextEmbeddingCache(gelu, tok, "x", "y", None, cpu).compute("part", cfg)
    np.testing.assert_allclose(Tg.numpy(), fresh.numpy(), atol=1e-6)
    assert float((Tq - Tg).abs().max()) > 1e-4  # the two really differ


def test_converted_model_key_includes_the_architecture():
    from napari_clipsam.engine.backends import _arch_key

    quick, gelu, _ = _two_clips()
    assert _arch_key(None, quick.visual) != _arch_key(None, gelu.visual)
    assert _arch_key("given", quick.visual) == "given"


def test_reference_bank_key_includes_architecture_backend_and_precision(tmp_path):
    from napari_clipsam.clip.references import bank_cache_path
    from napari_clipsam.config import ClipSAMConfig

    cfg = ClipSAMConfig()
    base = {"clip_model": "CLIP", "clip_weights": "fingerprint:abc", "clip_architecture": "a1",
            "encoders": {"backend": "torch", "clip_precision": "float32"}}
    path = bank_cache_path(tmp_path, base, cfg, ["r"])
    for change in ({"clip_architecture": "a2"}, {"encoders": {"backend": "openvino", "clip_precision": "float32"}},
                   {"encoders": {"backend": "openvino", "clip_precision": "bfloat16"}}):
        assert bank_cache_path(tmp_path, {**base, **change}, cfg, ["r"]) != path, change
    assert bank_cache_path(tmp_path, dict(base), cfg, ["r"]) == path


# ------------------------------------------------------------------------- OpenVINO cache that cannot be written
def _need_openvino():
    from napari_clipsam.engine.backends.openvino_runtime import import_openvino, openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed")
    import_openvino()  # never a plain `import openvino`: that loads OpenVINO's telemetry


def _tiny_ov(cache):
    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoEncoder

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU())
    return module, OpenVinoEncoder(module, 8, {"encoder": "test", "model": "safety"}, "test", "float32", cache)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes read-only folders")
def test_openvino_read_only_cache_logs_once_and_runs(tmp_path, caplog):
    _need_openvino()
    from napari_clipsam.engine.backends.ir_cache import IRCache

    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        x = torch.randn(1, 3, 8, 8)
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                module, enc = _tiny_ov(IRCache(root))
                np.testing.assert_allclose(enc(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)
    finally:
        root.chmod(0o755)
    lines = [r.getMessage() for r in caplog.records if "cannot use the cache folder" in r.getMessage()]
    assert len(lines) == 1 and str(root) in lines[0] and "NAPARI_CLIPSAM_CACHE" in lines[0]


def test_openvino_cache_env_pointing_at_a_file_and_entry_path_a_file(tmp_path, monkeypatch, caplog):
    _need_openvino()
    from napari_clipsam.engine.backends.ir_cache import IRCache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NAPARI_CLIPSAM_CACHE", str(blocker))
    x = torch.randn(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING):
        module, enc = _tiny_ov(None)  # the default cache: <NAPARI_CLIPSAM_CACHE>/openvino
        np.testing.assert_allclose(enc(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)
    assert any(str(blocker) in r.getMessage() and "NAPARI_CLIPSAM_CACHE" in r.getMessage() for r in caplog.records)

    root = tmp_path / "ov"
    cache = IRCache(root)
    module, enc = _tiny_ov(cache)
    root.mkdir()
    from napari_clipsam.engine.backends.openvino_runtime import openvino_version

    fields = {**enc.key, "openvino": openvino_version(), "torch": torch.__version__.split("+")[0]}
    cache.entry(fields).write_text("a file where the entry folder goes")
    np.testing.assert_allclose(enc(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------- stale temporaries
KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from napari_clipsam.io.atomic import atomic_file
    root = Path(sys.argv[1])
    (root / "openvino" / f".ir-{os.getpid()}-abc123").mkdir(parents=True)
    (root / "openvino" / f".ir-{os.getpid()}-abc123" / "model.bin").write_bytes(b"x" * 50000)
    (root / "embeddings").mkdir()
    cm = atomic_file(root / "embeddings" / "e.npy")
    f = cm.__enter__()
    f.write(b"y" * 40000)
    f.flush()
    print("ready", flush=True)
    time.sleep(60)
""")


def test_killed_writers_leftovers_are_swept_and_counted(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(__file__)), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    emb = tmp_path / "embeddings"
    (tmp) = [p for p in emb.iterdir() if p.name.endswith(".tmp")]
    assert len(tmp) == 1
    # the store counts what is on disk, temporaries too
    store_bytes = EmbeddingStore.__new__(EmbeddingStore)
    store_bytes.folder = emb
    assert store_bytes.total_bytes() >= 40000
    # the OpenVINO scratch folder of a dead pid goes at once; an hour-old .tmp goes when the store opens
    assert [p.name for p in sweep_stale(tmp_path / "openvino")] == [f".ir-{proc.pid}-abc123"]
    assert sweep_stale(emb) == []  # young and no pid in its name: may be a live writer's
    old = time.time() - 7200
    os.utime(tmp[0], (old, old))
    store = EmbeddingStore(emb, max_bytes=10**6)
    assert not tmp[0].exists() and store.total_bytes() == 0


# ------------------------------------------------------------------------------------- SAM embedding entries
def _entry(store, tmp_path):
    feats = np.random.default_rng(0).random((1, 8, 4, 4)).astype(np.float32)
    store.put("img", "sam", feats, (8, 8), (8, 8))
    (data,) = tmp_path.glob("*.npy")
    return feats, data, data.with_suffix(".json")


@pytest.mark.parametrize("damage", ["other_shape", "no_input_size", "bad_input_size", "float64", "int_array",
                                    "nan", "inf", "old_format", "sidecar_list", "zero_channels"])
def test_bad_embedding_entries_are_a_logged_miss_and_rewritten(tmp_path, caplog, damage):
    store = EmbeddingStore(tmp_path, max_bytes=10**6)
    feats, data, meta = _entry(store, tmp_path)
    info = json.loads(meta.read_text())
    if damage == "other_shape":
        np.save(data, np.zeros((1, 8, 2, 2), np.float32))
    elif damage == "no_input_size":
        del info["input_size"]
    elif damage == "bad_input_size":
        info["input_size"] = ["8", 8]
    elif damage == "float64":
        np.save(data, feats.astype(np.float64))
    elif damage == "int_array":
        np.save(data, feats.astype(np.int32))
    elif damage == "nan":
        bad = feats.copy()
        bad[0, 0, 0, 0] = np.nan
        np.save(data, bad)
    elif damage == "inf":
        np.save(data, np.full_like(feats, np.inf))
    elif damage == "old_format":
        info.pop("format")
    elif damage == "sidecar_list":
        info = [info]
    elif damage == "zero_channels":
        np.save(data, np.zeros((1, 0, 4, 4), np.float32))
        info["shape"] = [1, 0, 4, 4]
    meta.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        assert store.get("img", "sam") is None
    assert any("unusable SAM embedding" in r.getMessage() for r in caplog.records)
    store.put("img", "sam", feats, (8, 8), (8, 8))  # the engine's next encode rewrites it
    got = store.get("img", "sam")
    assert np.array_equal(got[0], feats) and got[1:] == ((8, 8), (8, 8))


def test_entries_of_an_older_format_are_never_read(tmp_path):
    import hashlib

    store = EmbeddingStore(tmp_path, max_bytes=10**6)
    old = hashlib.sha256(b"sam\nimg").hexdigest()[:40]  # the name format 1 used
    np.save(tmp_path / f"{old}.npy", np.ones((1, 8, 4, 4), np.float32))
    (tmp_path / f"{old}.json").write_text(json.dumps({"model_id": "sam", "image_key": "img",
                                                      "input_size": [8, 8], "original_size": [8, 8]}))
    assert store.get("img", "sam") is None


def test_text_cache_key_is_versioned_and_bad_entries_are_recomputed(tmp_path):
    from napari_clipsam.clip.text_encoder import TEXT_CACHE_FORMAT, TextEmbeddingCache
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.testing import make_tiny_clip

    clip, tok = make_tiny_clip()
    cfg = ClipSAMConfig()
    cache = TextEmbeddingCache(clip, tok, "m", "w", tmp_path, torch.device("cpu"))
    good = cache.get("part", cfg)
    (entry,) = tmp_path.glob("*.npy")
    assert TEXT_CACHE_FORMAT >= 2
    for bad in (np.full((2, 32), np.nan, np.float32), np.zeros((3, 32), np.float32), good.numpy().astype(np.float64)):
        np.save(entry, bad)
        again = TextEmbeddingCache(clip, tok, "m", "w", tmp_path, torch.device("cpu"))
        np.testing.assert_allclose(again.get("part", cfg).numpy(), good.numpy(), atol=1e-6)
        assert again.cache_info().misses == 1


@pytest.mark.parametrize("where", ["in process", "child"])
def test_openvino_save_failure_like_a_full_disk_keeps_the_converted_model(tmp_path, monkeypatch, caplog, where):
    """A full disk: OpenVINO's ``save_model`` reports it as ``RuntimeError: basic_ios::clear`` (a conversion in
    this process), writing the child's files as ``OSError: [Errno 28]``; the run goes on in memory."""
    _need_openvino()
    from napari_clipsam.engine.backends.ir_cache import IRCache
    from napari_clipsam.engine.backends.openvino_runtime import import_openvino
    from napari_clipsam.io import atomic

    def full_disk(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: basic_ios::clear")

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if where == "in process":
        monkeypatch.setenv("NAPARI_CLIPSAM_CONVERT_IN_PROCESS", "1")
        monkeypatch.setattr(import_openvino(), "save_model", full_disk)
    else:
        monkeypatch.delenv("NAPARI_CLIPSAM_CONVERT_IN_PROCESS", raising=False)
        monkeypatch.setattr(atomic.AtomicBatch, "commit", no_space)
    x = torch.randn(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING):
        module, enc = _tiny_ov(IRCache(tmp_path / "full"))
        np.testing.assert_allclose(enc(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)
    said = "basic_ios::clear" if where == "in process" else "No space left"
    assert any(said in r.getMessage() and "NAPARI_CLIPSAM_CACHE" in r.getMessage() for r in caplog.records)
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.startswith(".ir-")]
