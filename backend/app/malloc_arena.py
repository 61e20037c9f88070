"""One glibc malloc arena for the whole process, set before any model thread allocates.

By default glibc gives each thread that allocates under contention an arena of its own. Whisper's
encoder runs in a worker thread, and in such an arena its large per-call buffers are mapped and
faulted in afresh on every call: the 10 s encoder pass took 650 ms instead of 365 ms, and a whole
short-utterance transcription 990 ms instead of 620 ms (docs/benchmarks.md). With a single arena
the buffers are reused. The models allocate their weights once, so the shared arena's lock is not
a bottleneck. An explicit ``MALLOC_ARENA_MAX`` in the environment is glibc's own setting and wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h


def use_one_malloc_arena() -> bool:
    """Returns whether the setting was applied (only on glibc, and only when the environment doesn't set it)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
