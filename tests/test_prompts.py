"""Prompt extraction and the merge, on hand-made maps (pure NumPy)."""
import numpy as np
import pytest

from napari_clipsam import ClipSAMConfig
from napari_clipsam.mmr import fuse_maps, group_user_prompts, keep_candidates, merge_component, prompts_from_map

CFG = ClipSAMConfig()


def blob(shape, center, radius, value):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(rr - center[0], cc - center[1])
    return np.where(d <= radius, value * (1 - 0.3 * d / radius), 0.0).astype(np.float32)


def test_two_blobs_give_two_components_with_peaks_and_boxes():
    m = np.maximum(blob((100, 120), (30, 30), 10, 0.9), blob((100, 120), (70, 90), 6, 0.8))
    p = prompts_from_map(m, CFG)
    assert p.points.shape == (2, 2) and p.boxes.shape == (2, 4)
    assert p.point_labels.tolist() == [1, 1]
    # ranked by peak: the 0.9 blob first; its peak is its centre
    np.testing.assert_array_equal(p.points[0], [30, 30])
    np.testing.assert_array_equal(p.points[1], [70, 90])
    # box of the first blob (≈ rows 20..41 where m ≥ 0.5), grown by 10 % per side
    r0, c0, r1, c1 = p.boxes[0]
    assert 15 <= r0 < 22 and 39 < r1 <= 45 and 15 <= c0 < 22 and 39 < c1 <= 45
    assert r0 < 30 < r1 and c0 < 30 < c1
    assert set(np.unique(p.components)) == {0, 1, 2}


def test_map_below_threshold_gives_no_prompts():
    m = np.full((64, 64), 0.49, np.float32)
    p = prompts_from_map(m, CFG)
    assert len(p.points) == 0 and len(p.boxes) == 0 and p.num_components == 0


def test_small_components_dropped_and_k_limit():
    m = np.zeros((200, 200), np.float32)
    m[5:8, 5:8] = 0.95  # 9 px < 16 px, the highest peak: dropped (a 3×3 square survives the 3×3 opening)
    m[180:184, 5:9] = 0.5  # 16 px, the lowest peak: exactly the minimum size, kept
    for i in range(12):
        m[20 + 15 * i: 28 + 15 * i, 100:108] = 0.6 + 0.01 * i
    p = prompts_from_map(m, CFG.replace(max_components=14))
    assert not p.components[5:8, 5:8].any() and p.components[180:184, 5:9].all()
    assert len(p.points) == 13 and [5, 5] not in p.points.tolist()
    p = prompts_from_map(m, CFG.replace(max_components=10))
    assert len(p.points) == 10 and p.num_components == 10
    # the 10 highest peaks of the components large enough are kept, in decreasing order
    peaks = m[p.points[:, 0].astype(int), p.points[:, 1].astype(int)]
    np.testing.assert_allclose(peaks, 0.6 + 0.01 * np.arange(11, 1, -1))


def test_size_filter_scales_with_the_image_area():
    m = np.zeros((400, 400), np.float32)  # min size max(16, 0.0002 × 160 000) = 32 px
    m[10:15, 10:15] = 0.9  # 25 px: dropped here although it passes the 16 px floor
    m[100:106, 100:106] = 0.8  # 36 px: kept
    p = prompts_from_map(m, CFG)
    assert p.num_components == 1 and p.points.tolist() == [[100, 100]]
    assert prompts_from_map(m[:200, :200], CFG).num_components == 2  # min size 16 px there: both kept


def test_boxes_clipped_and_negative_points():
    m = blob((50, 50), (2, 2), 8, 0.9)
    p = prompts_from_map(m, CFG.replace(negative_points=True))
    assert p.boxes[0, 0] == 0 and p.boxes[0, 1] == 0
    assert p.point_labels.tolist() == [1, 0]
    neg = p.points[1].astype(int)
    assert p.components[neg[0], neg[1]] == 0


def test_a_component_filling_its_box_gets_no_negative_point():
    m = np.zeros((30, 30), np.float32)
    m[5:15, 5:15] = 0.9  # a square: with box_growth 0 its box is the square itself, no pixel outside it
    m[20:26, 20:28] = 0.8
    m[20, 20] = 0.1  # an L shape: its box holds one pixel outside the component, the lowest one
    m[20, 21] = 0.7
    p = prompts_from_map(m, CFG.replace(negative_points=True, box_growth=0.0, opening_size=1))
    assert p.point_labels.tolist() == [1, 1, 0] and p.point_component.tolist() == [0, 1, 1]
    assert p.points[2].tolist() == [20, 20] and p.components[20, 20] == 0
    np.testing.assert_array_equal(p.boxes, [[5, 5, 15, 15], [20, 20, 26, 28]])


def test_nan_map_is_background():
    m = blob((40, 40), (20, 20), 8, 0.9)
    m[:5] = np.nan
    assert len(prompts_from_map(m, CFG).points) == 1


def test_candidate_filter_and_merge():
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 5:10, 5:10] = True            # inside the box
    masks[1, :, :] = True                  # whole image: mostly outside the box
    masks[2, 5:10, 5:10] = True            # low predicted IoU
    scores = np.array([0.9, 0.95, 0.3])
    keep = keep_candidates(masks, scores, np.array([4, 4, 11, 11]), CFG)
    assert keep.tolist() == [True, False, False]
    merged = merge_component(masks, scores, keep, None)
    np.testing.assert_array_equal(merged, masks[0].astype(np.float32))
    # the mean of the kept masks weighted by their predicted IoU: a pixel in one mask only gets that mask's
    # share of the weights
    a, b = np.zeros((2, 20, 20), bool)
    a[2:10, 2:10], b[6:14, 6:14] = True, True
    m2 = merge_component(np.stack([a, b, b]), np.array([0.6, 0.2, 0.9]), np.array([True, True, False]), None)
    np.testing.assert_allclose([m2[3, 3], m2[12, 12], m2[8, 8], m2[16, 16]], [0.75, 0.25, 1.0, 0.0], rtol=1e-6)


def test_fallback_when_nothing_kept():
    masks = np.zeros((2, 10, 10), bool)
    fb = np.zeros((10, 10), bool)
    fb[2:4, 2:4] = True
    out = merge_component(masks, np.array([0.1, 0.2]), np.array([False, False]), fb)
    np.testing.assert_array_equal(out, fb.astype(np.float32))


def test_fuse_maps_instances_follow_strongest_component():
    rough = np.zeros((10, 10), np.float32)
    comp = np.zeros((2, 10, 10), np.float32)
    comp[0, 1:5, 1:5] = 1.0
    comp[1, 3:8, 3:8] = 0.8
    f = fuse_maps(rough + 0.6, comp, CFG)
    assert f.mask.sum() > 0
    assert f.instances[2, 2] == 1 and f.instances[6, 6] == 2 and f.instances[4, 4] == 1
    np.testing.assert_allclose(f.final_map[0, 0], 0.3)
    assert f.score == pytest.approx(0.8)


def test_group_user_prompts():
    p = group_user_prompts([[5, 5], [30, 30], [6, 6]], [1, 1, 0], [[0, 0, 10, 10]], (40, 40))
    assert p.point_component.tolist() == [0, 1, 0]
    assert p.num_components == 2
    with pytest.raises(ValueError, match="point_labels"):
        group_user_prompts([[1, 1]], [2], None, (10, 10))
    with pytest.raises(ValueError, match="row0 < row1"):
        group_user_prompts(None, None, [[5, 5, 5, 9]], (10, 10))
    # a negative point inside overlapping boxes joins the smallest, not every component; outside all boxes it
    # applies to every component
    p = group_user_prompts([[20, 20], [55, 55], [2, 62]], [0, 1, 0],
                           [[0, 0, 30, 30], [10, 10, 35, 35], [50, 50, 60, 60]], (64, 64))
    assert p.point_component.tolist() == [1, 2, -1]
    # half a pixel beyond the edge is the edge pixel; farther out is refused
    assert group_user_prompts([[-0.4, 63.4]], [1], None, (64, 64)).points.tolist() == [[0, 63]]
    with pytest.raises(ValueError, match=r"outside the 64×80 image, e.g. \(row 100.0, col 200.0\)"):
        group_user_prompts([[10, 10], [100, 200]], [1, 1], None, (64, 80))
