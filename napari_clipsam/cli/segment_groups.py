"""``segment``'s folder mutual scoring (method §5): which mode a run uses, the groups its images are scored in, and
the scoring of one group (the same function on this machine and in a Ray actor, so both write the same outputs).

Mode: a run of at least ``mutual_min_images`` (5) images (files, or frames of multi-frame TIFFs) is one folder of one
object (``--object``) and is scored by mutual scoring (:meth:`~napari_clipsam.engine.clipsam.ClipSAM.segment_folder`);
``--no-mutual`` or fewer images: each image alone (per-image mode).

Groups: so that memory and time per image stay bounded, a run of more than ``--mutual-group-size`` (G, default
:data:`DEFAULT_GROUP_SIZE`) images is cut into ``ceil(N / G)`` groups of at most G images, balanced and interleaved
in input order (image ``i`` goes to group ``i mod k``), so each group spans the whole folder (a folder sorted by
defect type does not give a group of one defect, which mutual scoring would take for normal). Each group is scored
as one folder. G ≥ 2 × 5, so every group of a run of ≥ 5 images has at least 5.

Resume: images already done are kept as they are (``--overwrite`` redoes them); the others are scored against their
whole group, done images included (read again; their CLIP features and SAM embeddings come from the caches), so a
resumed run gives them the scores an uninterrupted run would have. Adding images to a folder changes every
image's scores (and the groups): the earlier outputs are kept unless ``--overwrite``.
"""
from __future__ import annotations

from ..io.folders import DEFAULT_GROUP_SIZE, folder_groups  # noqa: F401  (re-exported for the CLI)

MUTUAL, PER_IMAGE = "mutual", "per-image"


def choose_mode(n_images: int, no_mutual: bool, minimum: int) -> tuple[str, str]:
    """``(mode, why)`` for a run of ``n_images`` images of one object."""
    if no_mutual:
        return PER_IMAGE, "--no-mutual"
    if n_images < minimum:
        return PER_IMAGE, (f"mutual scoring needs at least {minimum} images of one object, this run has {n_images}"
                           " (with fewer, --normal references help)")
    return MUTUAL, f"{n_images} images of one object, each scored against the others; --no-mutual: each alone"




def scoring_record(mode: str, why: str, group: dict | None = None) -> dict:
    """The ``scoring`` entry of each exported image's provenance."""
    out = {"mode": mode, "why": why}
    if group is not None:
        out["group"] = group
    return out


def read_group(group: list) -> tuple[list, list, list]:
    """Read one group's images (:class:`~.segment_items.Item`), the same way on this machine and in a Ray actor:
    ``(readable items, their raw pixels, [(item, exception)] for the others)``, each list in group order. An
    image is readable when its pixels are usable by ClipSAM (checked here by normalising them once), so one bad
    image fails alone and not its whole group. A multi-frame file is read once for all of its frames."""
    from ..io.images import normalise_image
    from .segment_items import ItemReader

    reader = ItemReader(keep_one=False)
    readable, pixels, failed = [], [], []
    for item in group:
        try:
            px = reader.read(item)
            normalise_image(px)
        except Exception as exc:  # reported by the caller, for the images it had to do
            failed.append((item, exc))
            continue
        readable.append(item)
        pixels.append(px)
    reader.release()
    return readable, pixels, failed


def score_group(engine, images: list, object_name: str, group: dict) -> list:
    """Segment one group: ``images`` are the raw pixels of its readable images, in order; returns one
    :class:`~napari_clipsam.engine.result.ClipSAMResult` per image with ``scoring`` (mode, group) in its
    provenance. Fewer than ``mutual_min_images`` readable images (some failed to read): each is segmented alone,
    said in the provenance. Exceptions propagate (the caller reports the group's images)."""
    import dataclasses

    minimum = engine.config.mutual_min_images
    if len(images) < minimum:
        why = (f"only {len(images)} image(s) of this group could be read; mutual scoring needs {minimum}: "
               "segmented each alone")
        results = [engine.segment(im, object_name) for im in images]
        record = scoring_record(PER_IMAGE, why)
    else:
        results = engine.segment_folder(images, object_name)
        record = scoring_record(MUTUAL, f"group of {len(images)} images scored against each other", group)
    return [dataclasses.replace(r, provenance={**r.provenance, "scoring": record}) for r in results]


def check_group_size(size: int, minimum: int) -> None:
    from ..errors import InvalidInputError

    if size < 2 * minimum:
        raise InvalidInputError(f"--mutual-group-size must be at least {2 * minimum} (twice the {minimum} images "
                                f"mutual scoring needs, so every group has enough), got {size}.")
