"""The engine end to end on tiny real-architecture models: inputs, outputs, caches, refine, fast paths."""
import dataclasses

import numpy as np
import pytest
import torch

from napari_clipsam import Cancelled, ClipSAMResult
from napari_clipsam.errors import EngineMismatchError
from napari_clipsam.mmr.levels import refine_from_prompts

RNG = np.random.default_rng(1)


def check_result(r: ClipSAMResult, shape):
    assert isinstance(r, ClipSAMResult)
    for m in (r.rough_map, r.final_map):
        assert m.shape == shape and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    assert r.mask.shape == shape and r.mask.dtype == bool
    assert r.instances.shape == shape and r.instances.dtype == np.int32
    assert r.points.ndim == 2 and r.points.shape[1] == 2 and r.point_labels.shape == (len(r.points),)
    assert r.boxes.ndim == 2 and r.boxes.shape[1] == 4
    np.testing.assert_array_equal(r.mask, r.final_map >= 0.5)
    np.testing.assert_array_equal(r.instances > 0, r.mask)
    assert r.score == pytest.approx(float(r.final_map.max()))
    p = r.provenance
    assert p["mode"] in ("umci", "training-free") and p["version"] and p["thresholds"]["alpha"] == 0.5


@pytest.mark.parametrize("image", [
    (RNG.random((64, 80)) * 255).astype(np.uint8),
    (RNG.random((64, 80, 1)) * 255).astype(np.uint8),
    (RNG.random((64, 80, 3)) * 255).astype(np.uint8),
    (RNG.random((64, 80, 4)) * 255).astype(np.uint8),
    (RNG.random((64, 80)) * 65535).astype(np.uint16),
    (RNG.random((64, 80, 3)) * 4000).astype(np.uint16),
    RNG.random((64, 80)).astype(np.float32),
    RNG.normal(size=(64, 80, 3)) * 1e3,
    RNG.random((64, 80)) > 0.5,
], ids=["gray8", "gray8x1", "rgb8", "rgba8", "gray16", "rgb16", "f32", "f64rgb", "bool"])
def test_every_input_kind(engine, image):
    check_result(engine.segment(image, "bottle"), (64, 80))


def test_umci_mode_result(umci_engine, rgb):
    r = umci_engine.segment(rgb, "metal nut")
    check_result(r, rgb.shape[:2])
    assert r.provenance["mode"] == "umci"


def test_training_free_is_labelled(engine, rgb):
    r = engine.segment(rgb, "bottle")
    assert r.provenance["mode"] == "training-free"
    assert "lower quality" in r.provenance["rough_map"]


def test_nan_pixels_are_background(engine):
    img = RNG.random((64, 64)).astype(np.float32)
    img[10:20, 10:20] = np.nan
    r = engine.segment(img, "tile")
    check_result(r, (64, 64))
    assert not r.mask[10:20, 10:20].any() and (r.rough_map[10:20, 10:20] == 0).all()


@pytest.mark.parametrize("image, name, match", [
    (np.zeros((0, 10)), "x", "empty"),
    (np.zeros(100), "x", "dimension"),
    (np.zeros((2, 10, 10, 3)), "x", "dimension"),
    (np.zeros((20, 20, 5)), "x", "5 channels"),
    (np.full((20, 20), np.nan), "x", "all NaN"),
    (np.zeros((7, 20)), "x", "smaller than"),
    (np.zeros((20, 20), np.uint8), "  ", "object_name is empty"),
    (np.array([["a"] * 10] * 10), "x", "not numeric"),
])
def test_bad_input_raises_clear_value_error(engine, image, name, match):
    with pytest.raises(ValueError, match=match):
        engine.segment(image, name)


def test_channel_first_hint(engine):
    with pytest.raises(ValueError, match="channel-first"):
        engine.segment(np.zeros((3, 40, 40), np.uint8), "x")


def misses(engine) -> tuple[int, int, int]:
    """Images through CLIP's and SAM's encoders and runs of the text tower so far (the caches' misses)."""
    info = engine.cache_info()
    return info.clip_features.misses, info.sam_embeddings.misses, info.text_embeddings.misses


def test_same_call_twice_hits_caches_and_matches(engine, rgb):
    first = engine.segment(rgb, "bottle")
    calls = misses(engine)
    second = engine.segment(rgb, "bottle")
    assert misses(engine) == calls == (1, 1, 1)
    for a in ("rough_map", "final_map", "mask", "instances", "points", "boxes"):
        np.testing.assert_array_equal(getattr(first, a), getattr(second, a))


def test_cached_equals_uncached(rgb):
    from napari_clipsam.testing import tiny_engine

    cached = tiny_engine(seed=3)
    cached.segment(rgb, "cable")
    warm = cached.segment(rgb, "cable")
    cold = tiny_engine(seed=3).segment(rgb, "cable")
    for a in ("rough_map", "final_map", "instances"):
        np.testing.assert_array_equal(getattr(warm, a), getattr(cold, a))


def test_text_disk_cache_survives_a_new_engine(rgb):
    from napari_clipsam.testing import tiny_engine

    tiny_engine(seed=0).segment(rgb, "screw")
    again = tiny_engine(seed=0)
    again.segment(rgb, "screw")
    assert again.cache_info().text_embeddings.misses == 0
    other_weights = tiny_engine(seed=1)  # different weights: a different key, never a stale hit
    other_weights.segment(rgb, "screw")
    assert other_weights.cache_info().text_embeddings.misses == 1


def test_refine_runs_no_encoder_and_follows_prompts(engine, rgb):
    r = engine.segment(rgb, "bottle")
    calls = misses(engine)[:2]
    a = engine.refine(r, points=[[20, 20]], point_labels=[1])
    b = engine.refine(r, boxes=[[40, 50, 80, 100]])
    assert misses(engine)[:2] == calls
    assert a.provenance["prompt_source"] == "user"
    assert not np.array_equal(a.final_map, b.final_map)
    np.testing.assert_array_equal(a.rough_map, r.rough_map)
    check_result(a, rgb.shape[:2])
    empty = engine.refine(r, points=np.zeros((0, 2)))
    np.testing.assert_allclose(empty.final_map, 0.5 * r.rough_map, atol=1e-6)


BOXES = np.array([[5, 5, 30, 30], [5, 60, 30, 100], [50, 10, 80, 40], [50, 60, 90, 110]], np.float32)
POINTS = np.array([[17, 17], [17, 80], [65, 25], [70, 85], [60, 95]], np.float32)  # two in the last box


def component_maps(engine, result) -> np.ndarray:
    """(K, H, W): the merged SAM map of each of ``result``'s components, decoded afresh (results do not keep them)."""
    with engine.autocast():
        return refine_from_prompts(engine.sam, engine.sam_embedding(result), result.prompts, result.rough_map,
                                   engine.config, result.valid)[1]


@pytest.mark.usefixtures("one_torch_thread")
def test_batched_decoding_equals_one_prompt_per_call(rgb):
    from napari_clipsam.testing import tiny_engine

    derived, user = {}, {}
    for batch in (1, 2, 64):  # one prompt per decoder call; chunks of 2; every component of a level at once
        engine = tiny_engine(seed=0, decoder_batch_size=batch)  # its own embedding: nothing decoded before
        derived[batch] = engine.segment(rgb, "bottle")  # 3 components derived from the rough map
        user[batch] = engine.refine(derived[batch], points=POINTS, boxes=BOXES)  # 4, one with two points
    assert derived[1].prompts.num_components == 3 and user[1].prompts.num_components == 4
    assert user[1].num_instances > 0
    for batch in (2, 64):
        for out in (derived, user):
            np.testing.assert_allclose(out[batch].final_map, out[1].final_map, atol=1e-5)
            np.testing.assert_array_equal(out[batch].instances, out[1].instances)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_correction_changes_only_the_component_it_touched(rgb):
    from napari_clipsam.testing import tiny_engine

    permissive = {"min_predicted_iou": 0.0, "max_outside_box": 1.0}  # the random SAM's point masks count too
    engine = tiny_engine(seed=0, **permissive)
    r = engine.segment(rgb, "bottle")
    boxes, points = BOXES[:3], POINTS[:3]
    first = engine.refine(r, points=points, boxes=boxes)
    again = engine.refine(first, points=points, boxes=boxes)
    np.testing.assert_array_equal(again.final_map, first.final_map)
    moved = points.copy()
    moved[1] = [12, 70]
    edited = engine.refine(first, points=moved, boxes=boxes)
    maps_first, maps_edited = component_maps(engine, first), component_maps(engine, edited)
    assert not np.array_equal(maps_edited[1], maps_first[1])
    untouched = (maps_first[1] == 0) & (maps_edited[1] == 0)
    assert untouched.any()
    np.testing.assert_array_equal(edited.final_map[untouched], first.final_map[untouched])
    fresh = tiny_engine(seed=0, **permissive)  # the same prompts decoded afresh: earlier decodes change nothing
    plain = fresh.refine(fresh.segment(rgb, "bottle"), points=moved, boxes=boxes)
    np.testing.assert_allclose(edited.final_map, plain.final_map, atol=1e-5)
    np.testing.assert_array_equal(edited.instances, plain.instances)


def test_the_engine_cache_stays_within_its_byte_bound_and_results_hold_no_cache(engine, rgb):
    from napari_clipsam.testing import tiny_engine

    boxes = np.array([[5, 5, 30, 30], [5, 60, 30, 100], [50, 10, 80, 40]], np.float32)
    points = np.array([[17, 17], [17, 80], [65, 25]], np.float32)
    roomy = tiny_engine(seed=0)
    want = roomy.refine(roomy.segment(rgb, "bottle"), points=points, boxes=boxes)
    full = roomy.cache_info()
    assert full.entries >= 2 + 9 and full.bytes <= full.max_bytes  # features, embedding, 9 decoded
    bound = full.bytes // 3
    tight = tiny_engine(seed=0, cache_bytes=bound)
    r = tight.segment(rgb, "bottle")
    got = tight.refine(r, points=points, boxes=boxes, image=rgb)
    assert tight.cache_info().bytes <= bound
    np.testing.assert_array_equal(got.final_map, want.final_map)  # evictions never change a result
    held = [f.name for f in dataclasses.fields(got) if isinstance(getattr(got, f.name), torch.Tensor)]
    assert held == [] and not hasattr(got, "sam_embedding") and not hasattr(got, "component_maps")


def test_refine_after_the_embedding_was_evicted_asks_for_the_image_then_embeds_it(rgb):
    from napari_clipsam.testing import tiny_engine

    engine = tiny_engine(seed=0, embedding_cache_bytes=0)  # nothing on disk to fall back on
    r = engine.segment(rgb, "bottle")
    engine.clear_caches("embedding")
    calls = engine.cache_info().sam_embeddings.misses
    with pytest.raises(EngineMismatchError, match="no longer in the engine's cache.*Pass image="):
        engine.refine(r, points=[[20, 20]])
    again = engine.refine(r, points=[[20, 20]], image=rgb)
    assert engine.cache_info().sam_embeddings.misses == calls + 1 and again.sam_id == engine.sam.model_id
    engine.refine(r, points=[[21, 20]])  # cached again: no image needed
    assert engine.cache_info().sam_embeddings.misses == calls + 1


def test_segment_many_equals_segment(engine):
    imgs = [(RNG.random((50 + 10 * i, 60, 3)) * 255).astype(np.uint8) for i in range(3)]
    many = engine.segment_many(imgs, "pill", batch_size=2)
    from napari_clipsam.testing import tiny_engine

    single = [tiny_engine(seed=0).segment(im, "pill") for im in imgs]
    for a, b in zip(many, single):
        np.testing.assert_allclose(a.rough_map, b.rough_map, atol=1e-5)
        np.testing.assert_allclose(a.final_map, b.final_map, atol=1e-4)


def test_progress_and_cancel(engine, rgb):
    seen = []
    engine.segment(rgb, "bottle", progress=lambda s, f: seen.append(s))
    assert {"text", "clip", "rough map", "prompts", "sam encoder", "sam decoder", "merge"} <= set(seen)
    calls = []

    def cancel_at_clip():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        engine.segment(rgb[::-1].copy(), "bottle", cancelled=cancel_at_clip)


def test_normal_image_with_high_threshold_gives_no_prompts(engine, rgb):
    r = engine.segment(rgb, "bottle", settings={"prompt_threshold": 1.0})
    assert len(r.points) == 0 and len(r.boxes) == 0
    assert r.sam_id == engine.sam.model_id  # embedded anyway, so that refine can run without an encoder
    calls = engine.cache_info().sam_embeddings.misses
    engine.refine(r, points=[[10, 10]])
    assert engine.cache_info().sam_embeddings.misses == calls


def test_device_and_autocast_float32_on_cpu(engine):
    assert engine.device.type == "cpu"
    with engine.autocast():
        assert not torch.is_autocast_enabled()


def test_importing_the_package_loads_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, napari_clipsam, napari_clipsam.widget, napari_clipsam.export, napari_clipsam.data\n"
            "napari_clipsam.ClipSAMConfig.preset('accurate')\n"
            "print(sorted(m for m in ('torch', 'open_clip', 'segment_anything', 'qtpy', 'napari') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_settings_are_fixed_per_engine_and_per_call_per_thread(engine, rgb):
    """An engine's settings never change after construction; per-call settings apply to that call (and thread)
    only, so a background prefetch and a foreground refine never see each other's thresholds."""
    import threading

    base = engine.config
    with pytest.raises(AttributeError, match="fixed when it is built"):
        engine.config = base.replace(prompt_threshold=0.1)
    with pytest.raises(ValueError, match="cannot change per call"):
        engine.segment(rgb, "bottle", settings={"image_size": 112})
    high = engine.segment(rgb, "bottle", settings={"prompt_threshold": 1.0})
    assert high.provenance["thresholds"]["prompt_threshold"] == 1.0 and engine.config is base
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other_thread():
        with engine.using(mask_threshold=0.9):
            inside.set()
            release.wait(5)
            seen["other"] = engine.config.mask_threshold

    t = threading.Thread(target=other_thread)
    t.start()
    inside.wait(5)
    seen["main"] = engine.config.mask_threshold  # not the other thread's 0.9
    release.set()
    t.join()
    assert seen == {"other": 0.9, "main": base.mask_threshold}


def test_every_result_carries_an_image_score_in_itself_and_its_provenance(engine):
    """Outside a folder run the image score is the final map's maximum; a refine scores its own final map."""
    import numpy as np

    image = (np.random.default_rng(5).random((64, 72, 3)) * 255).astype(np.uint8)
    r = engine.segment(image, "plate", settings={"prompt_threshold": 0.0})
    assert r.image_score == r.score == r.provenance["image_score"] == float(r.final_map.max())
    refined = engine.refine(r, points=[[10, 10]], point_labels=[1], image=image)
    assert refined.image_score == refined.provenance["image_score"] == float(refined.final_map.max())


def test_read_only_images_are_used_without_a_warning(engine):
    """A read-only array (a memory-mapped file, a frozen napari layer) is read, never written, and torch's
    "non-writable tensor" warning is not passed on to the person."""
    import warnings

    ref = (RNG.random((64, 64, 3)) * 255).astype(np.uint8)
    image = ref.copy()
    for a in (ref, image):
        a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.set_normal_references([ref], cache=False)
        check_result(engine.segment(image, "tile"), (64, 64))
