"""Progress reports move forward only, move inside the encoders, and a cancel stops an encoder mid-way."""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.errors import Cancelled
from napari_clipsam.engine.progress import STAGES


@pytest.fixture(scope="module")
def images():
    return [synthetic_image("part", "crack", size=64, seed=s)[0] for s in range(3)]


def test_progress_is_monotonic_and_moves_inside_the_encoders(engine, images):
    reports = []
    engine.segment_many(images, "machined part", progress=lambda s, f: reports.append((s, f)))
    fractions = [f for _, f in reports]
    assert fractions == sorted(fractions), "progress went backwards"
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [s for s, _ in reports if s in STAGES] and {s for s, _ in reports} <= set(STAGES)
    blocks = len(engine.sam.model.image_encoder.blocks)
    per_image = [f for s, f in reports if s == "sam encoder"]
    assert len(per_image) >= len(images) * (blocks + 1), "the SAM encoder does not report per block"
    assert len(set(per_image)) > len(images), "reports inside the SAM encoder do not advance"


def test_cancel_inside_the_sam_encoder_stops_it(engine, images):
    engine.clear_caches()
    seen = []

    def progress(stage, fraction):
        seen.append(stage)

    def cancelled():
        return seen.count("sam encoder") >= 2  # after the encoder's first block

    calls = engine.cache_info().sam_embeddings.misses
    ran = []
    handle = engine.sam.model.image_encoder.neck.register_forward_hook(lambda *a: ran.append(1))
    try:
        with pytest.raises(Cancelled, match="sam encoder"):
            engine.segment(images[0], "machined part", progress=progress, cancelled=cancelled)
    finally:
        handle.remove()
    assert engine.cache_info().sam_embeddings.misses == calls + 1 and not ran, \
        "the encoder ran to its end after the cancel"
    result = engine.segment(images[0], "machined part")  # nothing half-made was cached
    assert result.final_map.shape == images[0].shape[:2]
    assert np.isfinite(result.final_map).all()


def test_stage_report_is_the_running_stage_of_this_thread_only():
    """Inside per_block, stage_report() reports that stage (and sees a cancel); outside it, or in another
    thread, there is none; a nested block's report gives way to the outer one again."""
    import threading

    from napari_clipsam.engine.progress import Stepper, stage_report

    reports, stop = [], []
    step = Stepper(lambda s, f: reports.append((s, f)), lambda: bool(stop))
    assert stage_report() is None
    with step.per_block([], "clip", 0.0, 1.0):
        stage_report()(0.5)
        with step.per_block([], "sam encoder", 0.0, 1.0):
            stage_report()(0.5)
            other = []
            t = threading.Thread(target=lambda: other.append(stage_report()))
            t.start()
            t.join()
            assert other == [None]
        stage_report()(1.0)
        stop.append(1)
        with pytest.raises(Cancelled, match="clip"):
            stage_report()(1.0)
    assert stage_report() is None
    assert [s for s, _ in reports] == ["clip", "sam encoder", "clip"]
    assert [f for _, f in reports] == sorted(f for _, f in reports)  # never back, though clip ends below SAM
