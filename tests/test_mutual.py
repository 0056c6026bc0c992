"""Folder mutual scoring maths (method §5, napari_clipsam/clip/mutual.py) on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch

from napari_clipsam.clip import mutual
from napari_clipsam.errors import Cancelled, InvalidInputError


def _folder(n=6, c=8, h=5, w=5, seed=0):
    """Tokens of n images that share one 'normal' texture, plus small per-image noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, c, h, w, generator=g)
    return base + 0.05 * torch.randn(n, c, h, w, generator=g)


def test_prepare_tokens_normalises_and_averages_existing_cells_only():
    t = torch.randn(2, 4, 3, 3)
    x = mutual.prepare_tokens(t, 1)
    assert x.shape == (2, 9, 4)
    torch.testing.assert_close(x.norm(dim=2), torch.ones(2, 9))
    x3 = mutual.prepare_tokens(t, 3)
    n = torch.nn.functional.normalize(t, dim=1)
    corner = torch.nn.functional.normalize(n[:, :, :2, :2].mean(dim=(2, 3)), dim=1)  # 4 cells exist at a corner
    torch.testing.assert_close(x3[:, 0], corner)
    with pytest.raises(InvalidInputError):
        mutual.prepare_tokens(t, 2)


def test_nearest_distance_is_the_definition():
    layers = [_folder(5)]
    x = mutual.prepare_tokens(layers[0], 1)
    d = mutual.nearest_distances(x, subset_size=2)
    i, j, p = 3, 1, 7
    want = (1 - x[i, p] @ x[j].T).min().clamp(min=0)
    torch.testing.assert_close(d[i, j, p], want)


def test_interval_average_takes_the_smallest_ceil_fraction_of_the_others():
    N = 7
    d = torch.arange(N * N, dtype=torch.float32).view(N, N, 1)
    out = mutual.interval_average(d, 0.3)
    k = math.ceil(0.3 * (N - 1))  # 2
    others = [v for j, v in enumerate(d[0, :, 0].tolist()) if j != 0]
    assert out[0, 0].item() == pytest.approx(sum(sorted(others)[:k]) / k)
    others = [v for j, v in enumerate(d[4, :, 0].tolist()) if j != 4]
    assert out[4, 0].item() == pytest.approx(sum(sorted(others)[:k]) / k)


@pytest.mark.parametrize("subset", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("window", [None, 1])
def test_chunked_path_equals_the_plain_fp32_path(subset, window):
    layers = [_folder(5, seed=1), torch.randn(5, 8, 5, 5)]
    fast = mutual.mutual_scores(layers, radii=(1, 3), subset_size=subset, window=window)
    plain = mutual.mutual_scores_plain(layers, radii=(1, 3), window=window)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_exactly_five_images_work_and_find_the_odd_patch():
    t = _folder(5)
    t[2, :, 1, 3] += 3.0  # a defect in image 2
    s = mutual.mutual_scores([t], radii=(1,))
    assert s.shape == (5, 5, 5)
    assert torch.isfinite(s).all()
    assert s[2].flatten().argmax().item() == 1 * 5 + 3
    cal = mutual.calibrate(s)
    assert cal[2, 1, 3] > 0.5
    normal = cal[[0, 1, 3, 4]]
    assert normal.median() < 0.2 and normal.max() < cal[2, 1, 3]
    scores = mutual.image_scores(cal)
    assert scores.argmax().item() == 2


def test_too_few_images_say_how_many_and_suggest_references():
    mutual.check_folder_size(5, 5)
    with pytest.raises(InvalidInputError, match=r"at least 5 images.*got 4.*normal references"):
        mutual.check_folder_size(4, 5)


def test_identical_images_give_finite_low_scores():
    t = torch.randn(1, 8, 4, 4).repeat(6, 1, 1, 1)
    s = mutual.mutual_scores([t, t * 2], radii=(1, 3))
    assert torch.isfinite(s).all() and s.abs().max() < 1e-5
    cal = mutual.calibrate(s)
    assert torch.isfinite(cal).all() and (cal < 0.1).all()
    assert (mutual.image_scores(cal) < 0.1).all()


def test_calibration_is_monotone_and_puts_the_normal_images_top_patch_at_one_half():
    s = torch.rand(8, 4, 4) * 0.1
    s[:, 0, 0] = torch.tensor([0.20, 0.21, 0.22, 0.23, 0.5, 0.6, 0.7, 0.8])  # each image's most anomalous patch
    p = mutual.calibrate(s)
    order = s.flatten().argsort()
    assert (p.flatten()[order].diff() >= 0).all()  # monotone
    scale = torch.tensor([0.20, 0.21, 0.22, 0.23, 0.5, 0.6, 0.7, 0.8]).quantile(mutual.CALIBRATION_QUANTILE)
    s2 = s.clone()
    s2[7, 1, 1] = scale * mutual.CALIBRATION_RATIO  # the per-image maxima (hence the scale) stay as they are
    assert mutual.calibrate(s2)[7, 1, 1].item() == pytest.approx(0.5, abs=1e-4)
    assert p[:4].max() < 0.75  # the normal images' top patches sit around τ ...
    assert (p[:4].flatten(1)[:, 1:] < 0.1).all()  # ... and their other patches far below it
    assert (p[4:, 0, 0] > 0.99).all()  # clear outliers: far above τ


def test_calibration_is_scale_free():
    s = torch.rand(6, 3, 3)
    torch.testing.assert_close(mutual.calibrate(s), mutual.calibrate(s * 7.0))


@pytest.mark.parametrize("subset", [1, 3, 64])
@pytest.mark.parametrize("window", [None, 1])
def test_bf16_path_matches_fp32_within_tolerance_and_keeps_the_ranking(subset, window):
    t = _folder(7, c=32, h=6, w=6, seed=3)
    t[1, :, 2, 2] += 2.0
    t[4, :, 0, 5] += 1.0
    layers = [t, torch.randn(7, 32, 6, 6, generator=torch.Generator().manual_seed(5))]  # not the global RNG
    plain = mutual.mutual_scores_plain(layers, radii=(1, 3), window=window)
    fast = mutual.mutual_scores(layers, radii=(1, 3), subset_size=subset, window=window, fast=True)
    assert (fast - plain).abs().max().item() <= mutual.BF16_TOLERANCE
    assert (fast >= plain - 1e-5).all()  # a swapped nearest patch can only be farther
    cal_f, cal_p = mutual.calibrate(fast), mutual.calibrate(plain)
    assert mutual.image_scores(cal_f).argsort().tolist() == mutual.image_scores(cal_p).argsort().tolist()
    for i in (1, 4):
        assert fast[i].flatten().argmax() == plain[i].flatten().argmax()


def test_interval_scores_equal_the_full_distance_tensor_reduced():
    x = mutual.prepare_tokens(_folder(9, seed=2), 1)
    full = mutual.interval_average(mutual.nearest_distances(x, 4), 0.3)
    for s in (1, 2, 4, 9):
        torch.testing.assert_close(mutual.interval_scores(x, 0.3, s), full)


def test_cancel_between_subsets_raises_cancelled():
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(Cancelled):
        mutual.mutual_scores([_folder(6)], radii=(1,), subset_size=2, cancelled=cancelled)
    assert len(calls) == 3  # checked between subsets, stopped at once


def test_window_compares_only_nearby_positions():
    # image 0's patches are those of the others shifted far: with a window they find no match
    t = _folder(5, h=6, w=6)
    t[0] = torch.roll(t[0], shifts=3, dims=2)
    free = mutual.mutual_scores([t], radii=(1,))
    aligned = mutual.mutual_scores([t], radii=(1,), window=0)
    assert aligned[0].mean() > free[0].mean() + 0.01


def test_fusion_is_the_weighted_mean_of_the_maps_present():
    a, b = torch.full((2, 2), 0.8), torch.full((2, 2), 0.2)
    torch.testing.assert_close(mutual.fuse([a, b, None], [3.0, 1.0, 1.0]), torch.full((2, 2), 0.65))
    with pytest.raises(InvalidInputError):
        mutual.fuse([a, None], [0.0, 1.0])


def test_segment_folder_gives_one_result_per_image_with_mutual_provenance(engine):
    from napari_clipsam.data.synthetic import synthetic_image

    ims = [synthetic_image("metal", None if i < 3 else "stain", 64, i)[0] for i in range(6)]
    results = engine.segment_folder(ims, "metal plate")
    assert len(results) == 6
    for r, im in zip(results, ims):
        assert r.mode == "mutual" and r.rough_map.shape == im.shape[:2]
        assert r.provenance["folder"]["size"] == 6 and r.provenance["image_score"] == r.image_score
        assert 0.0 <= r.image_score <= 1.0
    with pytest.raises(InvalidInputError, match="at least 5 images"):
        engine.segment_folder(ims[:4], "metal plate")
    with pytest.raises(Cancelled):
        engine.segment_folder(ims, "metal plate", cancelled=lambda: True)
    refined = engine.refine(results[4], points=[[10, 10]], point_labels=[1])
    assert refined.image_score == results[4].image_score and refined.provenance["mode"] == "mutual"


def test_calibration_settings_move_the_map_monotonically_and_are_recorded(engine):
    """``mutual_calibration_ratio`` / ``_quantile`` (method §5.5 as settings): a higher ratio lowers every value of
    the folder's map (per patch the same logistic, so the same order), both are recorded, bad values are
    refused."""
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.errors import ConfigError

    ims = [synthetic_image("metal", None if i < 3 else "stain", 64, i)[0] for i in range(6)]
    plain = engine.segment_folder(ims, "metal plate")
    strict = engine.segment_folder(ims, "metal plate", settings={"mutual_calibration_ratio": 1.2})
    low_q = engine.segment_folder(ims, "metal plate", settings={"mutual_calibration_quantile": 0.0})
    for a, b, c in zip(plain, strict, low_q):
        assert (b.rough_map <= a.rough_map + 1e-6).all() and (b.rough_map < a.rough_map - 1e-4).any()
        assert (c.rough_map >= a.rough_map - 1e-6).all()  # the lowest maximum is the smallest scale
    raw = torch.rand(6, 4, 4) + torch.arange(6.0)[:, None, None]  # image i's maximum lies in (i, i + 1)
    scale = raw.flatten(1).amax(1).quantile(0.5)
    torch.testing.assert_close(mutual.calibrate(raw, 0.5, 1.2),
                               torch.sigmoid((raw / scale - 1.2) / mutual.CALIBRATION_WIDTH))
    assert strict[0].provenance["folder"]["settings"]["calibration"]["ratio"] == 1.2
    assert strict[0].provenance["thresholds"]["mutual_calibration_ratio"] == 1.2
    assert plain[0].provenance["folder"]["settings"]["calibration"] == {
        "quantile": 0.25, "ratio": 1.0, "width": mutual.CALIBRATION_WIDTH, "floor": mutual.CALIBRATION_FLOOR}
    with pytest.raises(ConfigError, match="mutual_calibration_ratio"):
        ClipSAMConfig(mutual_calibration_ratio=0.0)
    with pytest.raises(ConfigError, match="mutual_calibration_quantile"):
        ClipSAMConfig(mutual_calibration_quantile=1.5)


def _same_masks(a, b) -> None:
    import numpy as np

    np.testing.assert_array_equal(a.rough_map, b.rough_map)
    np.testing.assert_allclose(a.final_map, b.final_map, atol=1e-6)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.provenance["thresholds"] == b.provenance["thresholds"]


def test_remask_with_other_thresholds_equals_the_folder_run_with_them(engine):
    """Changing τ on a folder result keeps its mutual map: the same masks as segment_folder run with the new τ,
    and no CLIP pass (the plain per-image map is never what a folder result is re-thresholded on)."""
    from napari_clipsam.data.synthetic import synthetic_image

    ims = [synthetic_image("metal", None if i < 3 else "scratch", 64, 40 + i)[0] for i in range(6)]
    low = {"prompt_threshold": 0.3, "mask_threshold": 0.4, "alpha": 0.7}
    results = engine.segment_folder(ims, "metal plate")
    clip_misses = engine.cache_info().clip_features.misses
    expected = engine.segment_folder(ims, "metal plate", settings=low)
    assert engine.cache_info().clip_features.misses == clip_misses  # the folder's features came from the cache
    for r, want in zip(results, expected):
        got = engine.remask(r, settings=low)
        _same_masks(got, want)
        assert got.provenance["mode"] == "mutual" and got.image_score == r.image_score
        assert got.provenance["folder"] == r.provenance["folder"]
    assert engine.cache_info().clip_features.misses == clip_misses
    assert any(w.num_instances != r.num_instances for r, w in zip(results, expected))  # τ mattered here
    back = engine.remask(engine.remask(results[4], settings=low), settings={"prompt_threshold": 0.5})
    _same_masks(back, results[4])  # and back again: the map was never replaced


def test_remask_of_a_plain_result_equals_segment_with_those_thresholds(engine):
    from napari_clipsam.data.synthetic import synthetic_image

    im = synthetic_image("wood", "crack", 64, 3)[0]
    low = {"prompt_threshold": 0.25}
    _same_masks(engine.remask(engine.segment(im, "wood"), settings=low), engine.segment(im, "wood", settings=low))


@pytest.mark.parametrize("keep", [False, True])
def test_kept_patch_tokens_spare_the_folder_a_clip_pass_and_change_no_result(engine, keep):
    """``keep_patch_tokens`` on a segment: the folder scoring that follows runs CLIP on the other images only, and
    every folder result and the segment's own result are what they are without it."""
    from napari_clipsam.data.synthetic import synthetic_image
    from napari_clipsam.testing import tiny_engine

    ims = [synthetic_image("metal", None if i < 3 else "scratch", 64, 60 + i)[0] for i in range(6)]
    first = engine.segment(ims[4], "metal plate", settings={"keep_patch_tokens": keep})
    assert engine.cache_info().clip_features.misses == 1
    results = engine.segment_folder(ims, "metal plate")
    assert engine.cache_info().clip_features.misses == (6 if keep else 7)
    later = tiny_engine(seed=0)  # another process later: every image's tokens are on disk, the kept one's too
    later.segment_folder(ims, "metal plate")
    assert later.cache_info().clip_features.misses == 0
    plain = tiny_engine(seed=0, feature_cache_bytes=0)  # computes everything itself
    _same_masks(first, plain.segment(ims[4], "metal plate"))
    for got, want in zip(results, plain.segment_folder(ims, "metal plate")):
        torch.testing.assert_close(torch.as_tensor(got.rough_map), torch.as_tensor(want.rough_map))
        _same_masks(got, want)
