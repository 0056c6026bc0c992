"""Image-score AUROC of folder mutual scoring per category and seed, for each image-score setting (issue 21).

``python -m napari_clipsam.bench.image_score [--seeds 0,1] [--protocol review,quality]`` prints one line per
(protocol, seed, category): the image AUROC of each variant below and the pixel AUROC of the rough map's mutual
part (the same for every variant: they change the image score only, which the script checks), then the mean and
each variant's largest drop against ``before``. Tiny random models (:mod:`napari_clipsam.weights.tiny`), so the
figures say how well the settings separate the synthetic defects by patch appearance alone.

Protocols (the two folders the tests measure):

- ``review``: ``tests/test_review_score_auroc.py``'s folder, 12 images of 64 px (every other one defective, the
  category's defects in turn), ``tiny_engine(seed)``'s models (56 px, a 4×4 patch grid); seed s draws images
  ``100 + 1000·s + i`` (seed 0 is the test's folder).
- ``quality``: ``tests/test_mutual_quality.py``'s folder, 6 good + 14 defective images of 128 px, the tiny CLIP at
  224 px (a 16×16 grid), images of ``_image_seed(seed, …)``.

The pixel AUROC is of the calibrated mutual map brought to image resolution as ``segment_folder`` does (bilinear
to the CLIP input, then :func:`~napari_clipsam.clip.rough_map.to_image_resolution`), before MMR and SAM.
"""
from __future__ import annotations

import argparse

import numpy as np

#: name → the settings of that variant (``before``: the image score of the rough map alone, as up to 2026-12-06).
VARIANTS = {
    "before": {"mutual_image_window": None, "mutual_image_top": 0.0},
    "window2": {"mutual_image_window": 2, "mutual_image_top": 0.0},
    "top0.02": {"mutual_image_window": None, "mutual_image_top": 0.02},
    "window2+top0.02": {"mutual_image_window": 2, "mutual_image_top": 0.02},
}


def folder_items(protocol: str, category: str, seed: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """(image, defect mask, defect type or "good") of the protocol's folder."""
    from ..data.synthetic import CATEGORY_DEFECTS, _image_seed, synthetic_image

    kinds = CATEGORY_DEFECTS[category]
    if protocol == "review":
        out = []
        for i in range(12):
            defect = kinds[(i // 2) % len(kinds)] if i % 2 else "good"
            out.append(synthetic_image(category, defect, size=64, seed=100 + 1000 * seed + i) + (defect,))
        return out
    out = [synthetic_image(category, None, 128, _image_seed(seed, category, "test", "good", i)) + ("good",)
           for i in range(6)]
    for i in range(14):
        d = kinds[i % len(kinds)]
        out.append(synthetic_image(category, d, 128, _image_seed(seed, category, "test", d, i)) + (d,))
    return out


def make_engine(protocol: str, seed: int):
    """The protocol's engine on tiny random models: ``review`` as ``napari_clipsam.testing.tiny_engine(seed)``
    (56 px), ``quality`` at 224 px as ``tests/test_mutual_quality.py`` builds it."""
    from ..config import ClipSAMConfig
    from ..engine.clipsam import ClipSAM
    from ..weights.tiny import make_tiny_clip, make_tiny_sam

    size, extra = (56, {"umci_heads": 4}) if protocol == "review" else (224, {})
    clip, tok = make_tiny_clip(seed, image_size=size)
    cfg = ClipSAMConfig(image_size=size, feature_layers=(1, 2, 3, 4), device="cpu", backend="torch", **extra)
    return ClipSAM.from_models(clip, tok, make_tiny_sam(seed), None, cfg)


def measure_folder(engine, items, variants=VARIANTS) -> dict[str, float]:
    """``{variant: image AUROC, "pixel_auroc": …}`` of one folder (features encoded once, as segment_folder does)."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from ..clip.rough_map import to_image_resolution
    from ..engine.batching import stack
    from ..engine.folder import mutual_maps
    from ..engine.progress import Stepper
    from ..io.images import image_key, normalise_image
    from ..metrics.pixel import pixel_auroc

    prepared = [normalise_image(it[0]) for it in items]
    keys = [image_key(rgb) for rgb, _ in prepared]
    feats = engine._features_for(prepared, keys, True, Stepper(None, None))
    layers = stack([feats[k][1] for k in keys])
    truth = [it[2] != "good" for it in items]
    out, first = {}, None
    for name, settings in variants.items():
        maps, scores = mutual_maps(engine.config.replace(**settings), layers)
        if first is None:
            first = maps
        elif not torch.equal(maps, first):
            raise AssertionError(f"variant {name} changed the rough map; it should change the image score only")
        out[name] = float(roc_auc_score(truth, scores.numpy()))
    S = engine.config.image_size
    up = F.interpolate(first[:, None], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    rough = [to_image_resolution(r, rgb.shape[:2], engine.config.rough_sigma) for r, (rgb, _) in zip(up, prepared)]
    out["pixel_auroc"] = float(pixel_auroc(np.stack(rough), np.stack([it[1] for it in items])))
    return out


def measure(protocols=("review", "quality"), seeds=(0, 1), categories=None, report=print) -> dict:
    """``{(protocol, seed, category): measure_folder(...)}``, each line reported as it is measured."""
    from ..data.synthetic import CATEGORIES

    rows = {}
    for protocol in protocols:
        for seed in seeds:
            engine = make_engine(protocol, seed)
            for c in categories or CATEGORIES:
                row = rows[(protocol, seed, c)] = measure_folder(engine, folder_items(protocol, c, seed))
                report(f"{protocol:7s} seed {seed} {c:6s} " + " ".join(f"{k} {v:.3f}" for k, v in row.items()))
    return rows


def summary(rows: dict, baseline: str = "before") -> list[str]:
    """Per protocol and variant: mean image AUROC over its rows and the largest drop against ``baseline``."""
    lines = []
    for protocol in dict.fromkeys(k[0] for k in rows):
        mine = [r for k, r in rows.items() if k[0] == protocol]
        for name in mine[0]:
            if name == "pixel_auroc":
                continue
            drop = max(r[baseline] - r[name] for r in mine)
            lines.append(f"{protocol:7s} {name:16s} mean image AUROC {np.mean([r[name] for r in mine]):.3f}, "
                         f"largest drop against {baseline} {drop:+.3f}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--protocol", default="review,quality")
    parser.add_argument("--categories", default=None, help="comma-separated (default: all five)")
    args = parser.parse_args(argv)
    rows = measure(args.protocol.split(","), [int(s) for s in args.seeds.split(",")],
                   args.categories.split(",") if args.categories else None)
    for line in summary(rows):
        print(line)


if __name__ == "__main__":
    main()
