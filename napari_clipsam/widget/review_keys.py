"""The folder review's keys: bound on the viewer only while a review is open, and exactly these unbound on Close
(nothing else of the viewer's). Alt+Right next, Alt+Left previous, Alt+A accept, Alt+R reject, Alt+D skip
(defer), Alt+G good part (accepted with no objects and added to the normal references), Alt+N next flagged. None
of them is a napari shortcut (napari's Alt+S saves a screenshot)."""
from __future__ import annotations

KEYS = {"Alt-Right": "next_image", "Alt-Left": "previous_image", "Alt-A": "accept", "Alt-R": "reject",
        "Alt-D": "skip", "Alt-G": "accept_as_reference", "Alt-N": "next_flagged"}
"""Key → the method of the review panel it calls."""


class ReviewKeys:
    """Binds :data:`KEYS` on ``host.viewer`` to the methods of ``panel``."""

    def __init__(self, host, panel):
        self.host, self.panel = host, panel
        self.bound = False

    def _handler(self, method: str):
        def handler(viewer):
            getattr(self.panel, method)()

        return handler

    def bind(self) -> None:
        if not self.bound:
            for key, method in KEYS.items():
                self.host.viewer.bind_key(key, self._handler(method), overwrite=True)
            self.bound = True

    def unbind(self) -> None:
        if self.bound:
            for key in KEYS:
                self.host.viewer.bind_key(key, None)
            self.bound = False
