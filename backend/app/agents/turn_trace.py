"""Where each turn's time goes inside the agent, for ``bench.room_latency``'s hop table (off by default).

With ``VOICE_TURN_TRACE`` set to a file, each answered turn appends one JSON line of moments on the machine's
monotonic clock (``time.perf_counter``: CLOCK_MONOTONIC on Linux, the same clock in every process, so a
benchmark's user in another process can line its own moments up with these):

- ``last_voiced_received``: the last frame of the user's voice reaching the session (its level over
  ``VOICED_RMS``), before the VAD's end of speech;
- ``vad_end``: the VAD hears the end of speech;
- ``final_transcript``: the turn's final transcript;
- ``llm_first_token``: the reply's first token (with preemptive generation, it may come before the end of the turn);
- ``llm_first_piece``: the reply's first piece of text (a clause) reaching the TTS (the framework's stamp);
- ``tts_first_audio``: the reply's first synthesized frame;
- ``audio_to_track``: the reply's first frame handed to the room's audio track (the session's playback start).

Moments of a reply the user talked past (a dropped early guess) are dropped with it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io
from livekit.agents.voice.events import AgentStateChangedEvent, UserInputTranscribedEvent, UserStateChangedEvent

log = logging.getLogger("app.agents.trace")

# int16 RMS over which a frame counts as voice: speech fades out well above it, silence through Opus is ~0.
VOICED_RMS = 60.0
RECENT_FRAMES = 500  # 10 s of 20 ms frames: more than a turn's end needs


class _InputTap(io.AudioInput):
    """The session's audio input as it was, with each frame's arrival time and level noted."""

    def __init__(self, source: io.AudioInput, frames: deque[tuple[float, float]]) -> None:
        super().__init__(label=f"traced-{source.label}", source=source)
        self._frames = frames

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
        self._frames.append((time.perf_counter(), float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0))
        return frame


class TurnTrace:
    def __init__(self, session: AgentSession, path: Path) -> None:
        self._session = session
        self._path = Path(path)
        self._frames: deque[tuple[float, float]] = deque(maxlen=RECENT_FRAMES)
        self._moments: dict[str, float] = {}
        session.on("user_state_changed", self._user_state)
        session.on("user_input_transcribed", self._transcribed)
        session.on("agent_state_changed", self._agent_state)

    def tap_input(self) -> None:
        """Note the frames of the session's audio input (call once the transport has set it)."""
        source = self._session.input.audio
        if source is not None and not isinstance(source, _InputTap):
            self._session.input.audio = _InputTap(source, self._frames)

    def mark(self, moment: str, at: float) -> None:
        """The first time (``perf_counter()``) of a moment of the reply in this turn (``GemmaVoiceAgent.on_moment``)."""
        self._moments.setdefault(moment, at)

    def _user_state(self, ev: UserStateChangedEvent) -> None:
        now = time.perf_counter()
        if ev.new_state == "speaking":
            self._moments = {}  # a new turn: what an early guess did before is dropped with it
        elif ev.old_state == "speaking":
            self._moments["vad_end"] = now
            voiced = [at for at, level in self._frames if at <= now and level > VOICED_RMS]
            if voiced:
                self._moments["last_voiced_received"] = voiced[-1]

    def _transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if ev.is_final and ev.transcript.strip():
            self._moments["final_transcript"] = time.perf_counter()

    def _agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state != "speaking" or "vad_end" not in self._moments:
            return
        self._moments["audio_to_track"] = time.perf_counter()
        moments, self._moments = self._moments, {}
        try:
            with self._path.open("a") as out:
                out.write(json.dumps(moments) + "\n")
        except OSError as exc:
            log.warning("the turn trace could not be written to %s: %s", self._path, exc)
