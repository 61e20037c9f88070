"""An agent audio output played by a listener elsewhere: it keeps the listener's playback clock.

The agent hands over a reply faster than anyone can listen to it. A LiveKit room plays it out at the
server; a WebSocket client (or a test's recording speaker) plays it on its own side, in real time.
``ListenerPlayout`` tracks where that playback is: the reply counts as playing until the listener has
heard its last sample, so the session stays "speaking" for the audible part of the reply and a user
who talks over it interrupts it even when every byte was already sent. On an interruption it reports
how far playback got, which the session uses to keep only what was heard.

It can pause: the session pauses a reply when the user may be starting to talk, and resumes it when
that turns out to be a cough or a noise (no words).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from livekit import rtc
from livekit.agents.voice import io

# Segments kept for looking back at (tests, metrics): a conversation lasts hours.
RECENT_SEGMENTS = 8


@dataclass
class PlayedSegment:
    """One reply segment (the audio between two flushes) on the listener's clock."""

    first_frame_at: float  # perf_counter() when its first frame was captured
    duration: float = 0.0  # seconds of audio captured so far
    ends_at: float = 0.0  # loop time at which the listener will have played all of it
    flushed: bool = False
    interrupted: bool | None = None  # None while it plays
    played: float | None = None  # seconds heard, once finished
    timer: asyncio.TimerHandle | None = None


class ListenerPlayout(io.AudioOutput):
    """Subclasses deliver the audio (``_deliver``) and may react to ``_cleared``/``_paused``/``_resumed``."""

    recent_segments: int | None = RECENT_SEGMENTS  # how many of ``segments`` to keep (None: all)

    def __init__(self, *, label: str, sample_rate: int | None = None) -> None:
        super().__init__(label=label, capabilities=io.AudioOutputCapabilities(pause=True), sample_rate=sample_rate)
        self.segments: list[PlayedSegment] = []
        self.clear_count = 0
        self._playing: deque[PlayedSegment] = deque()  # captured and not finished, oldest first
        self._paused_at: float | None = None

    # --- what subclasses provide ---------------------------------------------------------------
    async def _deliver(self, frame: rtc.AudioFrame) -> None:
        """Send one frame to the listener."""

    def _cleared(self) -> None:
        """The listener must stop now: the reply was interrupted."""

    def _paused(self) -> None:
        """The listener should hold playback where it is."""

    def _resumed(self) -> None:
        """The listener should go on from where it held."""

    def _listening_time(self, audio_s: float) -> float:
        """How long the listener takes to play ``audio_s`` seconds of audio: as long, in real time."""
        return audio_s

    # --- io.AudioOutput ----------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        now = self._now()
        if not self._playing or self._playing[-1].flushed:
            previous_end = self._playing[-1].ends_at if self._playing else now
            segment = PlayedSegment(first_frame_at=time.perf_counter(), ends_at=max(now, previous_end))
            self.segments.append(segment)
            if self.recent_segments is not None:
                del self.segments[:-self.recent_segments]
            self._playing.append(segment)
            self.on_playback_started(created_at=time.time())
        segment = self._playing[-1]
        # After an underrun (the listener ran dry) the new audio plays from now, not from the old end.
        segment.ends_at = max(segment.ends_at, now) + self._listening_time(frame.duration)
        segment.duration += frame.duration
        await self._deliver(frame)

    def flush(self) -> None:
        super().flush()
        if not self._playing or self._playing[-1].flushed:
            return
        self._playing[-1].flushed = True
        self._schedule(self._playing[-1])

    def clear_buffer(self) -> None:
        """Interrupted: everything still playing stops now; report how much of each segment was heard."""
        self.clear_count += 1
        stopped = list(self._playing)
        self._playing.clear()
        for segment in stopped:
            if segment.timer is not None:
                segment.timer.cancel()
            segment.interrupted, segment.played = True, self._heard(segment)  # before the clock runs on
        self._paused_at = None
        if stopped:
            self._cleared()
        for segment in stopped:
            self.on_playback_finished(playback_position=segment.played, interrupted=True)

    def pause(self) -> None:
        super().pause()
        if self._paused_at is not None:
            return
        self._paused_at = asyncio.get_running_loop().time()
        for segment in self._playing:
            if segment.timer is not None:
                segment.timer.cancel()
                segment.timer = None
        self._paused()

    def resume(self) -> None:
        super().resume()
        if self._paused_at is None:
            return
        held = asyncio.get_running_loop().time() - self._paused_at
        self._paused_at = None
        for segment in self._playing:
            segment.ends_at += held
            if segment.flushed:
                self._schedule(segment)
        self._resumed()

    # --- the clock ---------------------------------------------------------------------------
    def _now(self) -> float:
        """The listener's clock: frozen while paused."""
        return self._paused_at if self._paused_at is not None else asyncio.get_running_loop().time()

    def _heard(self, segment: PlayedSegment) -> float:
        """Seconds of ``segment`` the listener has played by now."""
        unheard = max(0.0, segment.ends_at - self._now()) / self._listening_time(1.0)
        return max(0.0, min(segment.duration, segment.duration - unheard))

    def _schedule(self, segment: PlayedSegment) -> None:
        if self._paused_at is not None:
            return
        loop = asyncio.get_running_loop()
        segment.timer = loop.call_later(max(0.0, segment.ends_at - loop.time()), self._finished, segment)

    def _finished(self, segment: PlayedSegment) -> None:
        if segment not in self._playing:
            return
        self._playing.remove(segment)
        segment.interrupted, segment.played = False, segment.duration
        self.on_playback_finished(playback_position=segment.duration, interrupted=False)
