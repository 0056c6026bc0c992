"""What the dock's tests share: the dock opened as napari's Plugins menu opens it, Runs and refines waited for, and
napari's deprecations as errors. The ``make_widget`` fixture (tests/conftest.py) opens a dock with these, and
its ``image`` fixture is the picture most of these tests segment.

Import it after ``pytest.importorskip("napari")``: it imports napari_clipsam's widget (Qt).
"""
from __future__ import annotations

import threading
import time

import pytest

from napari_clipsam.widget import ClipSAMWidget

WAIT_MS = 20_000
TAU_PROMPT = 0.3
"""The tiny random CLIP's rough map on the synthetic test images peaks around 0.6."""
OBJECT_NAME = "machined part"

STRICT_NAPARI = [pytest.mark.filterwarnings("error::FutureWarning"),
                 pytest.mark.filterwarnings("error::DeprecationWarning:napari")]
"""``pytestmark`` of the dock's test modules: FutureWarnings (e.g. napari's private access through the plugin's
viewer proxy, deprecated in napari 0.9, refused from 0.10) and deprecations raised in napari or in this package
fail the tests (the module field matches "napari" and "napari_clipsam")."""


def plugin_viewer(viewer):
    """The viewer as napari hands it to a plugin widget (a proxy allowing public API only): taken from the widget
    napari opens from the manifest, whose dock is then closed again."""
    dock, opened = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    proxy = opened.viewer
    viewer.window.remove_dock_widget(dock)
    assert proxy is not viewer and proxy == viewer  # a proxy, not the viewer object itself
    return proxy


def open_dock(viewer, engine, *, prompt_threshold: float | None = TAU_PROMPT, object_name: str | None = OBJECT_NAME,
              **kwargs) -> ClipSAMWidget:
    """A ClipSAM dock on ``viewer`` holding napari's plugin proxy, with ``engine`` injected (None: built from its
    settings), τ_prompt and the object name set as a person would (None leaves a control as it opened)."""
    widget = ClipSAMWidget(plugin_viewer(viewer), engine=engine, **kwargs)
    viewer.window.add_dock_widget(widget, name="ClipSAM")
    if prompt_threshold is not None:
        widget.c.prompt_threshold.setValue(prompt_threshold)
    if object_name is not None:
        widget.c.object_name.setText(object_name)
    return widget


def run_and_wait(qtbot, widget, *, done: bool = True, **kwargs) -> None:
    """Press Run (``widget.run(**kwargs)``) and wait for the end; ``done``: the status must then say Done."""
    assert widget.run(**kwargs)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    if done:
        assert "Done" in widget.status, widget.status


def refine_and_wait(qtbot, loop, edit) -> None:
    """Make an ``edit`` of the prompts and wait for the correction ``loop``'s refine it starts."""
    with qtbot.waitSignal(loop.refined, timeout=WAIT_MS):
        edit()


class GatedEngine:
    """The real tiny engine, whose progress callback blocks (while ``gate`` is set) until Cancel is pressed."""

    def __init__(self, engine):
        self._engine = engine
        self.gate = True
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def segment(self, image, object_name, *, progress=None, cancelled=None, contrast_limits=None, settings=None):
        def blocking(stage, fraction):
            self.started.set()
            deadline = time.monotonic() + 15
            while self.gate and not cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if progress is not None:
                progress(stage, fraction)

        return self._engine.segment(image, object_name, progress=blocking, cancelled=cancelled,
                                    contrast_limits=contrast_limits, settings=settings)
