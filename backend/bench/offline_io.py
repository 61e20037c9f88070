"""Audio I/O that drives an ``AgentSession`` without a LiveKit room (the tests and benchmarks; no user needs it).

``ClipMicrophone`` is an open microphone: it delivers frames in real time, playing queued clips and
silence in between. ``RecordingSpeaker`` keeps what the agent says and takes as long to "play" it
as a real speaker would (``ListenerPlayout``), so the session sees speaking turns of realistic length
(and barge-ins). ``SpeakerEcho`` lets the microphone hear the speaker too, as one with no echo canceller yet.

    session.input.audio = mic = ClipMicrophone()
    session.output.audio = speaker = RecordingSpeaker()
    await session.start(GemmaVoiceAgent())
    clip = mic.play(pcm, sample_rate)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from app.agents.playout import ListenerPlayout, PlayedSegment
from app.audio.codec import resample_pcm


def voiced_span(samples: np.ndarray, sample_rate: int, *, floor_db: float = -35.0) -> tuple[int, int]:
    """Where the voice starts and ends: indices of the first 10 ms window, and just past the last one,
    louder than ``floor_db`` below the loudest window ((0, 0) for silence)."""
    win = max(1, sample_rate // 100)
    count = len(samples) // win
    if count == 0:
        return 0, 0
    windows = samples[:count * win].astype(np.float32).reshape(count, win)
    rms = np.sqrt(np.mean(windows ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (floor_db / 20))[0]
    return (int(loud[0]) * win, int(loud[-1] + 1) * win) if loud.size else (0, 0)


def voiced_end(samples: np.ndarray, sample_rate: int, *, floor_db: float = -35.0) -> int:
    """Index just past the last 10 ms window louder than ``floor_db`` below the loudest one."""
    return voiced_span(samples, sample_rate, floor_db=floor_db)[1]


@dataclass
class PlayedClip:
    samples: np.ndarray
    speech_end: int  # sample index where the voiced part ends
    position: int = 0
    started_at: float | None = None  # perf_counter() when its first sample was captured
    speech_ended_at: float | None = None  # ... and its last voiced sample
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ClipMicrophone(io.AudioInput):
    def __init__(self, *, sample_rate: int = 48000, frame_ms: int = 20) -> None:
        super().__init__(label="clip-microphone")
        self.sample_rate = sample_rate
        self._frame_samples = sample_rate * frame_ms // 1000
        self._queue: deque[PlayedClip] = deque()
        self._next_at: float | None = None
        self._closed = False
        self.echo: SpeakerEcho | None = None  # what it hears of the agent's speaker, if anything

    def play(self, pcm: bytes, sample_rate: int) -> PlayedClip:
        """Queue a clip (PCM s16le mono at ``sample_rate``): heard after the clips queued before it."""
        samples = np.frombuffer(resample_pcm(pcm, sample_rate, self.sample_rate), dtype="<i2")
        clip = PlayedClip(samples=samples, speech_end=voiced_end(samples, self.sample_rate))
        self._queue.append(clip)
        return clip

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        # Real time: a frame is available once its last sample has been "captured".
        loop = asyncio.get_running_loop()
        self._next_at = (self._next_at or loop.time()) + self._frame_samples / self.sample_rate
        await asyncio.sleep(max(0.0, self._next_at - loop.time()))
        captured_at = time.perf_counter()

        n = self._frame_samples
        out = np.zeros(n, dtype="<i2")
        filled = 0
        while filled < n and self._queue:
            clip = self._queue[0]
            take = clip.samples[clip.position:clip.position + n - filled]
            if clip.started_at is None:
                clip.started_at = captured_at - (n - filled) / self.sample_rate
            if clip.speech_ended_at is None and clip.position + len(take) >= clip.speech_end:
                offset = filled + clip.speech_end - clip.position  # where in this frame the speech ended
                clip.speech_ended_at = captured_at - (n - offset) / self.sample_rate
            out[filled:filled + len(take)] = take
            filled += len(take)
            clip.position += len(take)
            if clip.position >= len(clip.samples):
                self._queue.popleft()
                clip.done.set()
        if self.echo is not None:
            out = np.clip(out.astype(np.int32) + self.echo.take(n), -32768, 32767).astype("<i2")
        return rtc.AudioFrame(data=out.tobytes(), sample_rate=self.sample_rate, num_channels=1,
                              samples_per_channel=n)


class RecordingSpeaker(ListenerPlayout):
    """Keeps what the agent says (``audio(segment)``) and "plays" it on a real-time clock."""

    recent_segments = None  # every segment: tests and benchmarks look back at all of them

    def __init__(self, *, speed: float = 1.0) -> None:
        """``speed``: how many times faster than real time it "plays" (tests that only want the audio)."""
        super().__init__(label="recording-speaker")
        self.speed = speed
        self._frames: dict[int, list[rtc.AudioFrame]] = {}  # by id() of the segment
        self._pcm: dict[int, bytearray] = {}  # the same, as one buffer

    def audio(self, segment: PlayedSegment) -> rtc.AudioFrame:
        """What the agent said in ``segment``."""
        return rtc.combine_audio_frames(self._frames[id(segment)])

    async def _deliver(self, frame: rtc.AudioFrame) -> None:
        self._frames.setdefault(id(self.segments[-1]), []).append(frame)
        self._pcm.setdefault(id(self.segments[-1]), bytearray()).extend(frame.data.tobytes())

    def audio_rate(self, segment: PlayedSegment) -> int | None:
        frames = self._frames.get(id(segment))
        return frames[0].sample_rate if frames else None

    def played(self, segment: PlayedSegment, start: int = 0) -> np.ndarray:
        """The samples of ``segment`` from ``start`` that the listener has played by now (all of them once it has
        finished), at the agent's output rate (``audio(segment).sample_rate``)."""
        frames = self._frames.get(id(segment))
        if not frames:
            return np.zeros(0, dtype="<i2")
        heard = segment.played if segment.interrupted is not None else self._heard(segment)
        end = int(heard * frames[0].sample_rate)
        return np.frombuffer(bytes(self._pcm[id(segment)][2 * start:2 * end]), dtype="<i2")

    def _listening_time(self, audio_s: float) -> float:
        return audio_s / self.speed


class SpeakerEcho:
    """What a microphone near the speaker picks up of it (an echo canceller that has not learnt the voice yet): the
    first ``seconds`` of the agent's speech as the listener plays it, ``delay_s`` later, times ``gain``.

    ``ClipMicrophone.echo = SpeakerEcho(speaker, sample_rate=mic.sample_rate)``; the speaker's audio must come at
    the microphone's rate (``mic = ClipMicrophone(sample_rate=tts_rate)``)."""

    def __init__(self, speaker: RecordingSpeaker, *, sample_rate: int, gain: float = 0.5, delay_s: float = 0.1,
                 seconds: float = 2.5) -> None:
        self.speaker = speaker
        self.sample_rate = sample_rate
        self.gain = gain
        self.left = int(seconds * sample_rate)  # samples of the agent's voice still to echo
        self.echoed = 0  # samples of it echoed so far
        self._line = np.zeros(int(delay_s * sample_rate), dtype=np.float32)  # the delay
        self._taken: dict[int, int] = {}  # samples of each segment already in the line

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples the microphone hears of the speaker (a frame's worth, in real time)."""
        new = []
        for segment in self.speaker.segments:
            played = self.speaker.played(segment, self._taken.get(id(segment), 0))
            if len(played):
                assert self.speaker.audio_rate(segment) == self.sample_rate, "the speaker's rate isn't the mic's"
                self._taken[id(segment)] = self._taken.get(id(segment), 0) + len(played)
                new.append(played)
        fresh = np.concatenate(new).astype(np.float32)[:self.left] if new else np.zeros(0, np.float32)
        self.left -= len(fresh)
        self.echoed += len(fresh)
        if not len(fresh):  # a paused or silent speaker: its silence comes through, as late as its voice
            fresh = np.zeros(n, np.float32)
        self._line = np.concatenate([self._line, fresh * self.gain])
        if len(self._line) < n:  # the speaker ran a little behind the microphone's clock
            self._line = np.concatenate([self._line, np.zeros(n - len(self._line), np.float32)])
        out, self._line = self._line[:n], self._line[n:]
        return out.astype(np.int32)
