"""KV states of llama.cpp generations kept between requests (a paused reply, a conversation's last turn)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

# Restoring a kept state costs about what evaluating 3 tokens does: worth it from this many tokens saved.
RESTORE_MIN_GAIN = 8


@dataclass
class _KVState:
    """Evaluated tokens and llama.cpp's state for them (KV cache): a generation paused to let another
    request run, or a finished one kept for the conversation's next turn."""
    state: bytes
    input_ids: np.ndarray


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class _StateCache:
    """The KV states of recent generations, least recently used dropped first.

    Prompt evaluation is slow on a CPU (about 140 tokens/s for the embedded model on 2 cores), and a
    model serving several conversations has only the last one's context in its KV cache. A request
    whose prompt shares a longer prefix with a kept state (the conversation's previous turn) restores
    it in ~20 ms instead of evaluating the whole history again.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.hits = 0
        self._states: OrderedDict[int, _KVState] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, kept: _KVState) -> None:
        if not len(kept.input_ids) or len(kept.state) > self.max_bytes:
            return
        with self._lock:
            for key, old in list(self._states.items()):  # a state this one extends is superseded
                if common_prefix(old.input_ids, kept.input_ids) == len(old.input_ids):
                    del self._states[key]
            self._states[id(kept)] = kept
            while sum(len(k.state) for k in self._states.values()) > self.max_bytes:
                self._states.popitem(last=False)

    def best(self, tokens: np.ndarray) -> tuple[_KVState | None, int]:
        """The kept state sharing the longest prefix with ``tokens``, and that prefix's length."""
        with self._lock:
            best, length = None, 0
            for key, kept in self._states.items():
                n = common_prefix(kept.input_ids, tokens)
                if n > length:
                    best, length = key, n
            if best is None:
                return None, 0
            self._states.move_to_end(best)
            return self._states[best], length

    def clear(self) -> None:
        with self._lock:
            self._states.clear()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"states": len(self._states), "hits": self.hits,
                    "mb": round(sum(len(k.state) for k in self._states.values()) / 1e6, 1)}
