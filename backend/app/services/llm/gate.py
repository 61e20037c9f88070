"""LLMGate: where a voice reply holds a local model between tokens while its TTS starts a piece."""

from __future__ import annotations

import threading
from typing import Callable


class LLMGate:
    """Where a voice reply holds the model between tokens (``stream_chat(gate=...)``): its TTS closes the
    gate while it starts a piece and opens it at the piece's first audio, so that the two don't share the CPU.

    Named like ``threading.Event`` (``set`` opens, ``clear`` closes), but a generation waits on a condition
    that also wakes on its own cancel and on a newly waiting request (``wake``), instead of polling.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self.held = 0  # generations waiting for it to open

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._change(True)

    def clear(self) -> None:
        self._change(False)

    def wake(self) -> None:
        """Something a waiter checks besides the gate has changed (a cancel, a waiting request)."""
        with self._cond:
            self._cond.notify_all()

    def wait_closed(self, timeout: float, unless: Callable[[], bool]) -> None:
        """Until the gate closes, ``unless()`` holds or ``timeout`` seconds pass."""
        with self._cond:
            self._cond.wait_for(lambda: not self._open or unless(), timeout)

    def wait_open(self, unless: Callable[[], bool]) -> None:
        """Until the gate opens or ``unless()`` holds."""
        with self._cond:
            self.held += 1
            try:
                self._cond.wait_for(lambda: self._open or unless())
            finally:
                self.held -= 1

    def _change(self, open_: bool) -> None:
        with self._cond:
            self._open = open_
            self._cond.notify_all()
