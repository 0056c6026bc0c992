"""``eval --mutual``: folder mutual scoring (method §5) evaluated per category with the published protocol.

Each category's picked test images (normal and defective together, as a person's folder of one product would be)
are one folder for :meth:`~napari_clipsam.engine.clipsam.ClipSAM.segment_folder`. Its results are squashed and
scored as :mod:`.evaluation` scores per-image runs: ``rough`` is the fused map MMR ran on (``result.rough_map``),
``final`` the final map; the image-level metrics of both rows use ``result.image_score`` (the folder's re-scored
image score), not the maps' maxima. Maps are not kept in the evaluation map cache — each one depends on the whole
folder — but the engine's per-image CLIP features are, so a second run does not encode again.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .resize import squash_map, squash_mask


def check_mutual_plan(engine, picks: dict[str, list[int]], rough_only: bool) -> None:
    """Refuse, before any work, a mutual evaluation that cannot run: rough-only (mutual scoring's rough map is
    made inside the folder run, which also runs SAM), or a category with fewer picked images than a folder needs."""
    if rough_only:
        raise InvalidInputError("--mutual cannot be combined with --rough-only: folder mutual scoring runs the whole "
                                "pipeline on each category's folder (its 'rough' row is the fused map SAM refined); "
                                "drop --rough-only, or drop --mutual for a CLIP-only evaluation.")
    need = engine.config.mutual_min_images
    small = {c: len(p) for c, p in picks.items() if len(p) < need}
    if small:
        listed = ", ".join(f"{c} ({n})" for c, n in small.items())
        raise InvalidInputError(f"--mutual scores each category's test images as one folder and needs at least "
                                f"{need} images per category; too few in: {listed}. Raise --limit (or drop it), "
                                "or leave those categories out with --categories.")


def mutual_category(engine, subset, picks: list[int], name: str, resolution: int, max_fpr: float, bar,
                    curves: bool = False) -> dict:
    """One category's metrics from one ``segment_folder`` run on its picked images (in ``picks`` order), plus
    ``"folder"``: the folder's size and the rough-map description of its results' provenance."""
    from .evaluation import category_metrics

    items = [subset[i] for i in picks]
    done = [0]

    def progress(_stage: str, fraction: float) -> None:  # the bar moves with the folder run, never backwards
        target = int(fraction * len(items))
        if target > done[0]:
            bar.update(target - done[0])
            done[0] = target

    results = engine.segment_folder([im for im, _, _ in items], name, progress=progress)
    bar.update(len(items) - done[0])
    maps = [{"rough": squash_map(r.rough_map, resolution), "final": squash_map(r.final_map, resolution)}
            for r in results]
    masks = [squash_mask(mask, resolution) for _, mask, _ in items]
    labels = [int(sample.label) for _, _, sample in items]
    scores = np.asarray([r.image_score for r in results], np.float64)
    out = category_metrics(maps, masks, labels, max_fpr, image_scores=scores, curves=curves)
    prov = results[0].provenance
    out["folder"] = {"size": len(items), "rough_map": prov.get("rough_map", "mutual"),
                     "settings": prov.get("folder", {}).get("settings")}
    return out


def mutual_provenance(provenance: dict, results: dict) -> dict:
    """The evaluation's engine provenance for a mutual run: mode ``mutual``, the folder settings, and a rough-map
    description that says each category was its own folder."""
    first = next(iter(results.values()))["folder"] if results else {}
    described = first.get("rough_map", "mutual")
    parts = described.split(" + ")[1:]  # what was fused with the mutual map (CLIP, few-shot)
    sizes = sorted({r["folder"]["size"] for r in results.values()})
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    head = f"mutual (each category's test images as one folder of {size} images)"
    return {**provenance, "mode": "mutual", "clip_mode": provenance.get("mode"),
            "rough_map": " + ".join([head, *parts]), "folder": {"settings": first.get("settings")}}
