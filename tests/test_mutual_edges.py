"""Edge cases of folder mutual scoring (``ClipSAM.segment_folder``, method §5): the smallest folder, identical
images, a folder with no normal image, a defect repeated in most images (the method's premise), every input kind
(gray, 16-bit, RGBA) and a cancel during the scoring itself. Tiny random CLIP at 112 px (an 8×8 patch grid)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_clipsam.clip import mutual
from napari_clipsam.data.synthetic import synthetic_image
from napari_clipsam.errors import Cancelled

PX = 112


@pytest.fixture(scope="module")
def eng():
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.clipsam import ClipSAM
    from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

    clip, tok = make_tiny_clip(0, image_size=PX)
    cfg = ClipSAMConfig(image_size=PX, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch",
                        mutual_radii=(1, 3), embed_without_prompts=False)  # SAM runs only where there are prompts
    return ClipSAM.from_models(clip, tok, make_tiny_sam(0), None, cfg)


def _images(n_good: int, defects: list[str | None], category="metal", seed=0):
    kinds = [None] * n_good + list(defects)
    return [synthetic_image(category, d, PX, seed * 1000 + i) for i, d in enumerate(kinds)]


def test_exactly_five_images_give_five_finite_results(eng):
    ims = [im for im, _ in _images(3, ["stain", "hole"])]
    results = eng.segment_folder(ims, "metal plate")
    assert len(results) == 5
    assert all(r.provenance["folder"]["size"] == 5 for r in results)
    assert all(np.isfinite(r.rough_map).all() and np.isfinite(r.final_map).all() for r in results)
    with pytest.raises(Exception, match="at least 5 images.*got 4"):
        eng.segment_folder(ims[:4], "metal plate")


def test_identical_images_give_no_object_and_finite_maps(eng):
    im, _ = synthetic_image("metal", "stain", PX, 3)  # even a defective image: nothing is odd among its copies
    results = eng.segment_folder([im] * 6, "metal plate")
    assert all(r.num_instances == 0 for r in results)
    assert all(np.isfinite(r.rough_map).all() and r.rough_map.max() < 0.1 for r in results)
    assert len({r.image_score for r in results}) == 1 and results[0].image_score < 0.1


def test_all_defective_folder_still_ranks_defect_pixels_first(eng):
    """No normal image: each defect is still unlike the other images' patches, so defect pixels rank first; the
    calibration's scale then comes from defective images (documented: weaker defects may stay under τ_prompt)."""
    from napari_clipsam.metrics.pixel import pixel_auroc

    items = _images(0, ["stain", "hole", "scratch", "crack", "stain", "hole", "scratch", "crack"], seed=1)
    results = eng.segment_folder([im for im, _ in items], "metal plate")
    maps = np.stack([r.rough_map for r in results])
    masks = np.stack([m for _, m in items])
    assert np.isfinite(maps).all()
    assert pixel_auroc(maps, masks) > 0.8
    on_defect = [bool((r.mask & m).any()) for r, (_, m) in zip(results, items)]
    assert sum(on_defect) >= 2  # the strongest defects of the folder still get an object


def _premise_folder(n: int, repeated: int, seed=0):
    """n tokens maps (C=16, 6×6) of one texture; the same defect token at the same cell in ``repeated`` images."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 16, 6, 6, generator=g)
    t = base + 0.05 * torch.randn(n, 16, 6, 6, generator=g)
    defect = 3.0 * torch.randn(16, generator=g)
    t[:repeated, :, 2, 3] += defect
    return t


@pytest.mark.parametrize("n", [8, 12])
def test_a_defect_repeated_in_many_images_reads_as_normal(n):
    """The premise (docs/method.md, 'What mutual scoring assumes'): a patch is normal when it has a close match in
    the k = ceil(interval·(N − 1)) most similar other images. A defect repeated in m other images keeps only
    (k − m)/k of its score, and once m ≥ k it scores as low as a normal patch."""
    k = math.ceil(0.3 * (n - 1))
    unique = float(mutual.mutual_scores([_premise_folder(n, 1)], radii=(1,), interval=0.3)[0, 2, 3])
    for m in range(0, n - 1):
        s = mutual.mutual_scores([_premise_folder(n, m + 1)], radii=(1,), interval=0.3)
        normal = float(s[m + 1:].flatten().max())  # the most anomalous patch of an image without the defect
        if m >= k:
            assert float(s[0, 2, 3]) <= normal + 0.02
        else:
            assert float(s[0, 2, 3]) == pytest.approx(unique * (k - m) / k, rel=0.1, abs=0.02)


def test_repeated_defect_in_a_real_folder_loses_its_object(eng):
    """The same stain pasted at the same place in 7 of 10 images: in the folder it is 'how this product looks'."""
    clean = [synthetic_image("metal", None, PX, 50 + i)[0] for i in range(10)]
    stain = np.zeros((PX, PX), bool)
    stain[40:64, 50:74] = True

    def paste(im):
        out = im.copy()
        out[stain] = (20, 200, 40)
        return out

    once = [paste(clean[0])] + clean[1:]
    most = [paste(im) if i < 7 else im for i, im in enumerate(clean)]
    r_once = eng.segment_folder(once, "metal plate")[0]
    r_most = eng.segment_folder(most, "metal plate")[0]
    assert (r_once.mask & stain).any()
    assert not (r_most.mask & stain).any()
    assert r_most.rough_map[stain].mean() < 0.5 * r_once.rough_map[stain].mean()


def test_gray_16bit_and_rgba_folders_equal_their_rgb_equivalents(eng):
    items = _images(3, ["stain", "hole"], seed=2)
    gray = [im.mean(axis=2).round().astype(np.uint8) for im, _ in items]
    as_rgb = [np.repeat(g[..., None], 3, axis=2) for g in gray]
    want = eng.segment_folder(as_rgb, "metal plate")
    got_gray = eng.segment_folder(gray, "metal plate")
    sixteen = [g.astype(np.uint16) * 257 for g in as_rgb]
    got_16 = eng.segment_folder(sixteen, "metal plate", contrast_limits=(0, 65535))
    rgba = [np.dstack([g, np.full(g.shape[:2], 255, np.uint8)]) for g in as_rgb]
    got_rgba = eng.segment_folder(rgba, "metal plate")
    for got in (got_gray, got_16, got_rgba):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.rough_map, b.rough_map)
            np.testing.assert_array_equal(a.mask, b.mask)
            assert a.image_score == b.image_score
    # a 16-bit stack (N×H×W) without contrast limits: rescaled per image, still one finite result each
    stack16 = np.stack([g.astype(np.uint16) * 100 for g in gray])
    out = eng.segment_folder(stack16, "metal plate")
    assert len(out) == len(gray) and all(np.isfinite(r.rough_map).all() for r in out)


def test_cancel_during_mutual_scoring_is_clean(eng):
    """A cancel seen between scoring subsets raises Cancelled; no SAM embedding, no result and no temporary file
    is left, and the same folder then runs to the same results as without the cancel."""
    from napari_clipsam.weights.registry import cache_dir

    ims = [im for im, _ in _images(4, ["stain", "hole"], seed=4)]
    seen = []

    def progress(stage, fraction):
        seen.append(stage)

    polls = []

    def cancelled():  # true once the scoring has begun, and a few subset checks into it
        if "mutual" in seen:
            polls.append(1)
        return len(polls) >= 3

    before = eng.cache_info()
    with pytest.raises(Cancelled, match="mutual scoring"):
        eng.segment_folder(ims, "metal plate", progress=progress, cancelled=cancelled,
                           settings={"mutual_subset_size": 2})
    after = eng.cache_info()
    assert after.sam_embeddings.misses == before.sam_embeddings.misses  # MMR never started
    left = [p for p in cache_dir().rglob("*") if p.name.endswith((".tmp", ".bak"))]
    assert not left
    again = eng.segment_folder(ims, "metal plate", settings={"mutual_subset_size": 2})
    fresh = eng.segment_folder(ims, "metal plate")
    for a, b in zip(again, fresh):
        np.testing.assert_allclose(a.rough_map, b.rough_map, atol=1e-5)
