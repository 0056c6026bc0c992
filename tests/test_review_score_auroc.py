"""Worst first only helps if the image scores rank defective images above good ones (issue 21: AUROC ≥ 0.9 with
folder mutual scoring). Measured here the way the folder review scores a folder (``review.scoring.score_folder``:
mutual scoring from five images), on a synthetic folder per category: 12 images of 64 px under random names,
half good, half with the category's defects in turn, and the tiny random CLIP and SAM of the other tests.

Measured on the 2-core development machine (tiny random models, so the figures say how well mutual scoring
separates these synthetic defects by patch appearance alone, not how a trained CLIP does): metal 1.00, fabric 1.00,
wood 1.00, pcb 0.83, part 0.75 (at 96 px pcb 0.83 and part 0.81; with 16 images at 64 px both 0.77). What is
mis-ranked: on pcb only the missing component (its image scores lowest of all: bare board looks like every other
image's board); on part the missing part and the stain score below the good image with the highest score. The image
score's windowed term (``mutual_image_window`` = 2, the default since 2026-12-07) leaves these figures as they are:
on this 4×4 patch grid a window of 2 cells reaches almost the whole image (docs/method.md, *Image score*, has the
figures of that and the other settings tried). Those two stay below the goal: strict xfails with their figure,
which turn into failures once they pass. Metal runs in the
default run (about 5 s); the other categories are marked slow.
"""
import numpy as np
import pytest

from napari_clipsam.data.synthetic import CATEGORY_DEFECTS, synthetic_image

GOAL = 0.9
MEASURED_BELOW = {"pcb": 0.83, "part": 0.75}


def _folder(root, category: str, n: int = 12, size: int = 64) -> dict[str, bool]:
    """Write the category's folder; image key → defective."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(7)
    defects = CATEGORY_DEFECTS[category]
    truth = {}
    for i in range(n):
        defect = defects[(i // 2) % len(defects)] if i % 2 else "good"
        image, mask = synthetic_image(category, defect, size=size, seed=100 + i)
        assert mask.any() == (defect != "good")
        name = f"{rng.integers(10**6):06d}.png"
        Image.fromarray(image).save(root / name)
        truth[name] = defect != "good"
    return truth


def _case(category: str):
    marks = [] if category == "metal" else [pytest.mark.slow]
    if category in MEASURED_BELOW:
        marks.append(pytest.mark.xfail(strict=True, reason=f"measured image-score AUROC {MEASURED_BELOW[category]:.2f}"
                                                           f" < {GOAL} with the tiny random CLIP (module notes)"))
    return pytest.param(category, marks=marks, id=category)


@pytest.mark.parametrize("category", [_case(c) for c in CATEGORY_DEFECTS])
def test_image_scores_rank_defective_above_good_with_mutual_scoring(category, shared_engine, tmp_path):
    from sklearn.metrics import roc_auc_score

    from napari_clipsam.review import QASession
    from napari_clipsam.review.scoring import score_folder

    truth = _folder(tmp_path / "images", category)
    scored = score_folder(shared_engine, QASession(tmp_path / "images", tmp_path / "labels"), "object")
    assert scored.mode == "mutual" and set(scored.scores) == set(truth) and not scored.left_out
    keys = sorted(truth)
    auroc = roc_auc_score([truth[k] for k in keys], [scored.scores[k] for k in keys])
    print(f"{category}: image-score AUROC {auroc:.3f} over {len(keys)} images (mutual scoring)")
    assert auroc >= GOAL, f"{category}: image-score AUROC {auroc:.3f} < {GOAL}"


def test_with_references_the_image_score_is_the_fused_maps_maximum():
    """With normal references in the folder's fused map (``mutual_image_score="auto"``), an image's score is that
    map's maximum, where the folder and the references agree; without references it stays the mutual score
    (method §5.4), and ``"mutual"`` keeps it with them. Measured on part (12 images at 64 px, 4 references, the
    category whose missing part and stain the mutual score ranks below a good image): image-score AUROC 1.00 with
    the fused map's maximum, 0.75 with the mutual score (96 px: 1.00 and 0.81; pcb 0.78 / 0.83 at 64 px, 0.83 /
    0.83 at 96 px; the other categories 1.00 either way)."""
    from sklearn.metrics import roc_auc_score

    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.errors import ConfigError
    from napari_clipsam.testing import tiny_engine

    with pytest.raises(ConfigError, match="mutual_image_score"):
        ClipSAMConfig(mutual_image_score="max")
    engine = tiny_engine(seed=0)
    defects = CATEGORY_DEFECTS["part"]
    images, truth = [], []
    for i in range(12):
        defect = defects[(i // 2) % len(defects)] if i % 2 else "good"
        images.append(synthetic_image("part", defect, size=64, seed=100 + i)[0])
        truth.append(defect != "good")
    plain = engine.segment_folder(images, "object")
    assert plain[0].provenance["folder"]["image_score_from"] == "mutual map"
    engine.set_normal_references([synthetic_image("part", None, size=64, seed=500 + k)[0] for k in range(4)],
                                 "object", cache=False)
    fused = engine.segment_folder(images, "object")
    kept = engine.segment_folder(images, "object", settings={"mutual_image_score": "mutual"})
    assert fused[0].provenance["folder"]["image_score_from"] == "fused map"
    assert [r.image_score for r in fused] == [float(r.rough_map.max()) for r in fused]
    assert [r.image_score for r in kept] == [r.image_score for r in plain]  # the mutual map has no references in it
    auc_fused = roc_auc_score(truth, [r.image_score for r in fused])
    auc_mutual = roc_auc_score(truth, [r.image_score for r in kept])
    print(f"part with 4 references: image-score AUROC {auc_fused:.3f} fused-map maximum, {auc_mutual:.3f} mutual")
    assert auc_fused >= GOAL > auc_mutual
