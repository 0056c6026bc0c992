"""Property-based tests (hypothesis) of prompt extraction and the merge (method §3 steps 1–2 and 4–6), pure NumPy.

Prompts: components are the large-enough 8-connected pieces of the binarised map, at most K, strongest first,
numbered densely; positive points at each component's peak; boxes contain their component and lie in the image;
negative points lie in their box but outside every component. Merge: the confidence-weighted component map
stays within the kept masks and within ``max_outside_box`` of its box; the fused output's instance ids are
dense 1..N, do not depend on the order of the components, nor on rounding-level changes of the decoded
scores (ties go to the lowest component). Maps are small and examples few
(``CLIPSAM_PROPERTY_EXAMPLES``, as in test_properties.py); hypothesis runs derandomized.
"""
from __future__ import annotations

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from napari_clipsam import ClipSAMConfig
from napari_clipsam.mmr import fuse_maps, keep_candidates, merge_component, prompts_from_map
from napari_clipsam.mmr.merge import INSTANCE_TIE_TOLERANCE, outside_fraction
from napari_clipsam.mmr.prompts import EIGHT_CONNECTED, binarise, kept_components

SETTINGS = settings(max_examples=int(os.environ.get("CLIPSAM_PROPERTY_EXAMPLES", "60")), deadline=None,
                    derandomize=True)

LEVELS = [0.0, 0.1, 0.3, 0.5, 0.55, 0.7, 0.9, 1.0]


@st.composite
def rough_maps(draw):
    """(H, W) float32 in [0, 1]: a few rectangles of random strength over sparse pixel noise, so there are
    large, small, touching, irregular and edge components."""
    H, W = draw(st.integers(6, 28)), draw(st.integers(6, 28))
    noise = draw(hnp.arrays(np.float32, (H, W), elements=st.sampled_from(LEVELS[:3] * 4 + LEVELS)))
    for _ in range(draw(st.integers(0, 5))):
        r0, c0 = draw(st.integers(0, H - 1)), draw(st.integers(0, W - 1))
        r1, c1 = r0 + draw(st.integers(1, H)), c0 + draw(st.integers(1, W))
        noise[r0:r1, c0:c1] = np.maximum(noise[r0:r1, c0:c1], draw(st.sampled_from(LEVELS[3:])))
    return noise


configs = st.builds(
    lambda growth, opening, px, k: ClipSAMConfig().replace(box_growth=growth, opening_size=opening,
                                                           min_component_px=px, max_components=k,
                                                           negative_points=True),
    st.sampled_from([0.0, 0.1, 0.5]), st.sampled_from([1, 3]), st.sampled_from([1, 5, 16]), st.integers(1, 10))


@SETTINGS
@given(rough=rough_maps(), cfg=configs)
def test_kept_components_equal_scipys_indexed_sizes_and_peaks(rough, cfg):
    """The prompt step's one-pass sizes and peaks (bincount, maximum.at) keep exactly the components that
    scipy's indexed reductions (the plain path they replace, ~20× slower on a 12 MP map) would."""
    _, labels, keep = kept_components(rough, cfg)
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    sizes, peaks = ndi.sum_labels(np.ones_like(rough), labels, idx), ndi.maximum(rough, labels, idx)
    min_size = max(cfg.min_component_px, cfg.min_component_frac * rough.size)
    plain = [i for i in np.argsort(-np.asarray(peaks), kind="stable") if sizes[i] >= min_size][: cfg.max_components]
    assert keep == plain


def pixel_in_box(p, box) -> bool:
    """The pixel (row, col) overlaps the box (row0, col0, row1, col1)."""
    return box[0] - 1 < p[0] < box[2] and box[1] - 1 < p[1] < box[3]


@SETTINGS
@given(rough=rough_maps(), cfg=configs)
def test_components_are_the_strongest_large_enough_pieces(rough, cfg):
    p = prompts_from_map(rough, cfg)
    H, W = rough.shape
    min_size = max(cfg.min_component_px, cfg.min_component_frac * H * W)
    pieces, n = ndi.label(binarise(rough, cfg), structure=EIGHT_CONNECTED)
    k = p.num_components
    assert k <= cfg.max_components
    np.testing.assert_array_equal(np.unique(p.components[p.components > 0]), np.arange(1, k + 1))  # dense ids
    for piece in range(1, n + 1):
        region = pieces == piece
        ids = np.unique(p.components[region])
        assert len(ids) == 1, "a component is a whole piece of the binarised map"
        if region.sum() < min_size:
            assert ids[0] == 0, "a piece below the size filter became a component"
        elif ids[0] == 0:
            assert k == cfg.max_components, "a large-enough piece was dropped below the K limit"
    assert ((p.components > 0) <= (pieces > 0)).all()
    peaks = [rough[p.components == c + 1].max() for c in range(k)]
    assert peaks == sorted(peaks, reverse=True), "components are ranked by peak"
    dropped = [rough[pieces == i].max() for i in range(1, n + 1)
               if (pieces == i).sum() >= min_size and not p.components[pieces == i].any()]
    assert not dropped or max(dropped) <= min(peaks), "a weaker piece was kept instead of a stronger one"


@SETTINGS
@given(rough=rough_maps(), cfg=configs)
def test_points_and_boxes_respect_their_component(rough, cfg):
    p = prompts_from_map(rough, cfg)
    H, W = rough.shape
    k = p.num_components
    assert len(p.boxes) == k and p.box_component.tolist() == list(range(k))
    pos = p.point_labels == 1
    assert p.point_component[pos].tolist() == list(range(k))
    for c in range(k):
        region = p.components == c + 1
        rows, cols = np.nonzero(region)
        box = p.boxes[c]
        assert 0 <= box[0] <= rows.min() and rows.max() + 1 <= box[2] <= H, (box, rows.min(), rows.max())
        assert 0 <= box[1] <= cols.min() and cols.max() + 1 <= box[3] <= W, (box, cols.min(), cols.max())
        if cfg.box_growth == 0:
            np.testing.assert_array_equal(box, [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
        point = p.points[pos][c].astype(int)
        assert region[tuple(point)] and rough[tuple(point)] == rough[region].max()
        assert box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]
        negatives = p.points[(p.point_labels == 0) & (p.point_component == c)].astype(int)
        r0, c0, r1, c1 = int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))
        outside = p.components[r0:r1, c0:c1] == 0
        assert len(negatives) == int(outside.any()), "one negative point where the box has room for one"
        for q in negatives:
            assert p.components[tuple(q)] == 0, "a negative point lies inside a component"
            assert pixel_in_box(q, box) and rough[tuple(q)] == rough[r0:r1, c0:c1][outside].min()


# ------------------------------------------------------------------------------------------ the merge
@st.composite
def candidates(draw, H=12, W=14):
    """Candidate masks (n, H, W) bool with predicted IoUs (n,) and a box (row0, col0, row1, col1)."""
    n = draw(st.integers(1, 6))
    masks = draw(hnp.arrays(bool, (n, H, W)))
    scores = np.asarray(draw(st.lists(st.floats(0.0, 1.0, width=32), min_size=n, max_size=n)), np.float32)
    r0, r1 = sorted(draw(st.lists(st.integers(0, H), min_size=2, max_size=2, unique=True)))
    c0, c1 = sorted(draw(st.lists(st.integers(0, W), min_size=2, max_size=2, unique=True)))
    return masks, scores, np.array([r0, c0, r1, c1], np.float32)


@SETTINGS
@given(cand=candidates(), with_fallback=st.booleans())
def test_merged_component_stays_within_its_kept_masks_and_box(cand, with_fallback):
    cfg = ClipSAMConfig()
    masks, scores, box = cand
    keep = keep_candidates(masks, scores, box, cfg)
    area = masks.reshape(len(masks), -1).sum(axis=1)
    expected = (scores >= cfg.min_predicted_iou) & (area > 0) & (outside_fraction(masks, box) <= cfg.max_outside_box)
    np.testing.assert_array_equal(keep, expected)
    fallback = np.zeros(masks.shape[1:], bool)
    fallback[int(box[0]):int(box[2]), int(box[1]):int(box[3])] = True  # a component inside its box
    merged = merge_component(masks, scores, keep, fallback if with_fallback else None)
    assert merged.dtype == np.float32 and merged.min() >= 0 and merged.max() <= 1 + 1e-6
    if keep.any():
        np.testing.assert_array_equal(merged > 0, masks[keep].any(axis=0))  # the support is the kept masks
        np.testing.assert_array_equal(merged >= 1 - 1e-6, masks[keep].all(axis=0))  # 1 where all agree
    elif with_fallback:
        np.testing.assert_array_equal(merged, fallback)
    else:
        np.testing.assert_array_equal(merged, masks[int(np.argmax(scores))])
    if keep.any() or with_fallback:  # the weighted mass outside the box is bounded as each kept mask's is
        in_box = np.zeros(masks.shape[1:], bool)
        in_box[int(box[0]):int(box[2]), int(box[1]):int(box[3])] = True
        assert merged[~in_box].sum() <= cfg.max_outside_box * merged.sum() + 1e-4


@st.composite
def component_stacks(draw, H=10, W=12):
    """(K, H, W) float32 component maps with a rough map; values on a coarse grid so ties happen."""
    K = draw(st.integers(0, 4))
    maps = draw(hnp.arrays(np.float32, (K, H, W), elements=st.sampled_from([0.0, 0.0, 0.25, 0.5, 0.8, 1.0])))
    rough = draw(hnp.arrays(np.float32, (H, W), elements=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0])))
    return maps, rough, draw(st.permutations(range(K)))


@SETTINGS
@given(stack=component_stacks())
def test_fused_instances_are_dense_and_independent_of_component_order(stack):
    maps, rough, order = stack
    cfg = ClipSAMConfig()
    f = fuse_maps(rough, maps, cfg)
    assert f.final_map.min() >= 0 and f.final_map.max() <= 1
    np.testing.assert_array_equal(f.mask, f.final_map >= cfg.mask_threshold)
    np.testing.assert_array_equal(f.instances > 0, f.mask)
    n = f.instances.max()
    np.testing.assert_array_equal(np.unique(f.instances[f.instances > 0]), np.arange(1, n + 1))  # dense 1..N
    assert len(f.instance_component) == n
    origin = np.concatenate([[-2], f.instance_component])[f.instances]  # -2 background, -1 no component
    sam = maps.max(axis=0) if len(maps) else np.zeros_like(rough)
    for c in range(len(maps)):  # a pixel goes to the first component whose map is (tied for) strongest there
        tied = maps >= sam - INSTANCE_TIE_TOLERANCE
        assert tied[c][origin == c].all() and not tied[:c, origin == c].any() and (sam[origin == c] > 0).all()
    assert (sam[origin == -1] == 0).all()
    g = fuse_maps(rough, maps[list(order)], cfg)
    np.testing.assert_array_equal(g.final_map, f.final_map)
    np.testing.assert_array_equal(g.mask, f.mask)
    assert g.score == f.score
    if len(maps):  # the same component (in the original order) where its map is the unique maximum
        origin_g = np.concatenate([[-2], g.instance_component])[g.instances]
        origin_g = np.where(origin_g >= 0, np.asarray(order)[np.maximum(origin_g, 0)], origin_g)
        unique_max = (maps == sam).sum(axis=0) == 1
        np.testing.assert_array_equal(origin_g[unique_max], origin[unique_max])


# ------------------------------------------------------- instances do not depend on how candidates were decoded
@st.composite
def decoded_components(draw, H=8, W=9):
    """Per component: candidate masks (n, H, W) bool and predicted IoUs (n,) from a few values, so components
    often agree (all of one component's candidates cover a pixel, or two components have the same kept masks
    and weights there); and the same IoUs moved by a few float32 ulps, as a decoder batch of another size
    rounds them. The rough map's 0.7 pixels are the final mask whatever the SAM map (see the test's config)."""
    comps = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 4))
        masks = draw(hnp.arrays(bool, (n, H, W)))
        masks[:, : draw(st.integers(0, H))] |= draw(st.booleans())  # a band every candidate covers
        scores = np.asarray(draw(st.lists(st.sampled_from([0.5, 0.6, 0.75, 0.9, 1.0]), min_size=n,
                                          max_size=n)), np.float32)
        ulps = np.asarray(draw(st.lists(st.integers(-4, 4), min_size=n, max_size=n)), np.float32)
        comps.append((masks, scores, (scores + ulps * np.spacing(scores)).astype(np.float32)))
    rough = draw(hnp.arrays(np.float32, (H, W), elements=st.sampled_from([0.0, 0.7])))
    return comps, rough


@SETTINGS
@given(case=decoded_components())
def test_instances_do_not_depend_on_rounding_of_the_decoded_candidates(case):
    comps, rough = case
    cfg = ClipSAMConfig().replace(alpha=0.8, mask_threshold=0.3)  # mask = rough 0.7 (≥ 0.56), never rough 0
    fused = []
    for which in (1, 2):  # the IoUs as decoded once, then as another batch composition rounded them
        maps = []
        for masks, *scores in comps:
            keep = masks.reshape(len(masks), -1).any(axis=1)
            merged = merge_component(masks, scores[which - 1], keep, None)
            if keep.any():  # all kept candidates agree: exactly 1, whatever the weights' rounding
                assert (merged[masks[keep].all(axis=0)] == 1.0).all() and merged.max() <= 1.0
            maps.append(merged)
        fused.append(fuse_maps(rough, np.stack(maps), cfg))
    a, b = fused
    np.testing.assert_allclose(a.final_map, b.final_map, atol=1e-5)  # the perturbation is rounding-level
    np.testing.assert_array_equal(a.mask, rough == np.float32(0.7))
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(a.instance_component, b.instance_component)
