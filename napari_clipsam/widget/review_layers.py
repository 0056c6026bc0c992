"""The folder review's image layers: one per kind of image, hidden (never removed) while another kind is shown.

A review moves through images of different kinds: RGB or gray, 2-D or a stack. New pixels of the same kind go
into the same Image layer (``layer.data = image``) and its output layers are emptied. An image of another kind
needs another layer: the layer of the kind it replaces is then **hidden** (``visible = False``, its output layers
emptied and hidden too) and kept for the rest of the session, and it is reused, with the new image's data, when
its kind comes back.

Why hidden and not removed: removing the RGB image's layers and then drawing a *new* gray Image layer crashed
napari (SIGSEGV in Mesa's swrast/llvmpipe ``glDrawArrays`` through vispy, with a cold shader cache; issue 18),
whatever the CPU backend of Mesa and of the engine. Keeping every kind's layer (and shader program) alive avoids
that path entirely, and is also quicker: removing a napari layer costs a full garbage collection.

A hidden (spare) layer is marked as a ClipSAM layer in its metadata (``ROLE``), so the dock's image picker does
not list it: a Run, the exports, the object table and prompts all follow the picker's current layer, which the
review sets to the visible image. Its output layers are emptied when it is hidden, so nothing of the image it
showed can be edited or exported from them.
"""
from __future__ import annotations

import numpy as np

from ..io.images import default_contrast_limits
from .layers import ROLE

SPARE = "review spare"  # the ROLE value of a hidden review layer


def image_kind(image: np.ndarray) -> tuple[bool, int]:
    """(rgb, ndim) of a review image: H×W×C or N×H×W×C (C 3 or 4) are RGB(A), anything else gray."""
    rgb = image.ndim in (3, 4) and image.shape[-1] in (3, 4)
    return rgb, image.ndim


class ReviewLayers:
    """The review's Image layers for one dock (``widget``: the :class:`~.folder.ReviewHost`)."""

    def __init__(self, widget):
        self.widget = widget
        self.current = None  # the visible review layer, or None
        self._by_kind: dict[tuple[bool, int], object] = {}

    def spares(self) -> list:
        """The hidden review layers still in the viewer."""
        return [x for x in self._live().values() if not x == self.current]

    def show(self, image: np.ndarray, name: str, metadata: dict):
        """Put ``image`` in the review layer of its kind (reused, or made once) and make that one the visible
        review layer; the layer shown before, when of another kind, is hidden. Returns the layer."""
        kind = image_kind(image)
        layer = self._live().get(kind)
        if self.current is not None and not self.current == layer:
            self.hide()
        if layer is None:
            layer = self.widget.viewer.add_image(image, name=name, rgb=kind[0], metadata=dict(metadata))
            self._by_kind[kind] = layer
        else:
            layer.metadata.pop(ROLE, None)  # listed in the image picker again (from the rename below)
            layer.data = image
            layer.metadata.update(metadata)
            layer.name = name
            layer.visible = True
            self.widget.restart_outputs(layer)
            outputs = self.widget.outputs_for(layer)
            for out in [] if outputs is None else outputs.layers():
                out.visible = True
        show_as_clipsam_sees(layer, image)
        self.current = layer
        return layer

    def hide(self) -> None:
        """Hide the visible review layer (its outputs emptied and hidden); none is visible after."""
        layer, self.current = self.current, None
        if layer is None or not self._in_viewer(layer):
            return
        layer.visible = False
        layer.metadata[ROLE] = SPARE  # before the rename: the picker drops it when it refreshes
        what = ("RGB" if layer.rgb else "gray") + (" stack" if layer.data.ndim > (3 if layer.rgb else 2) else "")
        layer.name = f"ClipSAM review (spare {what} layer)"  # before the reset: the outputs are renamed after it
        outputs, loop = self.widget.outputs_for(layer), self.widget.correction_for(layer)
        if loop is not None:
            loop.cancel()
        if outputs is not None:  # emptied, no layer removed: nothing of this image stays editable or exportable
            outputs.reset(outputs.n_frames, outputs.shape, in_place=True)
        for out in [] if outputs is None else outputs.layers():
            out.visible = False

    def _in_viewer(self, layer) -> bool:
        return any(layer == x for x in self.widget.viewer.layers)  # ==: a proxy equals its layer

    def _live(self) -> dict:
        """The kept layers the person has not deleted."""
        self._by_kind = {k: x for k, x in self._by_kind.items() if self._in_viewer(x)}
        return self._by_kind


def show_as_clipsam_sees(layer, image: np.ndarray) -> None:
    """Contrast limits of a review image: for 16-bit and float data, the percentiles the CLI and evaluation
    normalise with (the widget runs on what the layer shows), so a review labels what `segment` would see."""
    limits = default_contrast_limits(image)
    if limits is None or not limits[1] > limits[0]:
        layer.reset_contrast_limits()
    else:
        finite = image[np.isfinite(image)]
        layer.contrast_limits_range = (min(limits[0], float(finite.min())), max(limits[1], float(finite.max())))
        layer.contrast_limits = limits
