"""``eval --mutual`` (issue 20) and ``eval --plots DIR`` (issue 21) end to end: tiny checkpoints on disk, a small
synthetic dataset (two categories of 3 normal + 4 defective images, 64 px), the CLI run in-process."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from napari_clipsam.data import make_synthetic_dataset, open_dataset
from napari_clipsam.metrics import evaluate
from napari_clipsam.testing import run_cli, write_tiny_clip, write_tiny_sam
from napari_clipsam.training.resize import squash_map, squash_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CATEGORIES = ("metal", "fabric")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_mutual")
    clip, sam = write_tiny_clip(root / "clip", seed=0), write_tiny_sam(root / "sam", seed=0)
    data = make_synthetic_dataset(root / "data", CATEGORIES, n_train_good=2, n_test_good=3, n_test_defect=1,
                                  image_size=64, seed=0)
    config = root / "config.json"
    config.write_text(json.dumps({"feature_layers": [1, 2, 3, 4]}))  # the tiny CLIP has 4 blocks
    args = ["--config", config, "--clip-model", f"local-dir:{clip}", "--image-size", "56", "--device", "cpu",
            "--backend", "torch", "--sam-model", f"local-dir:{sam}", "--no-progress"]
    return {"root": root, "data": data, "args": args, "clip": clip, "sam": sam}


@pytest.fixture(scope="module")
def mutual_run(setup):
    out_json, plots = setup["root"] / "mutual.json", setup["root"] / "plots"
    code, out, err = run_cli("eval", "--dataset-root", setup["data"], "--mutual", "--plots", plots, "--json",
                             out_json, *setup["args"])
    assert code == 0, err
    return {"out": out, "json": json.loads(out_json.read_text()), "plots": plots}


def _direct_folder_metrics(setup, category: str) -> dict:
    """The same category evaluated without the eval code: segment_folder on its test images, squashed maps and
    masks, image metrics from result.image_score."""
    from napari_clipsam.config import ClipSAMConfig
    from napari_clipsam.engine.clipsam import ClipSAM

    cfg = ClipSAMConfig(clip_model=f"local-dir:{setup['clip']}", sam_model=f"local-dir:{setup['sam']}",
                        image_size=56, device="cpu", backend="torch", feature_layers=(1, 2, 3, 4))
    engine = ClipSAM.from_config(cfg)
    subset = open_dataset(setup["data"], "auto", [category], split="test").category(category)
    items = [subset[i] for i in range(len(subset))]
    results = engine.segment_folder([im for im, _, _ in items], category,
                                    settings={"rough_sigma": 4.0, "embed_without_prompts": False})
    masks = np.stack([squash_mask(m, 56) for _, m, _ in items])
    labels = np.array([int(s.label) for _, _, s in items])
    scores = [r.image_score for r in results]
    return {"rough": evaluate(np.stack([squash_map(r.rough_map, 56) for r in results]), masks, scores, labels),
            "final": evaluate(np.stack([squash_map(r.final_map, 56) for r in results]), masks, scores, labels)}


def test_eval_mutual_reports_the_mode_and_published_metrics_per_category(setup, mutual_run):
    out, data = mutual_run["out"], mutual_run["json"]
    assert "mode: mutual" in out and "rough map: mutual (each category's test images as one folder of 7 images)" in out
    assert "pAUROC" in out and "iAUROC" in out and "PRO" in out
    assert data["settings"]["mode"] == "mutual" and data["engine"]["mode"] == "mutual"
    assert data["engine"]["folder"]["settings"]["radii"]  # the §5 settings travel with the figures
    assert list(data["categories"]) == sorted(CATEGORIES)
    for cat, r in data["categories"].items():
        assert r["images"] == 7 and r["anomalous"] == 4 and r["folder"]["size"] == 7
        assert "curves" not in r  # the plotted curves stay out of the JSON
        for m in ("rough", "final"):
            assert all(v is None or 0.0 <= v <= 1.0 for v in r[m].values()), (cat, m, r[m])
            assert r[m]["pixel_auroc"] > 0.5  # mutual scoring finds these defects with a random CLIP
        # both rows take the image metrics from the folder's image score
        assert r["rough"]["image_auroc"] == r["final"]["image_auroc"]
    # the same figures as segment_folder + the metrics computed directly
    direct = _direct_folder_metrics(setup, "metal")
    for m in ("rough", "final"):
        for k, v in direct[m].items():
            got = data["categories"]["metal"][m][k]
            assert (got is None and math.isnan(v)) or got == pytest.approx(v, abs=1e-6), (m, k)


def test_eval_mutual_with_shots_fuses_references_into_each_folder(setup, mutual_run, tmp_path):
    code, out, err = run_cli("eval", "--dataset-root", setup["data"], "--mutual", "--shots", 1, "--seeds", 1,
                             "--categories", "metal", "--json", tmp_path / "s.json", *setup["args"])
    assert code == 0, err
    assert "mode: mutual" in out and "fused with the folder's mutual map" in out and "rough 1-shot" in out
    few = json.loads((tmp_path / "s.json").read_text())["few_shot"]["1"]
    got = few["categories"]["metal"]["final"]
    assert all(v is None or 0.0 <= v <= 1.0 for v in got.values())
    assert few["references"]["0"]["metal"]  # the reference drawn is named
    # the reference changed the fused map: not the zero-shot figures again
    assert got != mutual_run["json"]["categories"]["metal"]["final"]


def test_eval_mutual_refusals_say_what_to_do(setup, tmp_path):
    code, _, err = run_cli("eval", "--dataset-root", setup["data"], "--mutual", "--limit", 3, *setup["args"])
    assert code == 2 and "at least 5 images per category" in err and "fabric (3)" in err and "--limit" in err
    code, _, err = run_cli("eval", "--dataset-root", setup["data"], "--mutual", "--rough-only", *setup["args"])
    assert code == 2 and "--rough-only" in err and "Traceback" not in err
    a_file = tmp_path / "plots.png"
    a_file.write_bytes(b"x")
    code, _, err = run_cli("eval", "--dataset-root", setup["data"], "--plots", a_file, *setup["args"])
    assert code == 2 and "is a file" in err and a_file.read_bytes() == b"x"


def _looks_drawn(path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[0] > 200 and rgb.shape[1] > 200
    assert rgb.std() > 10, f"{path.name} looks blank"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20, f"{path.name} has too few colours"
    return rgb


def _has_colour(rgb: np.ndarray, hex_colour: str, at_least: int = 50) -> bool:
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - want).sum(axis=-1) < 30).sum()) >= at_least


def test_eval_plots_writes_per_category_curves_and_bar_charts(mutual_run):
    from napari_clipsam.report.eval_plots import COLOURS

    plots = mutual_run["plots"]
    expected = {f"{c}_{level}_{kind}.png" for c in CATEGORIES for level in ("pixel", "image") for kind in ("roc", "pr")}
    expected |= {f"{c}_metrics.png" for c in CATEGORIES} | {"mean_metrics.png"}
    assert {p.name for p in plots.iterdir()} == expected
    assert f"{len(expected)} plot(s) written" in mutual_run["out"]
    for p in plots.iterdir():
        rgb = _looks_drawn(p)
        assert _has_colour(rgb, COLOURS["final"]), f"{p.name}: the final map's curve/bars are not drawn"


def test_plots_of_a_category_without_normal_images_have_no_image_curves(tmp_path):
    """Image-level curves need normal and defective images; pixel curves and bars are still drawn."""
    from napari_clipsam.report.eval_plots import write_eval_plots
    from napari_clipsam.training.evaluation import category_metrics

    rng = np.random.default_rng(0)
    masks = [np.zeros((32, 32), bool) for _ in range(4)]
    for i, m in enumerate(masks):
        m[4 + i:12 + i, 6:14] = True
    maps = [{"rough": rng.random((32, 32)).astype(np.float32) + 0.5 * m, "final": m * 0.9 + 0.05} for m in masks]
    r = category_metrics(maps, masks, [1, 1, 1, 1], 0.3, curves=True)
    assert r["curves"]["rough"]["image"] is None and r["curves"]["final"]["pixel"] is not None
    assert math.isnan(r["rough"]["image_auroc"])
    results = {"categories": {"odd name/1": r}, "mean": {"rough": r["rough"], "final": r["final"]}}
    written = write_eval_plots(results, tmp_path / "p")
    assert sorted(p.name for p in written) == ["mean_metrics.png", "odd_name_1_metrics.png",
                                               "odd_name_1_pixel_pr.png", "odd_name_1_pixel_roc.png"]
    for p in written:
        _looks_drawn(p)


def test_thinned_curves_keep_their_ends_and_area():
    from sklearn.metrics import roc_auc_score

    from napari_clipsam.metrics.curves import roc_and_pr, thin

    rng = np.random.default_rng(1)
    labels = rng.random(200_000) < 0.05
    scores = rng.normal(size=labels.size) + 1.5 * labels
    c = roc_and_pr(scores, labels, max_points=300)
    fpr, tpr = np.array(c["roc"]["fpr"]), np.array(c["roc"]["tpr"])
    assert len(fpr) <= 302 and (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), abs=2e-3)
    recall = np.array(c["pr"]["recall"])
    assert recall[0] == 1.0 and recall[-1] == 0.0 and len(recall) <= 302
    assert roc_and_pr(scores, np.zeros_like(labels)) is None
    x, y = thin(np.arange(5.0), np.arange(5.0), 10)
    assert x.tolist() == [0, 1, 2, 3, 4]
