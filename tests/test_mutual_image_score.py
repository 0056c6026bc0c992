"""The image score of folder mutual scoring (issue 21): ``mutual_image_top`` and ``mutual_image_window``
(napari_clipsam/clip/mutual.py ``image_scores``, napari_clipsam/engine/folder.py ``mutual_maps``)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_clipsam.clip import mutual
from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.engine.folder import mutual_maps
from napari_clipsam.errors import ConfigError

CFG = ClipSAMConfig(mutual_radii=(1, 3), mutual_precision="float32")


def _aligned_folder(n=8, c=16, h=8, w=8, seed=0, swapped=3):
    """Tokens of an aligned object: every grid cell has its own appearance, shared by all images (plus noise);
    in image ``swapped`` two 3×3 blocks of cells changed places, so each of its patches matches the other images
    somewhere, only not at its own place."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, c, h, w, generator=g)
    t = base + 0.05 * torch.randn(n, c, h, w, generator=g)
    a, b = t[swapped, :, 0:3, 0:3].clone(), t[swapped, :, 5:8, 5:8].clone()
    t[swapped, :, 0:3, 0:3], t[swapped, :, 5:8, 5:8] = b, a
    return [t]


def test_top_zero_is_the_maximum_of_the_smoothed_map():
    maps = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(1))
    smooth = F.avg_pool2d(maps[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    torch.testing.assert_close(mutual.image_scores(maps), smooth.flatten(1).max(dim=1).values)
    torch.testing.assert_close(mutual.image_scores(maps, 0.0), mutual.image_scores(maps))


@pytest.mark.parametrize("top", [0.02, 0.1, 0.5, 0.99])
def test_top_fraction_is_the_mean_of_the_highest_smoothed_values(top):
    maps = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(2))
    smooth = F.avg_pool2d(maps[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    n = max(1, math.ceil(top * 42))
    for i in range(3):
        values = sorted(smooth[i].flatten().tolist(), reverse=True)[:n]
        assert mutual.image_scores(maps, top)[i].item() == pytest.approx(sum(values) / n, rel=1e-6)


def test_image_window_ranks_a_displaced_patch_first_and_leaves_the_map_alone():
    layers = _aligned_folder()
    cfg = CFG.replace(mutual_radii=(1,))  # the patches alone: a displaced one has its exact match elsewhere
    maps_g, scores_g = mutual_maps(cfg.replace(mutual_image_window=None), layers)
    maps_w, scores_w = mutual_maps(cfg.replace(mutual_image_window=1), layers)
    assert torch.equal(maps_g, maps_w)  # the rough map's mutual part does not depend on the image window
    torch.testing.assert_close(scores_g, mutual.image_scores(maps_g))
    windowed = mutual.image_scores(mutual.calibrate(mutual.mutual_scores(layers, radii=(1,), window=1)))
    torch.testing.assert_close(scores_w, torch.maximum(scores_g, windowed))
    assert scores_w.argmax().item() == 3  # the displaced cells are found with the window ...
    assert scores_w[3] > 0.9 and scores_g[3] < 0.5  # ... and not by the global score, which finds them elsewhere


def test_image_window_equal_to_the_only_window_is_not_computed_twice(monkeypatch):
    layers = _aligned_folder()
    calls = []
    real = mutual.mutual_scores_windows
    monkeypatch.setattr(mutual, "mutual_scores_windows", lambda lay, w, **k: calls.append(list(w)) or real(lay, w, **k))
    _, only = mutual_maps(CFG.replace(mutual_window=1, mutual_window_mode="only", mutual_image_window=1), layers)
    _, mean = mutual_maps(CFG.replace(mutual_window=1, mutual_window_mode="mean", mutual_image_window=1), layers)
    _, other = mutual_maps(CFG.replace(mutual_window=2, mutual_window_mode="mean", mutual_image_window=1), layers)
    assert calls == [[1], [None, 1], [None, 2, 1]]  # the rough map's windowed map is reused for the image score
    assert only.argmax().item() == mean.argmax().item() == other.argmax().item() == 3


@pytest.mark.parametrize("subset", [1, 3, 8])
@pytest.mark.parametrize("fast", [False, True])
def test_global_and_windowed_scores_from_shared_products_equal_separate_passes(subset, fast):
    layers = _aligned_folder(n=7) + [torch.randn(7, 16, 8, 8, generator=torch.Generator().manual_seed(3))]
    both = mutual.mutual_scores_windows(layers, [None, 2, None], radii=(1, 3, 5), subset_size=subset, fast=fast)
    assert list(both) == [None, 2]
    for w in (None, 2):
        alone = mutual.mutual_scores(layers, radii=(1, 3, 5), subset_size=subset, window=w, fast=fast)
        torch.testing.assert_close(both[w], alone, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(both[None], both[2])  # the window does change the scores of the displaced cells


def test_image_score_settings_are_checked():
    with pytest.raises(ConfigError, match="mutual_image_window"):
        ClipSAMConfig(mutual_image_window=-1)
    with pytest.raises(ConfigError, match="mutual_image_window"):
        ClipSAMConfig(mutual_image_window=1.5)
    with pytest.raises(ConfigError, match="mutual_image_top"):
        ClipSAMConfig(mutual_image_top=1.0)
    with pytest.raises(ConfigError, match="mutual_image_top"):
        ClipSAMConfig(mutual_image_top=-0.1)
    assert ClipSAMConfig(mutual_image_top=0).mutual_image_top == 0.0
    assert ClipSAMConfig().mutual_image_window == 2 and ClipSAMConfig().mutual_image_top == 0.0
