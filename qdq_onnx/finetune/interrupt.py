"""Ctrl-C and SIGTERM during training: stop at the next step boundary."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Interrupt:
    """First Ctrl-C (or SIGTERM) asks to stop at the next step boundary; a second Ctrl-C
    interrupts at once. Signal handlers are only installed on the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
