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
    m[5:8, 5:8] = 0.9  # 9 px < 16 px: dropped (also removed by the 3×3 opening? no, 3×3 survives opening)
    for i in range(12):
        m[20 + 15 * i: 28 + 15 * i, 100:108] = 0.6 + 0.01 * i
    p = prompts_from_map(m, CFG.replace(max_components=10))
    assert len(p.points) == 10
    # the 10 highest peaks are kept, in decreasing order
    peaks = m[p.points[:, 0].astype(int), p.points[:, 1].astype(int)]
    assert np.all(np.diff(peaks) < 0) and peaks.min() > 0.615


def test_boxes_clipped_and_negative_points():
    m = blob((50, 50), (2, 2), 8, 0.9)
    p = prompts_from_map(m, CFG.replace(negative_points=True))
    assert p.boxes[0, 0] == 0 and p.boxes[0, 1] == 0
    assert p.point_labels.tolist() == [1, 0]
    neg = p.points[1].astype(int)
    assert p.components[neg[0], neg[1]] == 0


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
    # weighted mean of two kept masks
    m2 = merge_component(masks[[0, 2]], np.array([0.6, 0.2]), np.array([True, True]), None)
    assert m2.max() == pytest.approx(1.0)


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
