"""What the flow scripts share: printing steps and waiting on the Qt event loop (imports nothing heavy)."""
import time

from qtpy.QtWidgets import QApplication


def say(msg):
    print(f"[flow] {msg}", flush=True)


def wait(condition, timeout=120.0, what="condition"):
    end = time.monotonic() + timeout
    while not condition():
        QApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
