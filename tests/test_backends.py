"""Encoder backends: settings, CPU detection, OpenVINO fidelity against torch, the converted-model cache, stamps
and telemetry. Tiny real-architecture models here (seconds); the full-size architectures are in
``tests/test_backends_full.py`` (``python -m pytest -m slow tests/test_backends_full.py``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_clipsam.engine.backends import plan_backend, resolve_precision
from napari_clipsam.engine.backends.cpu_features import features_from_cpuinfo
from napari_clipsam.engine.backends.fidelity import cosine, max_abs_diff, relative_l2, sam_mask_ious
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.errors import ConfigError

from napari_clipsam.engine.backends.openvino_runtime import import_openvino, openvino_available

if not openvino_available():
    pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'", allow_module_level=True)
openvino = import_openvino()  # never a plain `import openvino`: that loads OpenVINO's telemetry


def _cpuinfo(flags: str, model: str = "Test CPU") -> str:
    return f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("field,value", [("backend", "onnx"), ("backend", None), ("sam_precision", "fp16"),
                                         ("clip_precision", "bf16")])
def test_bad_backend_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"ClipSAMConfig\.{field} = {value!r}"):
        ClipSAMConfig(**{field: value})


def test_openvino_backend_refused_without_openvino_or_with_a_gpu(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(ConfigError, match=r"napari-clipsam\[openvino\]"):
        ClipSAMConfig(backend="openvino")
    ClipSAMConfig(backend="auto")  # auto falls back to torch: accepted


def test_cpu_flags_decide_bf16():
    amx = features_from_cpuinfo(_cpuinfo("fpu avx2 avx512f amx_tile amx_bf16 amx_int8 avx512_bf16", "Xeon"))
    zen4 = features_from_cpuinfo(_cpuinfo("fpu avx2 avx512f avx512_bf16"))
    old = features_from_cpuinfo(_cpuinfo("fpu avx2 avx512f avx512_vnni"))
    assert amx.model == "Xeon" and amx.bf16_native and "amx_bf16" in amx.bf16_source and "amx_tile" in amx.flags
    assert zen4.bf16_native and old.bf16_native is False and "no amx_bf16" in old.bf16_source
    assert resolve_precision("auto", amx) == "bfloat16" and resolve_precision("auto", old) == "float32"
    assert resolve_precision("float32", amx) == "float32" and resolve_precision("bfloat16", old) == "bfloat16"


def test_auto_plan_is_openvino_on_the_cpu_and_torch_on_cuda():
    import torch

    cpu = plan_backend(ClipSAMConfig(), torch.device("cpu"))
    assert cpu.name == "openvino" and cpu.openvino == openvino.get_version() and cpu.clip_precision == "float32"
    assert cpu.sam_precision == ("bfloat16" if cpu.cpu.bf16_native else "float32")
    assert plan_backend(ClipSAMConfig(), torch.device("cuda")).name == "torch"  # device object only: no GPU needed
    assert plan_backend(ClipSAMConfig(backend="torch"), torch.device("cpu")).name == "torch"
    with pytest.raises(ConfigError, match="runs the encoders on the CPU"):
        plan_backend(ClipSAMConfig(backend="openvino"), torch.device("cuda"))


def test_cli_backend_options_reach_the_config():
    import argparse

    from napari_clipsam.cli.common import add_engine_options, engine_config

    p = argparse.ArgumentParser()
    add_engine_options(p)
    cfg = engine_config(p.parse_args(["--backend", "openvino", "--sam-precision", "float32",
                                      "--clip-precision", "bfloat16"]))
    assert (cfg.backend, cfg.sam_precision, cfg.clip_precision) == ("openvino", "float32", "bfloat16")
    assert engine_config(p.parse_args([])).backend == "auto"


# ----------------------------------------------------------------------------------------------- fidelity
class _Engines(dict):
    """Tiny engines on one shared converted-model cache, each built when a test first asks for it: torch fp32
    (reference), OpenVINO fp32 and bf16, in the training-free and the UMCI mode (a CPU without native bf16 skips
    the bf16 tests, so it never pays for their conversions)."""

    def __init__(self, cache):
        super().__init__()
        self.cache = cache

    def __missing__(self, key):
        from napari_clipsam.testing import tiny_engine

        prec, umci = key
        head = None if prec == "torch" else self["torch", umci].umci
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NAPARI_CLIPSAM_CACHE", str(self.cache))
            mp.setenv("NAPARI_CLIPSAM_CONVERT_IN_PROCESS", "1")  # the same conversion, without a child's start-up
            if prec == "torch":
                eng = tiny_engine(seed=0, umci=umci)
            else:
                eng = tiny_engine(seed=0, umci=umci, backend="openvino", sam_precision=prec, clip_precision=prec)
                eng.umci = head  # the same (random) head, so only the encoders differ
                eng.backend.prepare()
        self[key] = eng
        return eng


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return _Engines(tmp_path_factory.mktemp("ov-cache"))


@pytest.fixture
def image():
    from napari_clipsam.data.synthetic import synthetic_image

    return synthetic_image("metal", "scratch", size=96, seed=3)[0]


def _needs_native_bf16(prec):
    from napari_clipsam.engine.backends.cpu_features import detect_cpu

    if prec == "bfloat16" and not detect_cpu().bf16_native:
        pytest.skip("this CPU has no native bf16 (AMX / AVX-512 BF16)")


@pytest.mark.parametrize("prec", ["float32", "bfloat16"])
def test_openvino_sam_embeddings_and_masks_match_torch(engines, image, prec):
    _needs_native_bf16(prec)
    ref, ov = engines["torch", False], engines[prec, False]
    assert ov.sam.encoder is not None and ref.sam.encoder is None
    e_ref, e_ov = ref.sam.embed(image), ov.sam.embed(image)
    assert e_ov.features.shape == e_ref.features.shape and e_ov.features.dtype == e_ref.features.dtype
    if prec == "float32":
        assert max_abs_diff(e_ov.features, e_ref.features) <= 1e-4
    assert cosine(e_ov.features, e_ref.features) >= 0.999
    ious = sam_mask_ious(ov.sam, e_ov, ref.sam, e_ref, image.shape[:2])
    assert min(ious) >= (0.999 if prec == "float32" else 0.98), ious


@pytest.mark.parametrize("umci", [False, True], ids=["training-free", "umci"])
@pytest.mark.parametrize("prec", ["float32", "bfloat16"])
def test_openvino_clip_features_match_torch(engines, image, prec, umci):
    _needs_native_bf16(prec)
    ref, ov = engines["torch", umci], engines[prec, umci]
    a, b = ref.clip_features([image]), ov.clip_features([image])
    pairs = list(zip(a, b)) if umci else [(a, b)]
    assert len(pairs) == (4 if umci else 1)
    for x, y in pairs:
        assert y.shape == x.shape
        if prec == "float32":
            assert max_abs_diff(y, x) <= 1e-4
        assert cosine(y, x) >= 0.9999 and relative_l2(y, x) <= 0.01


def test_openvino_float32_segment_gives_torch_results_with_its_own_stamp(engines, image):
    ref, ov = engines["torch", True], engines["float32", True]
    r_ref = ref.segment(image, "plate")
    r_ov = ov.segment(image, "plate")
    np.testing.assert_allclose(r_ov.rough_map, r_ref.rough_map, atol=1e-5)
    assert np.array_equal(r_ov.mask, r_ref.mask)
    enc = r_ov.provenance["encoders"]
    assert enc["backend"] == "openvino" and enc["sam_precision"] == "float32" and "cpu_bf16_native" in enc
    assert enc["sam_attention_bands"] == ov.config.sam_attention_bands
    assert r_ref.provenance["encoders"]["backend"] == "torch"
    assert r_ov.sam_id.endswith(f"/openvino-float32-bands{ov.config.sam_attention_bands}")
    ref.clear_caches()  # in memory; the torch engine's own embedding of this image is still on disk
    calls = ref.cache_info().sam_embeddings.misses
    again = ref.refine(r_ov, points=[[40, 40]], point_labels=[1])  # on torch's embedding, never OpenVINO's
    assert again.sam_id == ref.sam.model_id and ref.cache_info().sam_embeddings.misses == calls


# ----------------------------------------------------------------------------------------------- cache
def _tiny_encoder(cache, key="k"):
    import torch

    from napari_clipsam.engine.backends.openvino_encoders import OpenVinoEncoder

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU())
    return module, OpenVinoEncoder(module, 8, {"encoder": "test", "model": key}, "test encoder", "float32", cache)


def test_converted_model_is_cached_reused_and_rebuilt_when_damaged(tmp_path):
    import torch

    from napari_clipsam.engine.backends.ir_cache import IRCache

    cache = IRCache(tmp_path)
    calls, stages = [], []
    real = IRCache.get_or_convert

    def counting(self, fields, convert, what, progress=None, expected_s=None):
        return real(self, fields, lambda: (calls.append(1), convert())[1], what, progress, expected_s)

    x = torch.randn(2, 3, 8, 8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(IRCache, "get_or_convert", counting)
        # the cache is what is tested here: its four conversions run in this process (a child process each costs
        # ~4 s of start-up; the child itself is tested in tests/test_convert_child.py)
        mp.setenv("NAPARI_CLIPSAM_CONVERT_IN_PROCESS", "1")
        module, enc = _tiny_encoder(cache)
        enc.prepare(lambda s, f: stages.append((s, f)))
        stage = "preparing the fast CPU model, once: test encoder (about 1 s on 2 cores; later runs load it from " \
                "the cache)"
        assert stages[0] == (stage, 0.0) and stages[-1] == (stage, 1.0)  # (ticks between: a slow conversion)
        np.testing.assert_allclose(enc(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)
        same = _tiny_encoder(cache)[1]
        same.prepare()
        assert same._compiled is enc._compiled  # one compiled model per process for one entry and precision
        del enc, same  # (while an encoder holds it, the compiled model is reused without reading the disk)
        (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        meta = json.loads((entry / "manifest.json").read_text())
        assert meta["fields"]["openvino"] == openvino.get_version() and meta["fields"]["ir_precision"] == "f32"
        assert meta["fields"]["input"] == [1, 3, 8, 8]
        _tiny_encoder(cache)[1].prepare()
        assert len(calls) == 1  # loaded from disk
        blob = bytearray((entry / "model.bin").read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        (entry / "model.bin").write_bytes(bytes(blob))
        _, rebuilt = _tiny_encoder(cache)
        np.testing.assert_allclose(rebuilt(x)[0].numpy(), module(x).detach().numpy(), atol=1e-5)
        assert len(calls) == 2  # the damaged entry was converted again, not trusted
        del rebuilt
        (entry / "manifest.json").write_text("{not json")
        _tiny_encoder(cache)[1].prepare()
        assert len(calls) == 3
        _tiny_encoder(cache, key="other")[1].prepare()  # another model identity: its own entry
        assert len(calls) == 4 and len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_failed_conversion_leaves_nothing_behind(tmp_path):
    from napari_clipsam.engine.backends.ir_cache import IRCache

    def broken():
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        IRCache(tmp_path).get_or_convert({"model": "x"}, broken, "test")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# ----------------------------------------------------------------------------------------------- telemetry
TELEMETRY_PROBE = textwrap.dedent("""
    import os, sys
    events = []
    sys.addaudithook(lambda ev, args: events.append(ev) if ev.startswith(("socket.", "os.fork", "urllib."))
                     else None)  # OpenVINO's telemetry sends from a forked process
    if sys.argv[1] == "ours":
        import torch
        from napari_clipsam.engine.backends.openvino_encoders import OpenVinoEncoder
        enc = OpenVinoEncoder(torch.nn.Conv2d(3, 2, 1), 4, {"encoder": "probe"}, "probe", "float32")
        enc(torch.zeros(1, 3, 4, 4))
    else:
        import openvino
    print(repr(sys.modules.get("openvino_telemetry")), events, os.listdir(os.environ["HOME"]))
""")


def _probe(tmp_path, mode):
    home = tmp_path / mode
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "NAPARI_CLIPSAM_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(__file__)),
                                                     os.environ.get("PYTHONPATH")) if p)}
    for var in ("CI", "TF_BUILD", "JENKINS_URL"):  # OpenVINO's own CI switches would hide what we test
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE, mode], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_openvino_sends_no_telemetry(tmp_path):
    """Converting and running through the backend loads no telemetry module, forks no sender, opens no socket
    and writes nothing in the home folder; a plain ``import openvino`` does all of that (the control)."""
    assert _probe(tmp_path, "ours") == "None [] []"
    plain = _probe(tmp_path, "plain")
    assert "openvino_telemetry" in plain and "intel" in plain  # it created ~/intel/openvino_ga_cid
