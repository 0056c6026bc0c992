"""Metrics against slow, direct reference implementations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import rankdata
from skimage import measure
from sklearn.metrics import auc

from napari_clipsam.metrics import (
    METRIC_NAMES,
    aupro,
    evaluate,
    f1_max,
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
    pro_curve,
)

# ---------------------------------------------------------------- slow references


def slow_auroc(scores, labels):
    """Mann-Whitney U statistic with average ranks for ties."""
    scores, labels = np.ravel(scores).astype(np.float64), np.ravel(labels).astype(bool)
    ranks = rankdata(scores)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _pr_points(scores, labels):
    """(precision, recall) for 'flag score >= t' at every distinct t, highest t first."""
    scores, labels = np.ravel(scores).astype(np.float64), np.ravel(labels).astype(bool)
    points = []
    for t in np.unique(scores)[::-1]:
        flagged = scores >= t
        tp = np.sum(flagged & labels)
        points.append((tp / flagged.sum(), tp / labels.sum()))
    return points


def slow_ap(scores, labels):
    """Sum over thresholds of (R_k - R_{k-1}) * P_k."""
    total, previous_recall = 0.0, 0.0
    for precision, recall in _pr_points(scores, labels):
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


def slow_f1_max(scores, labels):
    return max((2 * p * r / (p + r) if p + r > 0 else 0.0) for p, r in _pr_points(scores, labels))


def _regions(masks):
    """List of (image index, region bool mask) with skimage's 8-connected labelling."""
    out = []
    for index, mask in enumerate(masks):
        labelled = measure.label(mask, connectivity=2)
        out += [(index, labelled == k) for k in range(1, labelled.max() + 1)]
    return out


def slow_official_curve(maps, masks):
    regions, normal = _regions(masks), ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        flagged = maps >= t
        pro = np.mean([flagged[i][region].mean() for i, region in regions])
        points.append((np.sum(flagged & normal) / normal.sum(), pro))
    points.append((1.0, 1.0))
    return np.array(points).T


def slow_aupro_official(maps, masks, max_fpr=0.3):
    """Segment-by-segment trapezoids, the last one cut at max_fpr by linear interpolation."""
    fprs, pros = slow_official_curve(maps, masks)
    area = 0.0
    for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
        if x0 >= max_fpr:
            break
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y_cut) / 2
            break
    return area / max_fpr


def slow_aupro_published(maps, masks, max_fpr=0.3, steps=200):
    """The APRIL-GAN loop: regionprops per threshold, FPR < max_fpr kept and rescaled, sklearn auc."""
    low, high = float(maps.min()), float(maps.max())
    pros, fprs = [], []
    for th in low + (high - low) / steps * np.arange(steps):
        binary = maps > th
        overlaps = []
        for b, mask in zip(binary, masks):
            for region in measure.regionprops(measure.label(mask, connectivity=2)):
                overlaps.append(b[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(~masks, binary).sum() / (~masks).sum())
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < max_fpr
    fprs = fprs[kept]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs, pros[kept])


# ---------------------------------------------------------------- test cases


def _case(seed, n=3, size=20, quantise=None, empty_images=0):
    """Random blob masks (with diagonal contacts), maps correlated with them plus noise."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for mask in masks[empty_images:]:
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, size - 4, 2)
            h, w = rng.integers(1, 6, 2)
            mask[r:r + h, c:c + w] = True
        if rng.random() < 0.5:  # a diagonal chain: one region with 8- but three with 4-connectivity
            r, c = rng.integers(0, size - 3, 2)
            mask[r, c] = mask[r + 1, c + 1] = mask[r + 2, c + 2] = True
    maps = rng.random(masks.shape) + rng.uniform(0.2, 1.0) * masks
    if quantise:
        maps = np.round(maps * quantise) / quantise
    return maps.astype(np.float32), masks


CASES = {
    "continuous": _case(0),
    "ties": _case(1, quantise=6),
    "heavy_ties": _case(2, quantise=2),
    "empty_images": _case(3, n=4, empty_images=2),
    "more_images": _case(4, n=5, size=16, quantise=10),
}


def _single_region():
    maps, masks = _case(5, n=2)
    masks[:] = False
    masks[1, 4:9, 6:12] = True
    return maps, masks


def _very_different_sizes():
    rng = np.random.default_rng(6)
    masks = np.zeros((2, 24, 24), bool)
    masks[0, 3, 3] = True  # one pixel
    masks[0, 10:22, 8:20] = True  # 144 pixels
    masks[1, 0:2, 20:22] = True  # 4 pixels
    maps = (rng.random(masks.shape) + 0.6 * masks).astype(np.float32)
    maps[0, 3, 3] = 0.1  # the tiny region is missed until low thresholds
    return maps, masks


def _scores_on_published_thresholds():
    """Scores on and between the thresholds min + k (max - min) / 200 (= k / 256 here): tells '>' from '>='."""
    rng = np.random.default_rng(7)
    masks = _case(7, n=3)[1]
    levels = np.minimum(rng.integers(0, 21, masks.shape) + masks * rng.integers(0, 8, masks.shape), 20)
    offsets = rng.choice([-0.5, 0.0, 0.0, 0.5], masks.shape)  # values on and between thresholds
    maps = np.clip(levels * 10 + offsets, 0, 200) / 256
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 200 / 256
    return maps.astype(np.float32), masks


CASES["single_region"] = _single_region()
CASES["ties_on_thresholds"] = _scores_on_published_thresholds()
CASES["different_sizes"] = _very_different_sizes()


@pytest.mark.parametrize("name", CASES)
def test_pixel_auroc_ap_f1_match_references(name):
    maps, masks = CASES[name]
    assert pixel_auroc(maps, masks) == pytest.approx(slow_auroc(maps, masks), abs=1e-12)
    assert pixel_ap(maps, masks) == pytest.approx(slow_ap(maps, masks), abs=1e-12)
    assert pixel_f1_max(maps, masks) == pytest.approx(slow_f1_max(maps, masks), abs=1e-12)
    as_list = [m for m in maps]  # a list of (H, W) maps works the same
    assert pixel_auroc(as_list, masks) == pixel_auroc(maps, masks)


def test_f1_max_on_scores():
    rng = np.random.default_rng(11)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.4 * labels, 2)
    assert f1_max(scores, labels) == pytest.approx(slow_f1_max(scores, labels), abs=1e-12)
    assert f1_max([0.1, 0.9], [0, 1]) == 1.0
    assert f1_max([0.9, 0.1], [0, 1]) == pytest.approx(2 / 3)  # flag both: P = 1/2, R = 1


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_official_matches_brute_force(name, max_fpr):
    maps, masks = CASES[name]
    expected = slow_aupro_official(maps, masks, max_fpr)
    assert aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", ["continuous", "ties", "different_sizes"])
def test_pro_curve_matches_brute_force(name):
    maps, masks = CASES[name]
    fprs, pros = pro_curve(maps, masks)
    slow_fprs, slow_pros = slow_official_curve(maps, masks)
    np.testing.assert_allclose(fprs, slow_fprs, atol=1e-9)
    np.testing.assert_allclose(pros, slow_pros, atol=1e-9)


def test_aupro_uses_eight_connectivity():
    masks = np.zeros((1, 6, 6), bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # one diagonal region, not two
    masks[0, 4, 4] = True
    maps = np.zeros((1, 6, 6), np.float32)
    maps[0, 1, 1] = 1.0  # half of the diagonal region, none of the other
    fprs, pros = pro_curve(maps, masks)
    assert pros[1] == pytest.approx(0.25)  # (1/2 + 0) / 2 regions; 4-connectivity would give 1/3


@pytest.mark.parametrize("name", CASES)
def test_aupro_published_matches_direct_loop(name):
    maps, masks = CASES[name]
    expected = slow_aupro_published(maps, masks)
    assert aupro(maps, masks, flavour="published") == pytest.approx(expected, abs=1e-9)


def test_perfect_and_reversed_maps():
    maps, masks = CASES["continuous"]
    perfect = masks.astype(np.float32)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    assert aupro(1 - perfect, masks) == pytest.approx(0.0, abs=1e-12)
    separated = np.where(masks, 2 + maps, maps)  # every anomalous pixel above every normal one
    assert aupro(separated, masks) == pytest.approx(1.0)
    assert aupro(-separated, masks) < 0.01
    assert aupro(separated, masks, flavour="published") > 0.95
    assert aupro(-separated, masks, flavour="published") < 0.05
    assert pixel_auroc(separated, masks) == 1.0 and pixel_auroc(-separated, masks) == 0.0
    assert pixel_ap(separated, masks) == 1.0 and pixel_f1_max(separated, masks) == 1.0


def test_undefined_metrics_are_nan_without_warnings():
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    normal = np.zeros((2, 8, 8), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (
            pixel_auroc(maps, normal),
            pixel_ap(maps, normal),
            pixel_f1_max(maps, normal),
            aupro(maps, normal),
            aupro(maps, normal, flavour="published"),
            pixel_auroc(maps, ~normal),  # no normal pixel
            aupro(maps, ~normal),
            image_auroc([0.1, 0.2], [1, 1]),
            image_ap([0.1, 0.2], [0, 0]),
        ):
            assert np.isnan(value)
        results = evaluate(maps, normal)
    assert set(results) == set(METRIC_NAMES) and all(np.isnan(v) for v in results.values())


def test_image_level_metrics():
    rng = np.random.default_rng(3)
    labels = rng.random(40) < 0.5
    scores = rng.random(40) + 0.5 * labels
    assert image_auroc(scores, labels) == pytest.approx(slow_auroc(scores, labels))
    assert image_ap(scores, labels) == pytest.approx(slow_ap(scores, labels))
    assert image_f1_max(scores, labels) == pytest.approx(slow_f1_max(scores, labels))


def test_evaluate_combines_everything():
    maps, masks = CASES["empty_images"]
    results = evaluate(maps, masks)
    assert list(results) == list(METRIC_NAMES)
    assert all(isinstance(v, float) for v in results.values())
    assert results["pixel_auroc"] == pixel_auroc(maps, masks)
    assert results["pixel_ap"] == pytest.approx(pixel_ap(maps, masks), abs=1e-12)
    assert results["pixel_f1_max"] == pytest.approx(pixel_f1_max(maps, masks), abs=1e-12)
    assert results["aupro_official"] == aupro(maps, masks)
    assert results["aupro_published"] == aupro(maps, masks, flavour="published")
    image_scores, labels = maps.max(axis=(1, 2)), masks.any(axis=(1, 2))
    assert results["image_auroc"] == image_auroc(image_scores, labels)
    assert results["image_ap"] == image_ap(image_scores, labels)
    custom = evaluate(maps, masks, image_scores=-image_scores, labels=labels)
    assert custom["image_auroc"] == pytest.approx(1 - results["image_auroc"])
    assert custom["pixel_auroc"] == results["pixel_auroc"]


def test_input_validation():
    maps, masks = CASES["continuous"]
    with pytest.raises(ValueError, match=r"\(3, 20, 20\).*\(3, 20, 19\)"):
        pixel_auroc(maps, masks[..., :-1])
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aupro(bad, masks)
    with pytest.raises(ValueError, match="flavour"):
        aupro(maps, masks, flavour="mvtec")
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(maps, masks, max_fpr=0)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        evaluate(maps, masks, image_scores=[1.0, 2.0])
