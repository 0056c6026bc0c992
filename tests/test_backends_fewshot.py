"""Few-shot with the OpenVINO backend (issue 23): one converted CLIP graph serves zero-shot segments, normal
references and few-shot segments; :meth:`ClipSAM.set_normal_references` prepares it, so the first few-shot
segment converts and compiles nothing; and the results are the ones a graph per request gave (and torch's).

Speed itself is measured by ``napari-clipsam bench`` (its few-shot line and goals table), not here: these tests
prove what is prepared when, and that the shared graph changes no result beyond float rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.engine.backends.openvino_runtime import openvino_available

if not openvino_available():
    pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'", allow_module_level=True)

from napari_clipsam.engine.backends import clip_graph  # noqa: E402
from napari_clipsam.engine.backends.openvino_encoders import OpenVinoClipTower, covers  # noqa: E402
from napari_clipsam.testing import tiny_engine  # noqa: E402

FP32 = dict(backend="openvino", sam_precision="float32", clip_precision="float32")


@pytest.fixture
def refs():
    from napari_clipsam.data.synthetic import synthetic_image

    return [synthetic_image("metal", None, size=96, seed=10 + i)[0] for i in range(2)]


@pytest.fixture
def image():
    from napari_clipsam.data.synthetic import synthetic_image

    return synthetic_image("metal", "scratch", size=96, seed=3)[0]


def _old_tower(engine) -> OpenVinoClipTower:
    """A tower serving no graph: each kind of request converts its own, as before issue 23."""
    v = engine.vision
    return OpenVinoClipTower(v.visual, v.image_size, {"model": "tiny", "weights": "graph-per-request"}, "float32")


def test_graph_covers_what_it_can_answer_exactly():
    g = ((0, 2, 3), "NLC", True)
    assert covers(g, ((2,), "NLC", True)) and covers(g, ((0, 3), "NCHW", False))
    assert not covers(g, ((1,), "NLC", True))  # a block it does not output
    assert not covers(((0, 2), "NLC", False), ((2,), "NLC", True))  # no CLS token in the graph
    assert not covers(((0, 2), "NCHW", False), ((2,), "NLC", False))  # NCHW is not turned back into NLC


def test_set_normal_references_prepares_the_graph_the_few_shot_segment_runs(refs, image):
    eng = tiny_engine(seed=0, **FP32)
    tower = eng.vision.tower
    assert tower.compiled_graphs == ()  # from_models prepares nothing
    stages: list[str] = []
    eng.set_normal_references(refs, "plate", progress=lambda s, f: stages.append(s))
    graph = clip_graph(eng)
    assert graph == ((0, 1, 2, 3), "NLC", True)  # the feature layers 1-4 and the training-free block (3 of 4)
    assert tower.compiled_graphs == (graph,)
    assert any(s.startswith("preparing the fast CPU model, once: CLIP vision tower") for s in stages), stages
    seen: list[str] = []
    few = eng.segment(image, "plate", progress=lambda s, f: seen.append(s))
    zero = eng.segment(image, "bolt", progress=lambda s, f: seen.append(s))  # no references for this object
    assert few.provenance["fewshot"] and not zero.provenance["fewshot"]
    assert tower.compiled_graphs == (graph,)  # neither segment made or compiled another CLIP graph
    assert not any("CLIP vision tower" in s for s in seen), seen


def test_references_read_from_the_bank_cache_still_prepare_the_graph(refs):
    first = tiny_engine(seed=0, **FP32)
    first.set_normal_references(refs)  # builds the bank and writes it to the (test's own) cache
    again = tiny_engine(seed=0, **FP32)
    assert again.vision.tower.compiled_graphs == ()
    again.set_normal_references(refs)
    info = again.cache_info().reference_banks
    assert (info.hits, info.misses) == (1, 0)  # no CLIP pass ran for the bank...
    assert again.vision.tower.compiled_graphs == (clip_graph(again),)  # ...and the graph is ready all the same


@pytest.mark.slow  # converts the graph-per-request towers (~25 s); OpenVINO CLIP vs torch: test_backends.py
def test_one_graph_gives_the_results_of_a_graph_per_request_and_of_torch(refs, image):
    new, old, ref = tiny_engine(seed=0, **FP32), tiny_engine(seed=0, **FP32), tiny_engine(seed=0)
    old.vision.tower = _old_tower(old)
    x = new.vision.preprocess([image])
    # the served graph answers each request as that request's own graph does (NCHW reshaped from NLC, the
    # blocks in block order whatever order they are asked in, the CLS tokens where asked)
    for request in (([3, 0, 1], "NCHW", False), ([2], "NLC", True), ([1, 2], "NLC", False)):
        a, b = new.vision.intermediates(x, *request), old.vision.intermediates(x, *request)
        c = ref.vision.intermediates(x, *request)
        assert a.keys() == b.keys() == c.keys()
        for name in a:
            for ta, tb, tc in zip(a[name], b[name], c[name], strict=True):
                assert ta.shape == tb.shape == tc.shape
                np.testing.assert_allclose(ta.numpy(), tb.numpy(), atol=1e-5, rtol=1e-5)
                np.testing.assert_allclose(ta.numpy(), tc.numpy(), atol=1e-4, rtol=1e-4)
    assert new.vision.tower.compiled_graphs == (clip_graph(new),)
    assert len(old.vision.tower.compiled_graphs) == 3  # what the engine used to convert: a graph per request
    maps = {}
    for name, eng in (("new", new), ("old", old), ("torch", ref)):
        eng.set_normal_references(refs, "plate", cache=False)
        with eng.using(fewshot_weight=1.0):
            maps[name, "few"] = eng.rough_maps_for_images([image], "plate")[0]
        maps[name, "fused"] = eng.rough_maps_for_images([image], "plate")[0]
        maps[name, "zero"] = eng.rough_maps_for_images([image], "bolt")[0]
    assert np.ptp(maps["new", "few"]) > 0.1  # a map with contrast, so the comparison means something
    for kind in ("few", "fused", "zero"):
        np.testing.assert_allclose(maps["new", kind], maps["old", kind], atol=1e-5)
        np.testing.assert_allclose(maps["new", kind], maps["torch", kind], atol=1e-4)
    r_new, r_old = new.segment(image, "plate"), old.segment(image, "plate")
    np.testing.assert_allclose(r_new.rough_map, r_old.rough_map, atol=1e-5)
    assert np.array_equal(r_new.mask, r_old.mask)
