"""Making the four output layers of one source image (see :mod:`.layers`), one napari layer add per call.

Adding a layer is napari's most expensive step at the end of a Run: ~0.1 s of Python (layer controls, layer list,
vispy node) plus its first draw (shader compilation, ~0.05–0.15 s with software OpenGL), at the viewer's pace and
in the GUI thread. The dock therefore adds a new image's layers one per turn of Qt's event loop (see
:func:`.staging.in_turns`), so the window keeps drawing and answering between them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

ROLE = "clipsam_output"
CREATION_ORDER = ("rough map", "masks", "boxes", "prompts")
"""The order in which a new image's layers are added: napari stacks each new layer on top (prompts above all)."""
LABELS = ("positive", "negative")
SOURCES = ("clip", "user")
POINT_COLOURS = {"positive": "#39ff14", "negative": "#ff2d55"}


def categorical(values, categories) -> pd.Categorical:
    return pd.Categorical(list(values), categories=list(categories))


def meta(role: str) -> dict:
    return {ROLE: role, "clipsam": {}}


def add_rough(viewer, name: str, blank, geometry: dict):
    return viewer.add_image(blank, name=name, colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.5,
                            blending="additive", metadata=meta("rough map"), **geometry)


def add_masks(viewer, name: str, shape: tuple[int, ...], metadata: dict, geometry: dict):
    return viewer.add_labels(np.zeros(shape, np.int32), name=name, opacity=0.55,
                             metadata={**meta("masks"), **metadata},
                             features=pd.DataFrame({"index": np.zeros(0, int), "class": np.zeros(0, object)}),
                             **geometry)


def add_boxes(viewer, name: str, ndim: int, geometry: dict):
    return viewer.add_shapes(ndim=ndim, name=name, shape_type="rectangle", edge_color="#00e5ff",
                             face_color="transparent", edge_width=2, metadata=meta("boxes"),
                             features=pd.DataFrame({"source": categorical([], SOURCES)}),
                             feature_defaults={"source": "user"}, **geometry)


def add_prompts(viewer, name: str, ndim: int, point_size: int, geometry: dict):
    features = pd.DataFrame({"label": categorical([], LABELS), "source": categorical([], SOURCES)})
    return viewer.add_points(np.zeros((0, ndim)), name=name, features=features,
                             feature_defaults={"label": "positive", "source": "user"}, face_color="label",
                             face_color_cycle=POINT_COLOURS, border_color="white", size=point_size,
                             metadata=meta("prompts"), **geometry)
