"""The issue-20 proxy: folder mutual scoring on the synthetic categories with the tiny random CLIP at 224 px, no
references, folders of 20 images of which 14 are defective. Run with ``-s`` to see the figures per category."""
from __future__ import annotations

import time

import numpy as np
import pytest

from napari_clipsam.config import ClipSAMConfig
from napari_clipsam.data.synthetic import CATEGORIES, CATEGORY_DEFECTS, _image_seed, synthetic_image
from napari_clipsam.metrics.pixel import pixel_auroc
from napari_clipsam.engine.clipsam import ClipSAM
from napari_clipsam.testing import make_tiny_clip, make_tiny_sam

# ~100 s on 2 busy cores: behind the slow marker (`python -m pytest -q -n 0 -s -m slow tests/test_mutual_quality.py`)
pytestmark = pytest.mark.slow

IMAGE_PX, GOOD, DEFECTIVE = 128, 6, 14


def folder(category: str, seed: int = 0):
    """GOOD normal and DEFECTIVE defective images (defect types in turn) of one category: (image, mask, defect)."""
    items = [synthetic_image(category, None, IMAGE_PX, _image_seed(seed, category, "test", "good", i)) + ("good",)
             for i in range(GOOD)]
    kinds = CATEGORY_DEFECTS[category]
    for i in range(DEFECTIVE):
        d = kinds[i % len(kinds)]
        items.append(synthetic_image(category, d, IMAGE_PX, _image_seed(seed, category, "test", d, i)) + (d,))
    return items


# the method's setting for parts photographed in a fixture (§5.3, docs/method.md): compare a patch only with the
# other images' patches within 2 grid cells of its place, so a part that is missing is compared with the part
ALIGNED = {"mutual_window": 2, "mutual_window_mode": "only"}


def measure(seed: int = 0, categories=CATEGORIES, settings=None) -> dict[str, dict[str, float]]:
    clip, tok = make_tiny_clip(seed, image_size=224)
    cfg = ClipSAMConfig(image_size=224, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch")
    engine = ClipSAM.from_models(clip, tok, make_tiny_sam(seed), None, cfg)
    out = {}
    for c in categories:
        items = folder(c, seed)
        t0 = time.perf_counter()
        results = engine.segment_folder([it[0] for it in items], c, settings=settings)
        seconds = time.perf_counter() - t0
        maps = np.stack([r.rough_map for r in results])
        masks = np.stack([it[1] for it in items])
        good = [r for r, it in zip(results, items) if it[2] == "good"]
        bad = [(r, it[1]) for r, it in zip(results, items) if it[2] != "good"]
        out[c] = {
            "pixel_auroc": pixel_auroc(maps, masks),
            "good_without_object": float(np.mean([r.num_instances == 0 for r in good])),
            "defective_with_object_on_defect": float(np.mean([bool((r.mask & m).any()) for r, m in bad])),
            "image_score_good_max": max(r.image_score for r in good),
            "image_score_defective_median": float(np.median([r.image_score for r, _ in bad])),
            "seconds": seconds,
        }
    return out


@pytest.fixture(scope="module")
def figures():
    fig = measure()
    for c, f in fig.items():
        print(c, {k: round(v, 3) for k, v in f.items()})
    print("mean pixel AUROC", round(float(np.mean([f["pixel_auroc"] for f in fig.values()])), 3))
    return fig


def test_mutual_map_reaches_095_mean_pixel_auroc(figures):
    assert np.mean([f["pixel_auroc"] for f in figures.values()]) >= 0.95, figures


def test_no_category_below_080(figures):
    assert min(f["pixel_auroc"] for f in figures.values()) >= 0.80, figures


@pytest.mark.xfail(strict=True, reason="calibration by the folder's per-image maxima (0.5 at their 25 % quantile) "
                   "lifts good images without an object from mean 0.30 to about 0.9 (component-level estimate, seeds "
                   "0 and 1), but pcb stays at 0.67 on seed 0: its good and defective maxima overlap (AUROC 0.85); the two "
                   "good images with objects have a copper trace running into a chip, unlike any other image, and "
                   "a higher mutual_calibration_ratio loses more defects than it clears (docs/method.md)")
def test_good_images_give_no_object(figures):
    assert min(f["good_without_object"] for f in figures.values()) >= 0.80, figures


@pytest.fixture(scope="module")
def aligned_part():
    fig = measure(categories=("part",), settings=ALIGNED)["part"]
    print("part, aligned window", {k: round(v, 3) for k, v in fig.items()})
    return fig


def test_defective_images_get_an_object_on_the_defect(figures, aligned_part):
    """Every category with the defaults but part, which is a fixture-aligned object: with its documented setting."""
    hits = {c: f["defective_with_object_on_defect"] for c, f in figures.items() if c != "part"}
    hits["part (aligned window)"] = aligned_part["defective_with_object_on_defect"]
    assert min(hits.values()) >= 0.80, hits
    assert aligned_part["good_without_object"] >= 0.80 and aligned_part["pixel_auroc"] >= 0.90, aligned_part


@pytest.mark.xfail(strict=True, reason="without the aligned window, part's missing parts (the part is absent: its "
                   "place looks like background, which every image has) get no object: 11 of 14 defects (0.79)")
def test_part_without_the_aligned_window(figures):
    assert figures["part"]["defective_with_object_on_defect"] >= 0.80, figures["part"]
