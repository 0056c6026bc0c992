"""The image the widget works on: a layer picker that follows the viewer, and frame helpers for stacks.

Layers are held by reference, never looked up by name: renaming a layer only changes its label in the list.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox


class SourcePicker(QObject):
    """Keeps a combo box listing the viewer's image layers (except ClipSAM's own outputs).

    Follows the active layer, and updates when layers are added, removed or renamed. ``changed`` is emitted
    with the newly chosen layer (or None).
    """

    changed = Signal(object)

    def __init__(self, viewer, combo: QComboBox, is_output: Callable[[object], bool]):
        super().__init__(combo)
        self.viewer, self.combo, self._is_output = viewer, combo, is_output
        self._layers: list[Image] = []
        self._current: Image | None = None
        self._named: list[Image] = []
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        viewer.layers.events.moved.connect(self._refresh)
        viewer.layers.selection.events.active.connect(self._follow_active)
        combo.currentIndexChanged.connect(self._on_index)
        self._refresh()
        self._follow_active()

    @property
    def current(self) -> Image | None:
        return self._current

    def candidates(self) -> list[Image]:
        """The image layers that can be segmented (ClipSAM's own outputs left out)."""
        return self._candidates()

    def set_current(self, layer: Image | None) -> None:
        """Choose ``layer`` (it must be one of the listed image layers, or None)."""
        if layer is None or any(layer is x for x in self._layers):
            self._set(layer)

    def disconnect_viewer(self) -> None:
        for emitter, slot in ((self.viewer.layers.events.inserted, self._refresh),
                              (self.viewer.layers.events.removed, self._refresh),
                              (self.viewer.layers.events.moved, self._refresh),
                              (self.viewer.layers.selection.events.active, self._follow_active)):
            emitter.disconnect(slot)
        for layer in self._named:
            layer.events.name.disconnect(self._refresh)
        self._named = []

    # ------------------------------------------------------------------ internals
    def _candidates(self) -> list[Image]:
        return [x for x in self.viewer.layers if isinstance(x, Image) and not self._is_output(x)]

    def _refresh(self, event=None) -> None:
        for layer in self._named:
            layer.events.name.disconnect(self._refresh)
        self._layers = self._candidates()
        self._named = list(self._layers)
        for layer in self._named:
            layer.events.name.connect(self._refresh)
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems([x.name for x in self._layers])
        self.combo.blockSignals(False)
        current = self._current if any(self._current == x for x in self._layers) else None
        if current is None and self._layers:
            active = self.viewer.layers.selection.active
            current = active if any(active == x for x in self._layers) else self._layers[-1]
        self._set(current, force=True)

    def _follow_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if any(active == x for x in self._layers):
            self._set(active)

    def _on_index(self, index: int) -> None:
        self._set(self._layers[index] if 0 <= index < len(self._layers) else None)

    def _set(self, layer: Image | None, force: bool = False) -> None:
        index = next((i for i, x in enumerate(self._layers) if x == layer), -1)
        if self.combo.currentIndex() != index:
            self.combo.blockSignals(True)
            self.combo.setCurrentIndex(index)
            self.combo.blockSignals(False)
        changed = not (layer == self._current)  # equality: a proxy and the layer it wraps are the same layer
        if changed or force:
            self._current = layer
            if changed:
                self.changed.emit(layer)


# ---------------------------------------------------------------------- frames of a stack


def frame_count(layer: Image) -> int | None:
    """None for a 2-D image (H×W or H×W×C with the RGB flag), N for an N×H×W(×C) stack.

    Raises:
        ValueError: more than one axis before the image plane (e.g. T×Z×H×W).
    """
    if layer.ndim == 2:
        return None
    if layer.ndim == 3:
        return int(_level0(layer).shape[0])
    raise ValueError(f"Layer {layer.name!r} has {layer.ndim} dimensions (shape {_level0(layer).shape}); ClipSAM "
                     "works on 2-D images and N×H×W(×C) stacks. Split the extra axes into separate layers.")


def current_frame(viewer, layer: Image) -> int:
    """The stack frame the viewer shows now (from the dims slider, in the layer's data coordinates)."""
    point = np.asarray(viewer.dims.point)[-layer.ndim:]
    index = int(np.round(layer.world_to_data(point)[0]))
    return int(np.clip(index, 0, _level0(layer).shape[0] - 1))


def read_frame(layer: Image, frame: int | None) -> np.ndarray:
    """One frame's pixels as a numpy array (the whole image for 2-D; the full-resolution level if multiscale)."""
    data = _level0(layer)
    return np.asarray(data if frame is None else data[frame])


def plane_shape(layer: Image) -> tuple[int, int]:
    """(H, W) of the image plane."""
    shape = _level0(layer).shape
    return tuple(shape[-3:-1]) if layer.rgb else tuple(shape[-2:])  # type: ignore[return-value]


def contrast_limits_for(layer: Image) -> tuple[float, float] | None:
    """The layer's contrast limits for non-8-bit data (the engine then maps what the user sees), else None."""
    if np.dtype(_level0(layer).dtype) == np.uint8:
        return None
    lo, hi = (float(v) for v in layer.contrast_limits)
    return (lo, hi) if hi > lo else None


def _level0(layer: Image):
    return layer.data[0] if layer.multiscale else layer.data


def frames_text(frames: list) -> str:
    """How the status line names the frames a Run segments: "" for a 2-D image, " (frame 3)", " (frames 0–9)"."""
    if frames == [None]:
        return ""
    what = "frame" if len(frames) == 1 else "frames"
    return f" ({what} {frames[0]}{'–' + str(frames[-1]) if len(frames) > 1 else ''})"
