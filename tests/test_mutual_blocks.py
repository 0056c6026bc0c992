"""The float32 blocked nearest-patch distances (napari_clipsam/clip/mutual_blocks.py: every radius from one
product by box sums, both directions from one product) against the plain per-radius, per-pair computation."""
from __future__ import annotations

import pytest
import torch

from napari_clipsam.clip import mutual
from napari_clipsam.clip.mutual_blocks import box_sum, layer_distances


def _tokens(n, c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g) + 0.7 * torch.randn(n, c, h, w, generator=g)


def test_box_sum_is_the_sum_over_the_cells_that_exist():
    t = torch.randn(2, 3, 4, 5)
    got = box_sum(t, 3, (2, 3))
    want = torch.nn.functional.avg_pool2d(t, 3, 1, 1, count_include_pad=True) * 9
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(box_sum(t, 5, (3,))[..., 0], t[..., :3].sum(dim=3))  # border: 3 cells exist
    assert box_sum(t, 1, (2, 3)) is t


@pytest.mark.parametrize("subset", [1, 2, 3, 7])
@pytest.mark.parametrize("window", [None, 1])
@pytest.mark.parametrize("grid", [(5, 4), (2, 3), (1, 1)])  # r = 5 wider than the grid; nothing to sum
def test_layer_distances_equal_per_radius_products(subset, window, grid):
    h, w = grid
    t = _tokens(7, 12, h, w, seed=subset)
    mask = mutual.window_mask(h, w, window)
    D = layer_distances(t, (1, 3, 5), subset, mask)
    off = ~torch.eye(7, dtype=torch.bool)
    for r in (1, 3, 5):
        x = mutual.prepare_tokens(t, r)
        for i in range(7):
            for j in range(7):
                if i == j:
                    continue
                sim = x[i] @ x[j].T
                if mask is not None:
                    sim = torch.where(mask, sim, torch.full_like(sim, -2.0))
                want = (1 - sim.amax(dim=1)).clamp(min=0)
                torch.testing.assert_close(D[r][i, j], want, atol=2e-6, rtol=0)
        assert torch.isfinite(D[r][off]).all()


def test_blocked_scores_keep_the_plain_ranking_and_top_patch():
    t = _tokens(8, 16, 6, 6, seed=5)
    t[2, :, 3, 1] += 3.0
    t[6, :, 0, 4] += 2.0
    layers = [t, _tokens(8, 16, 6, 6, seed=6)]
    plain = mutual.mutual_scores_plain(layers, radii=(1, 3, 5))
    blocked = mutual.mutual_scores(layers, radii=(1, 3, 5), subset_size=3)
    torch.testing.assert_close(blocked, plain, atol=1e-5, rtol=1e-5)
    cal_b, cal_p = mutual.calibrate(blocked), mutual.calibrate(plain)
    assert mutual.image_scores(cal_b).argsort().tolist() == mutual.image_scores(cal_p).argsort().tolist()
    for i in range(8):
        assert blocked[i].flatten().argmax() == plain[i].flatten().argmax()
