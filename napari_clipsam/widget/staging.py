"""Work in the GUI thread cut into turns of Qt's event loop, so the window draws and answers between the pieces."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from qtpy.QtCore import QTimer

log = logging.getLogger(__name__)
TURN_MS = 5


def in_turns(steps: Iterable[Callable[[], None]], then: Callable[[], None],
             stop: Callable[[], bool] = lambda: False) -> None:
    """Call each of ``steps`` in its own turn of the event loop (timers, input and repaints run between two),
    then ``then``. A step that raises is logged and skipped; once ``stop()`` is true the steps left are skipped;
    ``then`` is always called, once."""
    pending = list(steps)

    def turn() -> None:
        if stop():
            pending.clear()
        if not pending:
            then()
            return
        step = pending.pop(0)
        try:
            step()
        except Exception:  # noqa: BLE001 (the caller's continuation must still run: it owns the busy state)
            log.exception("a staged GUI step failed; going on")
        QTimer.singleShot(TURN_MS, turn)

    QTimer.singleShot(TURN_MS, turn)
