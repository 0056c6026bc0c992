"""Issue 24 part 2: SAM refines each component of a large image on a crop around it at full resolution.

The window geometry and the placed fusion are checked exactly (the fusion against the dense one); the engine's
crop path with the tiny random SAM (256-px input) on "large" 1280² images: masks in image coordinates (a
translated image gives exactly the translated maps, and a crop's map is SAM's own decode of that crop), one
encoder run per distinct crop, a refine after an edit decoding on the cached crop embedding (seen in
``cache_info()``), progress per crop and a cancel between crops."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.errors import Cancelled, ConfigError, EngineMismatchError
from napari_clipsam.mmr.crops import (CROP_FORMAT, choose_window, crop_key, crop_region, level_windows,
                                      prompts_in_window, window_sides)
from napari_clipsam.mmr.merge import fuse_maps, fuse_placed
from napari_clipsam.mmr.prompts import group_user_prompts

N = 1280  # a "large" image for the tiny SAM: 5 × its 256-px input


@pytest.mark.parametrize("shape", [(1280, 1280), (3072, 4096), (300, 1000), (256, 256)])
def test_windows_cover_the_image_and_fit_regions(shape):
    for side in window_sides(shape, 256):
        wins = level_windows(shape, side)
        cover = np.zeros(shape, bool)
        for r0, c0, r1, c1 in wins:
            assert (r1 - r0, c1 - c0) == (min(side, shape[0]), min(side, shape[1]))
            cover[r0:r1, c0:c1] = True
        assert cover.all()
    assert window_sides(shape, 256)[-1] >= max(shape)  # the top level is the whole image
    assert level_windows(shape, window_sides(shape, 256)[-1]) == [(0, 0, *shape)]


@settings(max_examples=60, deadline=None)
@given(r=st.integers(0, 1279), c=st.integers(0, 1279), h=st.integers(1, 1280), w=st.integers(1, 1280))
def test_choose_window_is_the_smallest_level_that_contains_the_region(r, c, h, w):
    shape = (N, N)
    region = (r, c, min(N, r + h), min(N, c + w))
    win = choose_window(region, shape, 256)
    assert win[0] <= region[0] and win[1] <= region[1] and region[2] <= win[2] and region[3] <= win[3]
    side = max(win[2] - win[0], win[3] - win[1])
    smaller = [s for s in window_sides(shape, 256) if s < side]
    for s in smaller:  # no window of a finer level would do
        assert not any(a <= region[0] and b <= region[1] and region[2] <= cc and region[3] <= d
                       for a, b, cc, d in level_windows(shape, s))
    if max(region[2] - region[0], region[3] - region[1]) <= 192:  # up to 3/4 of the finest side: full resolution
        assert side == 256


def test_choose_window_prefers_cached_and_only_cached_may_find_none():
    region = (400, 400, 440, 440)
    fits = [w for w in level_windows((N, N), 256)
            if w[0] <= 400 and w[1] <= 400 and 440 <= w[2] and 440 <= w[3]]
    assert len(fits) > 1
    nearest = choose_window(region, (N, N), 256)
    other = next(w for w in fits if w != nearest)
    assert choose_window(region, (N, N), 256, cached=lambda w: w == other) == other
    assert choose_window(region, (N, N), 256, cached=lambda w: False, only_cached=True) is None
    whole = (0, 0, N, N)
    assert choose_window(region, (N, N), 256, cached=lambda w: w == whole, only_cached=True) == whole


def test_crop_key_names_image_box_and_format():
    assert crop_key("abc", (0, 0, 100, 200), (100, 200)) == "abc"  # the whole image: its own embedding
    k = crop_key("abc", (0, 64, 256, 320), (1280, 1280))
    assert k.startswith("abc/") and f"v{CROP_FORMAT}" in k and k.endswith("0,64,256,320")
    assert k != crop_key("abc", (0, 128, 256, 384), (1280, 1280)) != crop_key("abd", (0, 64, 256, 320), (1280, 1280))


def test_region_grows_the_box_by_the_context():
    assert crop_region(np.array([100, 200, 120, 240]), np.zeros((0, 2)), 0.5, (N, N)) == (90, 180, 130, 260)
    assert crop_region(None, np.array([[10.0, 20.0]]), 0.5, (N, N)) == (10, 20, 11, 21)
    assert crop_region(np.array([0, 0, 40, 40]), np.zeros((0, 2)), 1.0, (N, N)) == (0, 0, 80, 80)


def test_prompts_in_window_move_and_renumber():
    p = group_user_prompts([[300, 310], [600, 610], [305, 900]], [1, 1, 0],
                           [[290, 300, 320, 330], [590, 600, 620, 630]], (N, N))
    sub = prompts_in_window(p, [1], (512, 512, 768, 768))
    np.testing.assert_array_equal(sub.points, [[88, 98]])
    np.testing.assert_array_equal(sub.boxes, [[78, 88, 108, 118]])
    assert sub.num_components == 1 and sub.point_component.tolist() == [0] and sub.box_component.tolist() == [0]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(0, 5))
def test_placed_fusion_equals_dense_fusion(seed, k):
    rng = np.random.default_rng(seed)
    H, W = 40, 50
    cfg = ClipSAMConfig(alpha=float(rng.choice([0.0, 0.5])))
    rough = rng.random((H, W)).astype(np.float32)
    placed, dense = [], np.zeros((k, H, W), np.float32)
    for c in range(k):
        r0, c0 = rng.integers(0, H - 5), rng.integers(0, W - 5)
        r1, c1 = rng.integers(r0 + 1, H + 1), rng.integers(c0 + 1, W + 1)
        m = rng.choice([0.0, 0.4, 0.7, 1.0], size=(r1 - r0, c1 - c0)).astype(np.float32)  # ties and zeros
        placed.append(((r0, c0, r1, c1), m))
        dense[c, r0:r1, c0:c1] = m
    a, b = fuse_placed(rough, placed, cfg), fuse_maps(rough, dense, cfg)
    np.testing.assert_array_equal(a.final_map, b.final_map)
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(a.instance_component, b.instance_component)


def test_sam_crops_setting_is_checked():
    for bad in ("yes", True, None):
        with pytest.raises(ConfigError, match="sam_crops"):
            ClipSAMConfig(sam_crops=bad)
    with pytest.raises(ConfigError, match="sam_crop_context"):
        ClipSAMConfig(sam_crop_context=-0.1)
    assert {"sam_crops", "sam_crop_context"} <= set(ClipSAMConfig().thresholds())


# ---------------------------------------------------------------------------------------------- the engine
def _engine(**config):
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    clip, tok = make_tiny_clip(0)
    cfg = ClipSAMConfig(image_size=56, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch", **config)
    return ClipSAM.from_models(clip, tok, make_tiny_sam(0), None, cfg)


def _image(seed=0, n=N):
    from napari_clipsam.data.synthetic import synthetic_image

    return synthetic_image("metal", None, n, seed)[0]


ON = {"sam_crops": "on"}


def _blobs(centres, n=N, radius=12):
    """A rough map (n, n) of 0.9 discs at ``centres``, 0 elsewhere: one prompt component each."""
    yy, xx = np.ogrid[:n, :n]
    rough = np.zeros((n, n), np.float32)
    for r, c in centres:
        rough[np.hypot(yy - r, xx - c) <= radius] = 0.9
    return rough


def _mmr(engine, image, rough, progress=None, cancelled=None):
    """MMR (prompts, SAM, merge) of the engine's segment on a given rough map, as segment runs it after CLIP."""
    from napari_clipsam.engine.progress import Stepper
    from napari_clipsam.io.images import image_key, normalise_image

    prepared = [normalise_image(image)]
    return engine._masks_for(prepared, [image_key(prepared[0][0])], [rough], "metal plate",
                             Stepper(progress, cancelled), 0.0, 1.0)[0]
def test_size_rule_of_a_tiled_folder_map_is_one_tiles_area():
    """A folder's mutual map of tiled images is calibrated by whole images' maxima and resolves one tile's patches,
    so its size rule is min_component_frac × one tile's area: a 2-px scratch's blob of 81 px on a 1024² image
    (under 0.0002 × 1024² = 210 px) is a prompt there. A segment's tiled map (calibrated per patch, where a large
    image has more chance passes of τ) keeps the whole image's area and drops it. remask follows the result's own
    rule, whatever the call's tiling."""
    import dataclasses

    from napari_clipsam.engine.progress import Stepper
    from napari_clipsam.io.images import image_key, normalise_image
    from napari_clipsam.mmr.prompts import prompts_from_map

    n = 1024
    rough = _blobs([(300, 700)], n, radius=5)
    blob = int((rough > 0).sum())
    cfg = ClipSAMConfig()
    assert cfg.min_component_px < blob < cfg.min_component_frac * n * n
    assert prompts_from_map(rough, cfg).num_components == 0
    assert prompts_from_map(rough, cfg, view_area=112 * 112).num_components == 1
    engine, image = _engine(), _image(3, n)
    prepared = [normalise_image(image)]
    with engine.using(tiling=112):
        tiled = _mmr(engine, image, rough)  # segment's path
        folder = engine._masks_for(prepared, [image_key(prepared[0][0])], [rough], "metal plate",
                                   Stepper(None, None), 0.0, 1.0, view_sides=[112])[0]  # segment_folder's path
    assert tiled.prompts.num_components == 0 and folder.prompts.num_components == 1
    folder = dataclasses.replace(folder, provenance={**folder.provenance, "folder": {"tiles": {"side": 112}}})
    with engine.using(tiling="off"):
        assert engine.remask(folder).prompts.num_components == 1
        assert engine.remask(tiled).prompts.num_components == 0


def test_crop_masks_are_in_image_coordinates():
    """A translated image (by a multiple of the window grid's stride) refined with the translated prompts gives
    exactly the translated SAM maps, and the map is SAM's own decode of the crop placed at the crop's box."""
    engine = _engine()
    n = 768
    a = _image(1, n)
    shift = (128, 192)
    b = np.roll(a, shift, axis=(0, 1))
    box = np.array([[300, 340, 330, 420]], np.float32)
    point = np.array([[315, 380]], np.float32)
    st_ = {"sam_crops": "on", "alpha": 0.0, "min_predicted_iou": 0.0, "max_outside_box": 1.0}
    with engine.using(embed_without_prompts=False):  # results without prompts, to refine
        ra, rb = _mmr(engine, a, np.zeros((n, n), np.float32)), _mmr(engine, b, np.zeros((n, n), np.float32))
    fa = engine.refine(ra, point, [1], box, image=a, settings=st_)
    fb = engine.refine(rb, point + shift, [1], box + [*shift, *shift], image=b, settings=st_)
    (crop,) = fa.provenance["sam_crops"]
    assert fa.provenance["sam_input"] == "crops" and crop["scale"] == 1.0
    r0, c0, r1, c1 = crop["box"]
    assert fb.provenance["sam_crops"][0]["box"] == [r0 + shift[0], c0 + shift[1], r1 + shift[0], c1 + shift[1]]
    assert fa.final_map.shape == (n, n) and fa.final_map[r0:r1, c0:c1].max() > 0
    outside = fa.final_map.copy()
    outside[r0:r1, c0:c1] = 0
    assert not outside.any()  # the crop's map lies in the crop's box of the image
    np.testing.assert_array_equal(np.roll(fa.final_map, shift, axis=(0, 1)), fb.final_map)
    np.testing.assert_array_equal(np.roll(fa.mask, shift, axis=(0, 1)), fb.mask)

    # SAM itself on the crop: the same prompts in the crop's coordinates, the merge of the same rule
    from napari_clipsam.mmr.levels import component_maps

    with engine.using(**st_):
        emb = engine.sam.embed(np.ascontiguousarray(a[r0:r1, c0:c1]))
        own = group_user_prompts(point - [r0, c0], [1], box - [r0, c0, r0, c0], (r1 - r0, c1 - c0))
        maps = component_maps(engine.sam, emb, own, (r1 - r0, c1 - c0), engine.config)
    np.testing.assert_allclose(fa.final_map[r0:r1, c0:c1], maps[0], atol=1e-6)


def test_one_encoder_run_per_crop_and_refine_reuses_the_crop_embedding():
    engine = _engine()
    image = _image(2)
    with engine.using(**ON):  # two blobs close together (one crop), two apart
        result = _mmr(engine, image, _blobs([(300, 300), (330, 360), (900, 700), (600, 1150)]))
    crops = result.provenance["sam_crops"]
    assert result.prompts.num_components == 4 and len(crops) == 3
    assert result.provenance["sam_input"] == "crops" and result.provenance["thresholds"]["sam_crops"] == "on"
    assert 1 <= len(crops) <= result.prompts.num_components
    assert sorted(c for crop in crops for c in crop["components"]) == list(range(result.prompts.num_components))
    info = engine.cache_info().sam_embeddings
    assert info.misses == len(crops) and info.currsize == len(crops)  # one encoder run per distinct crop
    for crop in crops:  # each component's prompts lie in its crop
        r0, c0, r1, c1 = crop["box"]
        for c in crop["components"]:
            b = result.boxes[c]
            assert r0 <= b[0] and c0 <= b[1] and b[2] <= r1 and b[3] <= c1

    # an edit: every point moved by 2 px, the boxes kept; decoded on the cached crop embeddings, no encoder run
    with engine.using(**ON):
        edited = engine.refine(result, result.points + 2.0, result.point_labels, result.boxes)
    after = engine.cache_info().sam_embeddings
    assert after.misses == info.misses and after.hits >= info.hits + len(crops)
    assert [c["box"] for c in edited.provenance["sam_crops"]] == [c["box"] for c in crops]
    assert edited.final_map.shape == image.shape[:2]

    # a box far from every crop: its crop is not cached, so the image is needed (and then embedded once)
    far = [[1180, 20, 1220, 60]]
    used = {tuple(c["box"]) for c in crops}
    assert not any(b[0] <= 1180 and b[1] <= 20 and 1220 <= b[2] and 60 <= b[3] for b in used)
    with engine.using(**ON), pytest.raises(EngineMismatchError, match="image="):
        engine.refine(result, None, None, far)
    with engine.using(**ON):
        engine.refine(result, None, None, far, image=image)
    assert engine.cache_info().sam_embeddings.misses == info.misses + 1


def test_squashed_path_when_off_and_for_small_images():
    engine = _engine()
    image = _image(2)
    with engine.using(sam_crops="off"):
        off = _mmr(engine, image, _blobs([(300, 300), (900, 700)]))
    assert off.provenance["sam_input"] == "whole image" and "sam_crops" not in off.provenance
    assert engine.cache_info().sam_embeddings.misses == 1
    with engine.using(**ON):
        small = _mmr(engine, _image(2, 200), _blobs([(100, 100)], 200))
    assert small.provenance["sam_input"] == "whole image"  # not larger than SAM's input: nothing to crop
    from napari_clipsam.engine.sam_crops import crops_apply

    with engine.using(sam_crops="auto"):  # auto follows the tiling rule, 1.5 SAM inputs at least
        assert crops_apply(engine, (1280, 1280)) and not crops_apply(engine, (1000, 4000))
        with engine.using(tiling="off"):
            assert not crops_apply(engine, (4096, 4096))


def test_progress_per_crop_and_cancel_between_crops():
    engine = _engine(embedding_cache_bytes=0)  # memory only: a cleared embedding is gone
    image = _image(3)
    rough = _blobs([(200, 200), (900, 700), (600, 1150)])
    seen = []
    with engine.using(**ON):
        result = _mmr(engine, image, rough, progress=lambda s, f: seen.append((s, f)))
    n = len(result.provenance["sam_crops"])
    assert n == 3
    enc = [f for s, f in seen if s == "sam encoder"]
    blocks = len(engine.sam.model.image_encoder.blocks)
    assert len(enc) >= n * (1 + blocks) and [f for _, f in seen] == sorted(f for _, f in seen)
    engine.clear_caches("embedding")
    before = engine.cache_info().sam_embeddings.misses

    def cancelled():  # once the first crop's embedding is made and kept
        return engine.cache_info().sam_embeddings.currsize >= 1

    with engine.using(**ON), pytest.raises(Cancelled, match="sam encoder"):
        _mmr(engine, image, rough, cancelled=cancelled)
    assert engine.cache_info().sam_embeddings.misses == before + 1  # stopped between crops, n - 1 never run


def _coarse_rough(mask, grow=12):
    """A rough map as a tiled CLIP gives it for a thin defect: a soft blob reaching ``grow`` px beyond it (its
    patches are 28 image pixels wide), 0.8 inside."""
    from scipy import ndimage as ndi

    blob = ndi.binary_dilation(mask, iterations=grow).astype(np.float32)
    return (0.8 * ndi.gaussian_filter(blob, 3.0)).astype(np.float32)


def _defect_iou(result, mask):
    """IoU of the drawn defect with the objects (instances) that touch it."""
    ids = np.unique(result.instances[mask & (result.instances > 0)])
    obj = np.isin(result.instances, ids[ids > 0])
    return float((obj & mask).sum() / max(1, (obj | mask).sum())), int(obj.sum())


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_thin_scratch_mask_from_crops_beats_the_squashed_image(seed):
    """With a SAM whose masks resolve what its input shows (tests/dark_sam.py), a 2-px scratch's object on a 1280²
    image: on the crop (full resolution) it follows the scratch; squashed 5× it is lost and the object is the rough
    map's blob. Same rough map, prompts and merge for both. Measured (seeds 0, 1, 2): crops IoU 0.71, 0.41, 0.59;
    squashed 0.08, 0.08, 0.11."""
    from dark_sam import make_dark_sam
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip
    from test_tiling import _scratch

    clip, tok = make_tiny_clip(0)
    engine = ClipSAM.from_models(clip, tok, make_dark_sam(), None, ClipSAMConfig(
        image_size=56, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch"))
    image, mask = _scratch(_image(7 + seed), np.random.default_rng(seed), 40)
    rough = _coarse_rough(mask)
    with engine.using(sam_crops="on"):
        crops = _mmr(engine, image, rough)
    with engine.using(sam_crops="off"):
        squashed = _mmr(engine, image, rough)
    assert crops.provenance["sam_input"] == "crops" and squashed.provenance["sam_input"] == "whole image"
    (iou_c, area_c), (iou_s, area_s) = _defect_iou(crops, mask), _defect_iou(squashed, mask)
    print(f"scratch {mask.sum()} px: crops IoU {iou_c:.3f} ({area_c} px), squashed {iou_s:.3f} ({area_s} px)")
    assert iou_c >= iou_s + 0.25 and iou_c >= 0.35
    assert crops.mask.shape == mask.shape and (crops.mask & mask).sum() >= 0.5 * mask.sum()


@functools.lru_cache(maxsize=None)
def _large_metal(seed: int) -> np.ndarray:
    """A 4096×3072 synthetic metal image (drawing one takes about a minute; the issue-24 tests share them)."""
    from napari_clipsam.data.synthetic import synthetic_image

    image = synthetic_image("metal", None, 4096, seed)[0][:3072]
    image.flags.writeable = False
    return image


def _issue_24_case():
    """The issue's engine and images: tiny CLIP at 224 px with SAM resolving what it sees (tests/dark_sam.py),
    three defect-free 4096×3072 references set, and a 2×70-px dark scratch (≤ 0.02 % of the image)."""
    from dark_sam import make_dark_sam
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip
    from test_tiling import _scratch

    clip, tok = make_tiny_clip(0, image_size=224)
    engine = ClipSAM.from_models(clip, tok, make_dark_sam(), None, ClipSAMConfig(
        image_size=224, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch", fewshot_weight=1.0))
    engine.set_normal_references([_large_metal(100 + i) for i in range(3)], cache=False)
    image, mask = _scratch(_large_metal(7), np.random.default_rng(1), 70)
    assert mask.mean() <= 0.0002
    return engine, image, mask


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured 2026-12-07: tiled AUROC 0.999 (off: 0.565), the scratch's peak "
                   "0.517 is above τ_prompt 0.5 but only 680 px pass τ, under min_component_frac × 12.6 MP = 2516 px, "
                   "so no object. The few-shot map is calibrated per patch, so normal 4096×3072 images also pass τ "
                   "(67-1936 px, peaks 0.51-0.58 over five): with the size rule of one tile the scratch gets an "
                   "object (491 px) but the normal images 0-10 objects each. A folder of the product gives the "
                   "object without them: test_issue_24_4096x3072_thin_scratch_in_a_folder")
def test_issue_24_4096x3072_thin_scratch():
    """The issue's case end to end, with references only: tiled CLIP + SAM crops: the scratch ranks high (pixel
    AUROC ≥ 0.9) and gets an object of its own size; with tiling="off" (CLIP and SAM squashed) it does not."""
    from napari_clipsam.metrics.classification import auroc

    engine, image, mask = _issue_24_case()
    out = {}
    for tiling in ("auto", "off"):
        r = engine.segment(image, "metal plate", settings={"tiling": tiling})
        out[tiling] = (auroc(r.rough_map.ravel(), mask.ravel()), *_defect_iou(r, mask), r.provenance["sam_input"])
        print(f"4096×3072 scratch ({mask.sum()} px), tiling {tiling}: AUROC {out[tiling][0]:.3f}, object IoU "
              f"{out[tiling][1]:.3f} ({out[tiling][2]} px), SAM on {out[tiling][3]}")
    auc, iou, area, sam_input = out["auto"]
    assert auc >= 0.9 and 0 < area <= 0.002 * mask.size and sam_input == "crops"
    auc_off, iou_off, area_off, sam_off = out["off"]
    assert sam_off == "whole image" and (auc_off < 0.9 or area_off == 0 or area_off > 0.002 * mask.size)


@pytest.mark.slow
def test_issue_24_4096x3072_thin_scratch_in_a_folder():
    """The same scratch and references, segmented as a person labelling one product's folder would: the scratch
    image and five normal 4096×3072 images through segment_folder (mutual scoring tile position by tile position,
    fused with the tiled few-shot map; its size rule is one tile's, see prompts_from_map). The scratch gets an
    object of its own size on it and the normal images none; squashed (tiling "off") it gets none. Measured
    2026-12-07 (2 cores, ~4 min with the images drawn): AUROC 0.9998, peak 0.650, one object of 594 px holding
    75 of the scratch's 162 px; normal images' peaks 0.34-0.41, no pixel above τ_prompt, so the scratch image is
    the first of the folder by image score (the mutual score alone ranked it third)."""
    from napari_clipsam.metrics.classification import auroc

    engine, image, mask = _issue_24_case()
    folder = [image] + [_large_metal(200 + i) for i in range(5)]
    out = {}
    for tiling in ("auto", "off"):
        results = engine.segment_folder(folder, "metal plate", settings={"tiling": tiling})
        r = results[0]
        out[tiling] = (auroc(r.rough_map.ravel(), mask.ravel()), *_defect_iou(r, mask), r.provenance["sam_input"],
                       [x.num_instances for x in results[1:]], results[0].provenance["folder"].get("tiles"))
        print(f"4096×3072 folder of 6, tiling {tiling}: scratch AUROC {out[tiling][0]:.4f}, object IoU "
              f"{out[tiling][1]:.3f} ({out[tiling][2]} px), SAM on {out[tiling][3]}; normal images' objects "
              f"{out[tiling][4]}, peaks {[round(float(x.rough_map.max()), 3) for x in results[1:]]}")
        if tiling == "auto":  # with the references in the fused map its maximum is the score: worst first
            assert results[0].provenance["folder"]["image_score_from"] == "fused map"
            assert results[0].image_score > max(x.image_score for x in results[1:])
    auc, iou, area, sam_input, normal_objects, tiles = out["auto"]
    assert tiles == {"side": 448, "per_image": 108} and sam_input == "crops"
    assert auc >= 0.9 and 0 < area <= 0.002 * mask.size and iou > 0
    assert normal_objects == [0] * 5
    auc_off, iou_off, area_off, sam_off, _, tiles_off = out["off"]
    assert tiles_off is None and sam_off == "whole image"
    assert auc_off < 0.9 or area_off == 0 or area_off > 0.002 * mask.size


def test_bench_reports_time_per_megapixel_for_a_large_image():
    from napari_clipsam.bench.large import large_image_figures

    engine = _engine()
    lines = []
    with engine.using(tiling=224):
        out = large_image_figures(engine, 600, lines.append)
    assert out["tiles"] > 1 and out["tiled"]["sam_input"] == "crops" and out["tiled"]["crops"] >= 1
    assert out["squashed"]["sam_input"] == "whole image"
    for name in ("tiled", "squashed"):
        assert out[name]["s_per_mp"] == pytest.approx(out[name]["total_s"] / out["megapixels"])
        assert {"clip", "sam encoder"} <= set(out[name]["stages_s"])
    assert "s/MP" in lines[-1]
