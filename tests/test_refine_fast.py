"""The fast path of a refine after one edited component (issue 23, refine ≤ 100 ms) gives the plain path's results.

- Components' merged maps kept in the engine's memo: exactly the maps made again from the decoded prompts.
- The fusion from the maps' boxes (``fuse_placed``): exactly ``fuse_maps`` of the full-size maps.
- The dense positional encoding computed once: exactly ``get_dense_pe()``, and again after the weights change.
- SAM's mask decoder through OpenVINO (float32): logits within 1e-5 of torch's on the tiny SAM, the same masks
  (documented tolerance: logits ≤ 1e-5 absolute, IoUs ≤ 1e-5; masks may differ only where a logit is within that
  of the threshold); the real vit_b architecture behind ``-m slow``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_clipsam.mmr.levels import refine_from_prompts
from napari_clipsam.mmr.merge import fuse_maps
from napari_clipsam.mmr.sam_decoder import SamEmbedding, SamRunner

BOXES = np.array([[5, 5, 30, 30], [5, 60, 30, 100], [50, 10, 80, 40]], np.float32)
POINTS = np.array([[17, 17], [17, 80], [65, 25]], np.float32)
PERMISSIVE = {"min_predicted_iou": 0.0, "max_outside_box": 1.0}  # the random SAM's point masks count too
LOGIT_TOLERANCE = 1e-5


@pytest.mark.usefixtures("one_torch_thread")
def test_memoised_components_are_exactly_the_maps_made_again(rgb):
    from napari_clipsam.testing import tiny_engine

    engine = tiny_engine(seed=0, **PERMISSIVE)
    first = engine.refine(engine.segment(rgb, "bottle"), points=POINTS, boxes=BOXES)
    moved = POINTS.copy()
    moved[1] = [12, 70]
    before = engine.cache_info().merged_components
    edited = engine.refine(first, points=moved, boxes=BOXES)
    after = engine.cache_info().merged_components
    assert after.hits - before.hits == 2 and after.misses - before.misses == 1  # only the edited one merged
    engine.clear_caches("component")  # the decoded prompts stay: the maps are merged again from them
    assert engine.cache_info().merged_components.currsize == 0
    again = engine.refine(first, points=moved, boxes=BOXES)
    assert engine.cache_info().merged_components.currsize == 3
    for name in ("final_map", "mask", "instances", "instance_component"):
        np.testing.assert_array_equal(getattr(edited, name), getattr(again, name))
    engine.clear_caches("decoded")  # the decoded prompts go, and the maps made of them with them
    assert engine.cache_info().merged_components.currsize == 0


def test_fusion_from_boxes_equals_fusion_of_full_maps(engine, rgb):
    r = engine.segment(rgb, "bottle", settings={"prompt_threshold": 0.3})
    assert r.prompts.num_components > 0
    emb = engine.sam_embedding(r)
    prompts = engine.refine(r, points=POINTS, boxes=BOXES).prompts
    maps, comp = refine_from_prompts(engine.sam, emb, prompts, r.rough_map, engine.config, r.valid)
    plain = fuse_maps(r.rough_map, comp, engine.config, r.valid)
    for name in ("final_map", "mask", "instances", "instance_component"):
        np.testing.assert_array_equal(getattr(maps, name), getattr(plain, name))
    assert maps.score == plain.score
    only, none = refine_from_prompts(engine.sam, emb, prompts, r.rough_map, engine.config, r.valid,
                                     with_maps=False)
    assert none is None and np.array_equal(only.final_map, maps.final_map)


def test_dense_positional_encoding_is_computed_once_and_again_after_new_weights(engine):
    runner = engine.sam
    pe = runner.model.prompt_encoder
    with torch.no_grad():
        first = runner.dense_pe()
        assert runner.dense_pe() is first  # kept
        assert torch.equal(first, pe.get_dense_pe())
        gauss = pe.pe_layer.positional_encoding_gaussian_matrix
        saved = gauss.clone()
        try:
            gauss.mul_(2.0)  # new weights in place (as load_state_dict copies them)
            assert torch.equal(runner.dense_pe(), pe.get_dense_pe())
            assert not torch.equal(runner.dense_pe(), first)
        finally:
            gauss.copy_(saved)
        assert torch.equal(runner.dense_pe(), first)


def _prompt_sets(size: int, rng):
    """Decoder inputs of every shape a refine sends: points alone (with the pad token), boxes alone, both; one or
    several prompts per call, one or several points per prompt."""
    out = []
    for k, p, box in ((1, 1, False), (3, 2, True), (2, 4, False), (4, 0, True), (1, 3, True)):
        pts = rng.uniform(0, size, (k, p, 2)).astype(np.float32) if p else None
        lab = rng.integers(0, 2, (k, p)) if p else None
        if lab is not None:
            lab[:, 0] = 1
        lo = rng.uniform(0, size / 2, (k, 2))
        boxes = np.concatenate([lo, lo + rng.uniform(4, size / 2, (k, 2))], axis=1).astype(np.float32) if box else None
        out.append((pts, lab, boxes))
    return out


def _compare_decoders(sam, size: int, key: dict, cache_root, atol: float):
    from napari_clipsam.engine.backends.ir_cache import IRCache
    from napari_clipsam.engine.backends.openvino_decoder import OpenVinoSamDecoder

    plain, fast = SamRunner(sam, "m"), SamRunner(sam, "m")
    fast.decoder = OpenVinoSamDecoder(sam, key, IRCache(cache_root))
    pe = sam.prompt_encoder
    torch.manual_seed(1)
    emb = SamEmbedding(0.5 * torch.randn(1, pe.embed_dim, *pe.image_embedding_size),
                       (sam.image_encoder.img_size, sam.image_encoder.img_size), (size, size), "m")
    worst = 0.0
    with torch.no_grad():
        for compiled in ("dynamic", "static"):  # first calls run the dynamic graph; then each shape its own
            if compiled == "static":
                for shape in sorted(fast.decoder.seen):
                    fast.decoder.compile_static(shape)
                assert set(fast.decoder.static_shapes) == fast.decoder.seen and len(fast.decoder.seen) > 3
            for pts, lab, boxes in _prompt_sets(size, np.random.default_rng(0)):
                (la, ia) = plain.decode_logits(emb, pts, lab, boxes)
                (lb, ib) = fast.decode_logits(emb, pts, lab, boxes)
                assert la.shape == lb.shape and ia.shape == ib.shape
                diff = float((la - lb).abs().max())
                worst = max(worst, diff)
                assert diff <= atol and float((ia - ib).abs().max()) <= atol
                ma = plain.masks_at_image(emb, la.flatten(0, 1))
                mb = fast.masks_at_image(emb, lb.flatten(0, 1))
                near = np.abs(plain.model.postprocess_masks(la.flatten(0, 1)[:, None], emb.input_size,
                                                            emb.original_size)[:, 0].numpy()) <= atol
                assert np.array_equal(ma[~near], mb[~near])  # masks differ only at logits within the tolerance
    return worst


@pytest.fixture
def openvino():
    from napari_clipsam.engine.backends.openvino_runtime import import_openvino, openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is an optional extra: pip install -e '.[openvino]'")
    return import_openvino()


@pytest.mark.usefixtures("one_torch_thread")
def test_openvino_mask_decoder_gives_torch_logits_within_tolerance(openvino, tmp_path):
    from napari_clipsam.testing import tiny_engine

    sam = tiny_engine(seed=0).sam.model
    worst = _compare_decoders(sam, 96, {"model": "tiny", "weights": "seed0"}, tmp_path, LOGIT_TOLERANCE)
    print(f"tiny SAM: OpenVINO vs torch logits max |Δ| {worst:.1e}")


@pytest.mark.slow  # ~20 s: the opt-in decoder through a whole engine (the decoder alone is compared above)
@pytest.mark.usefixtures("one_torch_thread")
def test_openvino_engine_refines_with_its_decoder_as_torch_does(openvino, rgb, tmp_path, monkeypatch):
    from napari_clipsam.testing import tiny_engine

    monkeypatch.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path))
    ov = tiny_engine(seed=0, backend="openvino", sam_precision="float32", clip_precision="float32",
                     sam_decoder_backend="openvino", **PERMISSIVE)
    ov.backend.prepare()
    assert ov.sam.decoder is not None and ov.sam.decoder.prepared
    plain = SamRunner(ov.sam.model, ov.sam.model_id)  # the same modules, decoded in torch
    r = ov.segment(rgb, "bottle")
    emb = ov.sam_embedding(r)
    prompts = ov.refine(r, points=POINTS, boxes=BOXES).prompts
    fast_maps, fast_comp = refine_from_prompts(ov.sam, emb, prompts, r.rough_map, ov.config, r.valid)
    plain_maps, plain_comp = refine_from_prompts(plain, emb, prompts, r.rough_map, ov.config, r.valid)
    np.testing.assert_allclose(fast_comp, plain_comp, atol=1e-5)
    np.testing.assert_allclose(fast_maps.final_map, plain_maps.final_map, atol=1e-5)
    np.testing.assert_array_equal(fast_maps.instances, plain_maps.instances)


@pytest.mark.slow
def test_openvino_mask_decoder_of_real_vit_b_within_tolerance(openvino, tmp_path):
    """SAM vit_b's real architecture, random weights (no download); 512-px image geometry."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]().eval().requires_grad_(False)
    worst = _compare_decoders(sam, 512, {"model": "vit_b", "weights": "random-seed0"}, tmp_path, LOGIT_TOLERANCE)
    print(f"vit_b: OpenVINO vs torch logits max |Δ| {worst:.1e}")


def test_the_openvino_decoder_is_opt_in_and_needs_openvino_encoders(openvino, tmp_path, monkeypatch):
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.errors import InvalidInputError
    from napari_clipsam.testing import tiny_engine

    monkeypatch.setenv("NAPARI_CLIPSAM_CACHE", str(tmp_path))
    assert ClipSAMConfig().sam_decoder_backend == "torch"
    default = tiny_engine(seed=0, backend="openvino", sam_precision="float32", clip_precision="float32")
    assert default.sam.decoder is None  # decoded in torch; nothing converted for it
    with pytest.raises(InvalidInputError, match="sam_decoder_backend"):
        ClipSAMConfig(backend="torch", sam_decoder_backend="openvino")
    with pytest.raises(InvalidInputError, match="sam_decoder_backend"):
        ClipSAMConfig(sam_decoder_backend="onnx")
