"""OpenVINO encoders report progress while they run and stop mid-inference on a cancel request.

A tiny engine whose SAM image encoder takes 1024-px inputs (one transformer block, global attention over 64×64
tokens: ~60 ms an inference compiled for its shape, long enough to be polled many times and stopped half-way;
512 px took ~5 ms once compiled for its static shape, so a busy machine could finish it before the cancel); the
poll interval is set to 1 ms here so the tests do not depend on the machine's speed. No on-disk embedding
store: every segment after ``clear_caches`` runs the SAM encoder.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from napari_clipsam.engine.backends.openvino_runtime import openvino_available
from napari_clipsam.errors import Cancelled
from napari_clipsam.engine.progress import Stepper

if not openvino_available():
    pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'", allow_module_level=True)

from napari_clipsam.engine.backends import openvino_encoders


@pytest.fixture(scope="module")
def slow_engine(tmp_path_factory):
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path_factory.mktemp("ov-cancel")))
        mp.setenv("NAPARI_CLIPSAM_CONVERT_IN_PROCESS", "1")  # inference is tested here (the child: test_convert_child)
        clip, tok = make_tiny_clip(0)
        sam = make_tiny_sam(0, image_size=1024, encoder_depth=1, encoder_global_attn_indexes=[0], window_size=14)
        cfg = ClipSAMConfig(image_size=56, feature_layers=(1, 2, 3, 4), device="cpu", backend="openvino",
                            sam_precision="float32", clip_precision="float32", embedding_cache_bytes=0)
        engine = ClipSAM.from_models(clip, tok, sam, None, cfg)
        engine.backend.prepare()
        yield engine


@pytest.fixture
def fast_poll(monkeypatch):
    monkeypatch.setattr(openvino_encoders, "POLL_MS", 1)


@pytest.fixture
def image():
    from napari_clipsam.data.synthetic import synthetic_image

    return synthetic_image("metal", "scratch", size=96, seed=3)[0]


def _sam(engine):
    return engine.sam.encoder.encoder  # the OpenVinoEncoder inside OpenVinoSamEncoder


def test_polled_inference_is_bit_identical_to_the_compiled_call(slow_engine, image):
    """Both encoders: an async infer request per call gives exactly what the compiled model's own call gives."""
    clip_enc, sam_enc = slow_engine.backend.encoders[:2]  # the third, SAM's mask decoder, is not polled
    sam_in = slow_engine.sam.prepare(image)[0].float()
    clip_in = slow_engine.vision.preprocess([image]).float()
    for enc, x in ((clip_enc, clip_in), (sam_enc.encoder, sam_in)):
        compiled = enc._compiled.compiled
        direct = compiled(x.numpy())
        with Stepper(None, None).per_block([], "sam encoder", 0.0, 1.0):
            polled = enc(x)
        assert len(polled) == len(compiled.outputs)
        for out, got in zip(compiled.outputs, polled):
            assert np.array_equal(got.numpy(), direct[out])


def test_progress_moves_by_time_inside_the_openvino_sam_encoder(slow_engine, image, fast_poll):
    slow_engine.clear_caches()
    reports = []
    slow_engine.segment(image, "metal plate", progress=lambda s, f: reports.append((s, f)))
    fractions = [f for _, f in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    inside = sorted({f for s, f in reports if s == "sam encoder"})
    assert len(inside) >= 5, f"the bar stood still during the SAM encoder: {inside}"
    after = min(f for s, f in reports if s == "sam decoder")
    assert inside[-1] <= after and inside[-1] - inside[0] > 0.5 * (after - inside[0])  # it covered the stage


def test_cancel_inside_the_openvino_sam_encoder_stops_the_inference(slow_engine, image, fast_poll):
    slow_engine.clear_caches()
    before = slow_engine.segment(image, "metal plate")
    slow_engine.clear_caches()
    enc = _sam(slow_engine)
    runs, stopped = slow_engine.cache_info().sam_embeddings.misses, enc._compiled.stopped
    seen = []

    def cancelled():  # the stage's start, then the first report of the running inference, made right after it
        return seen.count("sam encoder") >= 2  # started (a later poll can come after a fast end on a busy machine)

    with pytest.raises(Cancelled, match="sam encoder"):
        slow_engine.segment(image, "metal plate", progress=lambda s, f: seen.append(s), cancelled=cancelled)
    assert slow_engine.cache_info().sam_embeddings.misses == runs + 1  # the cancelled segment ran the encoder once
    assert enc._compiled.stopped == stopped + 1, "the inference ran to its end after the cancel"
    after = slow_engine.segment(image, "metal plate")  # nothing half-made was kept, and the engine still works
    assert np.array_equal(after.mask, before.mask) and np.array_equal(after.final_map, before.final_map)


def test_two_threads_each_have_their_own_inference(slow_engine, image, fast_poll):
    """One thread's cancel stops its own inference only; the other's result is unchanged."""
    enc = _sam(slow_engine)
    x = slow_engine.sam.prepare(image)[0].float()
    reference = enc(x)[0]
    started = threading.Barrier(2)

    def plain():
        started.wait()
        return [enc(x)[0] for _ in range(3)]

    def cancelling():
        started.wait()
        polls = []
        step = Stepper(lambda s, f: polls.append(f), lambda: len(polls) >= 2)  # at the inference's third poll
        with step.per_block([], "sam encoder", 0.0, 1.0), pytest.raises(Cancelled):
            enc(x)

    stopped = enc._compiled.stopped
    with ThreadPoolExecutor(2) as pool:
        results, cancel = pool.submit(plain), pool.submit(cancelling)
        cancel.result()
        for r in results.result():
            assert np.array_equal(r.numpy(), reference.numpy())
    assert enc._compiled.stopped == stopped + 1


def test_time_based_progress_stays_below_its_cap_until_the_end():
    f = openvino_encoders.timed_fraction
    first = [f(t, None) for t in (0.0, 0.1, 1.0, 10.0, 1e6)]
    timed = [f(t, 2.0) for t in (0.0, 0.5, 1.0, 2.0, 60.0)]
    for seq in (first, timed):
        assert seq == sorted(seq) and seq[0] == 0.0 and seq[-1] <= openvino_encoders.CAP < 1.0
    assert timed[1] == pytest.approx(0.25 * openvino_encoders.CAP) and timed[-1] == openvino_encoders.CAP
