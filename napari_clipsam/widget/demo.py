"""``python -m napari_clipsam.widget.demo``: napari with the ClipSAM dock on tiny random-weight models.

Started by ``napari-clipsam demo`` (which writes the models and the demo's own widget settings first, so a
person's real settings are left alone). The models are random: the maps and masks show the interface, not what
ClipSAM finds with real weights. Nothing is downloaded.
"""
from __future__ import annotations

TITLE = "napari — ClipSAM demo: tiny random models, the interface only (no real detection)"
NOTICE = ("ClipSAM demo: the models are tiny and random, so the maps and masks show the interface only. "
          "Download the real weights with `napari-clipsam weights download` for real detection.")


def open_demo(viewer):
    """Open the ClipSAM dock (from the manifest, as the Plugins menu does) and the metal sample in ``viewer``,
    with the sample as the dock's source. Returns the widget."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-clipsam", "ClipSAM")
    viewer.open_sample("napari-clipsam", "metal")
    widget.select_source(viewer.layers["metal plate"])
    viewer.title = TITLE
    return widget


def main() -> int:
    import napari
    from napari.utils.notifications import show_info

    viewer = napari.Viewer(title=TITLE)  # the viewer (and its OpenGL context) before anything heavy
    open_demo(viewer)
    show_info(NOTICE)
    napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
