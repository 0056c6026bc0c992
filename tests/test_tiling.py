"""Issue 24: the tiled CLIP stage finds small defects on large images that the squashed image loses.

The geometry (grid, window, blending) is checked exactly; the quality on synthetic large images with the tiny
random CLIP and three defect-free references of the same size (few-shot map only: a random CLIP's text map says
nothing). Figures in docs/method.md#large-images-tiling."""
from __future__ import annotations

import numpy as np
import pytest

from napari_clipsam.clip.tiling import (AUTO_SCALE, OVERLAP, Blender, blend_window, reference_tile_views,
                                        tile_grid, tile_side)
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.errors import Cancelled, ConfigError
from napari_clipsam.metrics.classification import auroc
from napari_clipsam.mmr.prompts import prompts_from_map

DARK = np.array([18.0, 16.0, 14.0])
RUST = np.array([120.0, 45.0, 15.0])


@pytest.mark.parametrize("shape,tile", [((2048, 2048), 448), ((3072, 4096), 448), ((500, 130), 112), ((96, 96), 96)])
def test_grid_covers_the_image_with_overlap(shape, tile):
    boxes = tile_grid(shape, tile)
    cover = np.zeros(shape, int)
    for r0, c0, r1, c1 in boxes:
        assert (r1 - r0, c1 - c0) == (min(tile, shape[0]), min(tile, shape[1]))
        assert 0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]
        cover[r0:r1, c0:c1] += 1
    assert cover.min() >= 1  # every pixel, the border included
    rows = sorted({b[0] for b in boxes})
    if len(rows) > 1:  # neighbours share at least OVERLAP of the side
        assert max(np.diff(rows)) <= round(tile * (1 - OVERLAP))
        assert rows[-1] + min(tile, shape[0]) == shape[0]


def test_blend_of_a_constant_is_the_constant_and_window_is_smooth():
    shape = (300, 410)
    blender = Blender(shape)
    for r0, c0, r1, c1 in tile_grid(shape, 128):
        blender.add((r0, c0, r1, c1), np.full((r1 - r0, c1 - c0), 0.3, np.float32))
    np.testing.assert_allclose(blender.result(), 0.3, atol=1e-6)
    w = blend_window(64, 64)
    assert w.min() > 0 and w.max() <= 1 and w[32, 32] > 0.99 and w[0, 0] < 0.01


def test_tile_rule_and_setting_check():
    assert tile_side((2048, 2048), "auto", 224) == AUTO_SCALE * 224
    assert tile_side((1944, 2592), "auto", 336) == 672 and len(tile_grid((1944, 2592), 672)) == 4 * 5
    assert tile_side((1000, 4000), "auto", 224) is None  # short side under 1024 px: squashed as before
    assert tile_side((1100, 1100), "auto", 518) is None  # under 1.5 tiles of 1036 px
    assert tile_side((2048, 2048), "off", 224) is None
    assert tile_side((2048, 2048), 512, 224) == 512
    assert tile_side((400, 400), 512, 224) is None
    for bad in ("on", 16, 1.5, True, None):
        with pytest.raises(ConfigError, match="tiling"):
            ClipSAMConfig(tiling=bad)
    assert ClipSAMConfig().tiling == "auto" and "tiling" in ClipSAMConfig().thresholds()


def test_reference_views_are_bounded():
    rgb = np.zeros((600, 600, 3), np.uint8)
    views, sources = reference_tile_views([rgb] * 3, 100, augment=False, limit=20)
    assert len(views) == len(sources) == 20 and sources == sorted(sources) and set(sources) == {0, 1, 2}
    views, sources = reference_tile_views([rgb, rgb + 1], 300, augment=True, limit=20)  # 18 tiles + 2 views
    assert len(views) == len(sources) == 20 and sources[:18] == [0] * 9 + [1] * 9 and sources[18:] == [0, 0]
    assert (views[18] == views[0][::-1]).all()  # the first tile flipped, from the first reference
    assert len(reference_tile_views([rgb], 300, augment=False, limit=20)[0]) == 9


def _scratch(img, rng, length, width=2):
    """A thin dark straight scratch ``width`` px wide and ``length`` px long, away from the border."""
    n = img.shape[0]
    out, m = img.astype(float), np.zeros(img.shape[:2], bool)
    r, c = rng.integers(n // 4, 3 * n // 4, 2)
    a = rng.uniform(0, np.pi)
    for t in np.linspace(0, length, 6 * length):
        rr, cc = int(r + t * np.sin(a)), int(c + t * np.cos(a))
        m[rr:rr + width, cc:cc + width] = True
    out[m] = 0.2 * out[m] + 0.8 * DARK
    return out.round().astype(np.uint8), m


def _blob(img, rng, radius):
    n = img.shape[0]
    r, c = rng.integers(n // 4, 3 * n // 4, 2)
    yy, xx = np.ogrid[:n, :n]
    m = np.hypot(yy - r, xx - c) <= radius
    out = img.astype(float)
    out[m] = 0.3 * out[m] + 0.7 * RUST
    return out.round().astype(np.uint8), m


def _measure(engine, image, mask, tiling):
    """(pixel AUROC, area of the rough-map component on the defect or 0) with ``tiling``."""
    with engine.using(tiling=tiling, fewshot_weight=1.0):
        rough = engine.rough_maps_for_images([image], "metal plate")[0]
        comp = prompts_from_map(rough, engine.config).components
    hit = np.unique(comp[mask & (comp > 0)]) if comp is not None else []
    area = max((int((comp == lab).sum()) for lab in hit), default=0)
    return auroc(rough.ravel(), mask.ravel()), area


def _engine(size, **config):
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    clip, tok = make_tiny_clip(0, image_size=size)
    cfg = ClipSAMConfig(image_size=size, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch", **config)
    return ClipSAM.from_models(clip, tok, make_tiny_sam(0), None, cfg)


def test_thin_scratch_ranks_high_with_tiling():
    """Default-run form: 56-px tiny CLIP (4×4 patches a tile), 400² metal, 112-px tiles, one reference, a
    2×14-px scratch: the tiled map ranks it high, the squashed one does not."""
    n = 400
    engine = _engine(56, fewshot_augment=False, fewshot_bank_size=512)
    engine.set_normal_references([synthetic_image("metal", None, n, 100)[0]], cache=False)
    image, mask = _scratch(synthetic_image("metal", None, n, 7)[0], np.random.default_rng(4), 14)
    assert mask.mean() <= 0.0002
    tiled, _ = _measure(engine, image, mask, 112)
    squashed, _ = _measure(engine, image, mask, "off")
    print(f"400² scratch: tiled AUROC {tiled:.3f}, squashed {squashed:.3f}")
    assert tiled >= 0.9 > squashed


@pytest.mark.slow
def test_small_scratch_found_with_tiling_not_squashed():
    """Fast form: 112-px tiny CLIP, 640² metal images (4×4 tiles of 224 px), a 2-px-wide, 25-px-long scratch
    (0.02 % of the image at most); references without augmentation to keep it quick."""
    n = 640
    engine = _engine(112, fewshot_augment=False, fewshot_bank_size=2048)
    engine.set_normal_references([synthetic_image("metal", None, n, 100 + i)[0] for i in range(3)], cache=False)
    image, mask = _scratch(synthetic_image("metal", None, n, 7)[0], np.random.default_rng(4), 25)
    assert mask.mean() <= 0.0002
    tiled, area = _measure(engine, image, mask, 224)
    squashed, area_off = _measure(engine, image, mask, "off")
    print(f"640² scratch: tiled AUROC {tiled:.3f} (component {area} px, defect {mask.sum()} px), "
          f"squashed {squashed:.3f} (component {area_off} px)")
    assert tiled >= 0.9 > squashed
    assert 0 < area <= 0.01 * n * n  # found, as an object near its own size, not a large part of the image
    assert area_off == 0  # squashed, no object touches it


def test_tiles_report_progress_and_cancel_between_tiles():
    engine = _engine(56)
    image = synthetic_image("metal", None, 300, 1)[0]
    seen = []
    with engine.using(tiling=112):
        calls = {"n": 0}

        def cancelled():
            calls["n"] += 1
            return calls["n"] > 3

        from napari_clipsam.engine.progress import Stepper
        from napari_clipsam.io.images import image_key, normalise_image

        prepared = [normalise_image(image)]
        step = Stepper(lambda s, f: seen.append((s, f)), None)
        engine._rough_maps_for(prepared, [image_key(prepared[0][0])], engine.text_embeddings("metal plate"),
                               "metal plate", step, 0.0, 1.0)
        fractions = [f for s, f in seen if s == "clip"]
        assert len(fractions) >= len(tile_grid(image.shape, 112)) and fractions == sorted(fractions)
        engine.clear_caches("features")
        with pytest.raises(Cancelled):
            engine.segment(image, "metal plate", cancelled=cancelled)


def test_segment_with_tiles_caches_features_per_tile():
    engine = _engine(56)
    image = synthetic_image("metal", None, 200, 2)[0]
    n_tiles = len(tile_grid(image.shape, 112))
    result = engine.segment(image, "metal plate", settings={"tiling": 112})
    assert result.rough_map.shape == (200, 200) and result.provenance["thresholds"]["tiling"] == 112
    assert engine.cache_info().clip_features.misses == n_tiles  # one CLIP pass a tile
    again = engine.segment(image, "metal plate", settings={"tiling": 112})
    assert engine.cache_info().clip_features.misses == n_tiles  # tile features cached, keyed by box and side
    np.testing.assert_array_equal(again.rough_map, result.rough_map)
    other = engine.segment(image, "metal plate", settings={"tiling": 150})  # another side: other tiles
    assert engine.cache_info().clip_features.misses == n_tiles + len(tile_grid(image.shape, 150))
    assert not np.array_equal(other.rough_map, result.rough_map)
    assert engine.segment(image, "metal plate", settings={"tiling": "off"}).provenance["thresholds"]["tiling"] == "off"


@pytest.mark.slow
@pytest.mark.parametrize("defect", ["scratch", "blob"])
def test_issue_24_large_image_2048(defect):
    """The issue's case: 224-px tiny CLIP, 2048² metal, three references; a 2×70-px scratch or a 28-px stain."""
    n = 2048
    engine = _engine(224)
    engine.set_normal_references([synthetic_image("metal", None, n, 100 + i)[0] for i in range(3)], cache=False)
    base = synthetic_image("metal", None, n, 7)[0]
    rng = np.random.default_rng(1)
    image, mask = _scratch(base, rng, 70) if defect == "scratch" else _blob(base, rng, 14)
    assert mask.mean() <= 0.0002
    tiled, area = _measure(engine, image, mask, "auto")
    squashed, area_off = _measure(engine, image, mask, "off")
    print(f"2048² {defect}: tiled AUROC {tiled:.3f} (component {area} px), squashed {squashed:.3f} "
          f"(component {area_off} px), defect {mask.sum()} px")
    assert tiled >= 0.9 and 0 < area <= 0.002 * n * n
    if defect == "scratch":
        assert squashed < 0.9 or area_off == 0
    with engine.using(tiling="auto", fewshot_weight=1.0):  # a normal large image gives no component
        normal = engine.rough_maps_for_images([synthetic_image("metal", None, n, 55)[0]], "metal plate")[0]
        assert prompts_from_map(normal, engine.config).num_components == 0, f"normal peak {normal.max():.3f}"


def test_tiled_calibration_leaves_out_the_whole_reference_image():
    """Overlapping tiles of one reference are near-copies: calibrated against its own image's other tiles, the
    scale is ~0 (every normal patch of a new image would then score near 1); with the tiles grouped by reference,
    the scale is the distance between different references."""
    import torch

    from napari_clipsam.clip.fewshot import NormalBank

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 8, 4, 4, generator=g), torch.randn(1, 8, 4, 4, generator=g)
    tokens = [torch.cat([a, a + 1e-4, b, b + 1e-4])]  # two "tiles" of each of two references
    own_view = NormalBank.build(tokens, (1,), ["a", "b"], bank_size=64).banks[0].scale
    per_image = NormalBank.build(tokens, (1,), ["a", "b"], bank_size=64, groups=[0, 0, 1, 1]).banks[0].scale
    assert own_view < 1e-3 < 0.3 < per_image
    one_source = NormalBank.build(tokens, (1,), ["a"], bank_size=64, groups=[0, 0, 0, 0]).banks[0].scale
    assert one_source == own_view  # one reference: nothing else to compare with, its own view is left out
    with pytest.raises(ValueError, match="3 source numbers for 4"):
        NormalBank.build(tokens, (1,), ["a"], bank_size=64, groups=[0, 0, 1])


def test_a_stack_and_the_folder_review_of_large_images_are_tiled(tmp_path):
    """Issue 24: stacks and the folder review treat large images as single ones do: every frame of an N×H×W×3
    stack is tiled (one CLIP pass a tile), and the review's folder scoring (five large images, mutual scoring)
    compares them tile position by tile position, each result at full resolution."""
    from PIL import Image

    from napari_clipsam.review import QASession
    from napari_clipsam.review.scoring import score_folder

    n, side = 384, 128
    per_image = len(tile_grid((n, n), side))
    engine = _engine(56, prompt_threshold=1.0)  # the CLIP stage is what is tested: no prompt, no SAM
    stack = np.stack([synthetic_image("metal", None, n, s)[0] for s in (1, 2)])
    with engine.using(tiling=side):
        frames = engine.segment_many(stack, "metal plate")
    assert [r.rough_map.shape for r in frames] == [(n, n)] * 2
    assert engine.cache_info().clip_features.misses == 2 * per_image
    folder = tmp_path / "images"
    folder.mkdir()
    for s in range(5):
        Image.fromarray(synthetic_image("metal", None, n, 10 + s)[0]).save(folder / f"plate{s}.png")
    scored = score_folder(engine, QASession(folder, tmp_path / "labels"), "metal plate", settings={"tiling": side})
    assert scored.mode == "mutual" and len(scored.results) == 5
    for result in scored.results.values():
        assert result.rough_map.shape == (n, n)
        assert result.provenance["folder"]["tiles"] == {"side": side, "per_image": per_image}
    assert engine.cache_info().clip_features.misses == 7 * per_image
