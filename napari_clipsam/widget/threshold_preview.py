"""Help with τ_prompt: a suggested value from the rough map shown now, and a live preview of what a value selects.

*Suggest* sets τ_prompt from the chosen image's rough map (the shown frame): 90 % of the way from its lowest to
its highest value, so the strongest tenth of its range becomes prompt regions, or lower (a fifth, … half) when
that tenth holds only specks the prompt step drops (the same value the status line proposes after a Run that
found nothing). *preview* shows, while ticked, the pixels of that rough map at or above
τ_prompt as outlines in a ``<image> τ_prompt preview`` labels layer, redrawn as the spin box changes, with the
selected area and the number of regions on the status line; these are the regions the next Run turns into SAM
prompts (before the engine's size filter drops the smallest). The preview is never exported and never a source.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import QObject

from ..config import ClipSAMConfig
from .layers import ROLE
from .pyramid import level0

PREVIEW_COLOUR = "#00e5ff"


def suggested_prompt_threshold(*rough_maps, thresholds: dict | None = None) -> float:
    """τ_prompt selecting the strongest tenth of the rough maps' range (3 decimals, never below their minimum).

    With ``thresholds`` (a result's provenance ``thresholds``: the prompt step's settings), the strongest tenth,
    fifth, … down to half of the range, the first at which the engine's own prompt step
    (:func:`~napari_clipsam.mmr.prompts.kept_components`) keeps a region: above a tenth, regions smaller than
    ``min_component_px`` (after the opening) would be dropped as noise and the Run would find nothing."""
    low = float(min(np.min(m) for m in rough_maps))
    peak = float(max(np.max(m) for m in rough_maps))
    taus = [max(low, round(low + share * (peak - low), 3)) for share in (0.9, 0.8, 0.7, 0.6, 0.5)]
    if thresholds is None:
        return taus[0]
    from types import SimpleNamespace

    from ..mmr.prompts import kept_components

    for tau in taus:
        settings = SimpleNamespace(**{**thresholds, "prompt_threshold": tau})
        if any(kept_components(m, settings)[2] for m in rough_maps):
            return tau
    return taus[-1]


class ThresholdPreview(QObject):
    """The τ_prompt row's *Suggest* button and *preview* box, for the dock ``widget`` (a ClipSAMWidget)."""

    def __init__(self, widget):
        super().__init__(widget)
        self.w, self.c = widget, widget.c
        self.layer = None
        self.c.tau_suggest.clicked.connect(lambda: self.suggest())
        self.c.tau_preview.toggled.connect(lambda _: self.update())
        self.c.prompt_threshold.valueChanged.connect(lambda _: self.update())
        widget.run_finished.connect(lambda _: self.update(report=False))  # the Run's summary stays
        widget.picker.changed.connect(lambda _: self.update(report=False))

    def rough(self):
        """(rough-map layer, the shown frame's rough map) of the chosen image, or (None, None) before a Run."""
        outputs = self.w.current_outputs()
        layer = getattr(outputs, "rough", None)
        if layer is None or not outputs.results:
            return None, None
        frame = outputs.displayed_frame()
        data = level0(layer.data)
        return layer, data if frame is None else data[frame]

    def suggest(self) -> float | None:
        _, plane = self.rough()
        if plane is None:
            self.w.set_status("Run ClipSAM on this image first: the suggested τ_prompt comes from its rough map.")
            return None
        outputs = self.w.current_outputs()
        shown = outputs.results.get(outputs.displayed_frame())
        tau = suggested_prompt_threshold(plane, thresholds=None if shown is None else {
            **ClipSAMConfig().thresholds(), **shown.provenance.get("thresholds", {})})
        share = round(100 * (float(plane.max()) - tau) / max(float(np.ptp(plane)), 1e-12))
        self.c.prompt_threshold.setValue(tau)  # → the preview follows
        self.w.set_status(f"τ_prompt set to {tau:.3f}: the strongest {share} % of this rough map's range "
                          f"({float(plane.min()):.3f}–{float(plane.max()):.3f}), enough for a prompt region. "
                          f"{self._selection(plane, tau)} Press Run to find prompts with it.")
        return tau

    def update(self, report: bool = True) -> None:
        """Redraw the preview for τ_prompt now (or remove it when the box is unticked); ``report``: say what it
        selects on the status line."""
        viewer = self.w.viewer
        if self.layer is not None and self.layer not in viewer.layers:
            self.layer = None  # the person removed it
        rough, plane = self.rough() if self.c.tau_preview.isChecked() else (None, None)
        if plane is None:
            if self.layer is not None:
                viewer.layers.remove(self.layer)
                self.layer = None
            if self.c.tau_preview.isChecked() and report:
                self.w.set_status("The τ_prompt preview appears after the first Run on this image (it shows the "
                                  "rough map's pixels at or above τ_prompt).")
            return
        tau = self.c.prompt_threshold.value()
        if rough.multiscale:  # a pyramid: each level thresholded (max-halving commutes with ≥ τ)
            data = [(np.asarray(level) >= tau).astype(np.uint8) for level in rough.data]
        else:
            data = (np.asarray(rough.data) >= tau).astype(np.uint8)
        name = f"{self.w.current_outputs().source.name} τ_prompt preview"
        if self.layer is None or self.layer.multiscale != rough.multiscale \
                or level0(self.layer.data).shape != level0(rough.data).shape:
            if self.layer is not None:
                viewer.layers.remove(self.layer)
            from napari.utils.colormaps import DirectLabelColormap

            active = viewer.layers.selection.active  # adding a layer selects it: give the selection back
            self.layer = viewer.add_labels(
                data, name=name, opacity=0.9, scale=rough.scale, translate=rough.translate,
                colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: PREVIEW_COLOUR}),
                metadata={ROLE: "tau preview", "clipsam": {}})
            self.layer.contour = 1
            if active is not None and active in viewer.layers:
                viewer.layers.selection.active = active
        else:
            self.layer.data = data
            self.layer.name = name
        if report:
            self.w.set_status(f"Preview at τ_prompt {tau:.3f}: {self._selection(plane, tau)}")

    @staticmethod
    def _selection(plane: np.ndarray, tau: float) -> str:
        from scipy import ndimage

        selected = plane >= tau
        n_regions = int(ndimage.label(selected)[1])
        return (f"{100 * selected.mean():.1f} % of the image in {n_regions} region(s) would become prompt "
                "regions.")
