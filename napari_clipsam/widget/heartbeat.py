"""The status line while a Run works: the stage it is in and the seconds it has run, ticking.

A long stage (a one-time model conversion of minutes, SAM's encoder on a large image) reports nothing for a
while; the seconds counting up show the person that the window is alive and the job is still going. The same
timer measures how long the GUI thread went without handling events (:attr:`Heartbeat.longest_gap_s`: the
longest gap between two ticks beyond the tick interval), which the tests hold under a bound.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

TICK_MS = 50
"""The heartbeat's interval; the status text changes at most once a second."""


class Heartbeat(QObject):
    """``start(text)`` when a job starts, ``stage(name)`` on each progress report, ``stop()`` when it ends.

    Args:
        status: shows a message (the widget's status line).
    """

    def __init__(self, status: Callable[[str], None], parent: QObject | None = None):
        super().__init__(parent)
        self._status = status
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.text, self.cancellable = "", True
        self.started = self._last = self._stage_started = 0.0
        self._shown_s = -1
        self.longest_gap_s = 0.0
        self.longest_gap_at = ""  # the step shown when the longest gap happened

    @property
    def running(self) -> bool:
        return self.timer.isActive()

    def start(self, text: str) -> None:
        self.started = self._last = self._stage_started = time.perf_counter()
        self.longest_gap_s = 0.0
        self.longest_gap_at = ""  # the step shown when the longest gap happened
        self.text, self._shown_s, self.cancellable = text, -1, True
        self._status(text)
        self.timer.start()

    def stage(self, name: str, cancellable: bool = True) -> None:
        """The job reported ``name``: show it (with the seconds the Run has taken, once past the first).
        ``cancellable=False``: a step Cancel does not stop (the status line then does not offer it)."""
        text = f"{name}…"
        if text != self.text:
            self.text, self._stage_started = text, time.perf_counter()
        self.cancellable = cancellable
        self._show(force=True)

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        gap = now - self._last - TICK_MS / 1000
        if gap > self.longest_gap_s:
            self.longest_gap_s, self.longest_gap_at = gap, self.text
        self._last = now
        self._show()

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        total = int(now - self.started)
        if total == self._shown_s and not force:
            return
        self._shown_s = total
        in_stage = int(now - self._stage_started)
        offer = " (Cancel stops it)" if self.cancellable else ""
        if total < 1:
            self._status(self.text)
        elif in_stage != total and in_stage >= 5:  # a long stage: its own time too
            self._status(f"{self.text} {in_stage} s in this step, {total} s in all{offer}")
        else:
            self._status(f"{self.text} {total} s{offer}")
