"""The parts of a real LiveKit room for the room tests and ``bench.room_latency``: the agent worker as a
process of its own (``WorkerProcess``), and a user through the livekit SDK (``RoomUser``): an open
microphone that speaks clips in real time, and ears on the agent's audio track and transcriptions.
Nothing here is a test double. Times are ``time.perf_counter()`` seconds in this process:

    user = RoomUser(url, token)
    await user.connect()
    await user.wait_for_agent(timeout=3)
    said = await user.say(pcm, rate)                 # when its first and last voiced frames went out
    first = await user.agent_voice_after(said.end)   # the first frame of the agent's voice after it
    await user.close()
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from livekit import rtc

from app.audio.codec import resample_pcm
from bench.offline_io import voiced_span

RATE = 48000
FRAME_MS = 10  # the user's frames, both ways, unless a RoomUser is given its own
# What the SDK may hold of the microphone before WebRTC takes it: one frame. WebRTC takes 10 ms at a time on its
# own clock; each time that clock falls behind (a busy CPU) the SDK's default 1 s queue keeps the difference,
# so the user's words could reach the agent later and later. A real microphone is clocked by its device
# and has no such queue; one frame bounds the lag this one can add (40 ms held a barge-in back ~30 ms).
# An agent frame louder than this (RMS of s16 samples) is its voice; the SFU path's silence is ~0.
VOICE_RMS = 200.0


@dataclass
class Said:
    start: float  # when the clip's first voiced frame went out
    end: float  # when its last voiced frame went out


@dataclass
class Transcript:
    identity: str
    text: str
    final: bool
    at: float


class RoomUser:
    """One participant: joins with a token, publishes a microphone that sends silence between clips
    (as a real one does, so the agent's VAD hears each turn end), and records the agent's audio."""

    def __init__(self, url: str, token: str, *, frame_ms: int = FRAME_MS) -> None:
        """``frame_ms``: how much audio each of the user's frames holds, sent and received. Each frame wakes this
        process; on the agent's own machine, 20 ms instead of 10 keeps the user from slowing the agent (see
        bench.room_latency)."""
        self.url, self.token = url, token
        self.frame_ms, self.frame_samples = frame_ms, RATE * frame_ms // 1000
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=frame_ms)
        self.agent_joined = asyncio.Event()
        self.agent_joined_at: float | None = None
        self.agent_identity: str | None = None  # the first agent to join
        self.agents: dict[str, float] = {}  # every agent that joined, and when it first did
        self.agents_left: dict[str, float] = {}  # every agent that left (and has not come back), and when
        self._agents_changed = asyncio.Event()
        self.disconnected = asyncio.Event()  # the room ended for this user (the server went away, or was left)
        self.events: list[tuple[str, float]] = []  # the connection's reconnecting / reconnected, and when
        self.connected_at: float | None = None
        # (receive time, RMS) of each frame of the agent's audio
        self.heard: list[tuple[float, float]] = []
        self.transcripts: list[Transcript] = []
        self._clips: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._tasks: list[asyncio.Task] = []
        self._heard_more = asyncio.Event()

    # -- connection

    async def connect(self, timeout: float = 10.0) -> None:
        self.room.on("participant_connected", self._on_participant)
        self.room.on("participant_disconnected", self._on_participant_left)
        self.room.on("disconnected", lambda reason: self.disconnected.set())
        self.room.on("reconnecting", lambda: self.events.append(("reconnecting", time.perf_counter())))
        self.room.on("reconnected", lambda: self.events.append(("reconnected", time.perf_counter())))
        self.room.on("track_subscribed", self._on_track)
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        await asyncio.wait_for(self.room.connect(self.url, self.token), timeout)
        self.connected_at = time.perf_counter()
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.create_task(self._microphone(), name="room-user-microphone"))

    async def close(self) -> None:
        # Leave the room first: an agent track or transcription arriving meanwhile would start one more
        # task. Then cancel until none is left.
        await self.room.disconnect()
        while self._tasks:
            task = self._tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.source.aclose()

    async def wait_for_agent(self, timeout: float) -> float:
        """Seconds from connecting until the agent joined the room."""
        await asyncio.wait_for(self.agent_joined.wait(), timeout)
        return self.agent_joined_at - self.connected_at

    async def wait_for_another_agent(self, than: str | None, timeout: float) -> str:
        """The identity of the first agent other than ``than`` (None: any) in the room, within ``timeout`` seconds."""
        async def another() -> str:
            while True:
                present = [i for i in self.agents if i != than and i not in self.agents_left]
                if present:
                    return present[0]
                self._agents_changed.clear()
                await self._agents_changed.wait()
        return await asyncio.wait_for(another(), timeout)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        self.agents.setdefault(participant.identity, time.perf_counter())
        self.agents_left.pop(participant.identity, None)  # back (its connection was resumed)
        self._agents_changed.set()
        if not self.agent_joined.is_set():
            self.agent_identity = participant.identity
            self.agent_joined_at = time.perf_counter()
            self.agent_joined.set()

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.agents_left.setdefault(participant.identity, time.perf_counter())
            self._agents_changed.set()

    def _on_track(self, track: rtc.Track, publication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._tasks.append(asyncio.create_task(self._listen(track), name="room-user-ears"))

    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            final = (reader.info.attributes or {}).get("lk.transcription_final") != "false"
            self.transcripts.append(Transcript(identity, text, final, time.perf_counter()))

        self._tasks.append(asyncio.create_task(read()))

    # -- the microphone

    def say(self, pcm: bytes, rate: int) -> asyncio.Future:
        """Queue a clip (PCM s16le mono); the future resolves, once it has been sent, to ``Said``."""
        samples = np.frombuffer(resample_pcm(pcm, rate, RATE), dtype="<i2")
        done = asyncio.get_running_loop().create_future()
        self._clips.append((samples, done))
        return done

    async def _microphone(self) -> None:
        silence = np.zeros(self.frame_samples, dtype="<i2")
        started = time.perf_counter()
        sent = 0
        clip = done = None
        while True:
            if clip is None and self._clips:
                clip, done = self._clips.popleft()
                position, (voice_start, voice_end), voice_at = 0, voiced_span(clip, RATE), []
            if clip is not None:
                chunk = clip[position:position + self.frame_samples]
                chunk = np.pad(chunk, (0, self.frame_samples - len(chunk)))
                position += self.frame_samples
            else:
                chunk = silence
            frame = rtc.AudioFrame(chunk.tobytes(), RATE, 1, self.frame_samples)
            # Real time: frame n goes out at n x 10 ms from the start, however long capture_frame took.
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * self.frame_ms / 1000 - time.perf_counter()))
            await self.source.capture_frame(frame)
            if clip is None:
                continue
            now = time.perf_counter()
            if position > voice_start and not voice_at:
                voice_at.append(now)
            if position >= voice_end and len(voice_at) == 1:
                voice_at.append(now)
            if position >= len(clip):
                if not done.done():
                    done.set_result(Said(*voice_at) if len(voice_at) == 2 else Said(now, now))
                clip = None

    # -- the agent's voice

    async def _listen(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=self.frame_ms):
            samples = np.frombuffer(event.frame.data, dtype="<i2").astype(np.float32)
            self.heard.append((time.perf_counter(), float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0))
            self._heard_more.set()

    async def _until(self, found, timeout: float, what: str) -> float:
        """Calls ``found()`` as the agent's audio arrives, until it returns a time."""
        deadline = time.perf_counter() + timeout
        while (at := found()) is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{what} within {timeout:.0f} s")
            self._heard_more.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._heard_more.wait(), min(remaining, 0.5))
        return at

    async def agent_voice_after(self, after: float, timeout: float = 30.0) -> float:
        """The receive time of the first frame of the agent's voice after ``after``."""
        seen = bisect.bisect_right(self.heard, (after, math.inf))

        def found() -> float | None:
            nonlocal seen
            for at, level in self.heard[seen:]:
                seen += 1
                if level > VOICE_RMS:
                    return at
            return None
        return await self._until(found, timeout, "no agent voice")

    async def agent_quiet_after(self, after: float, quiet_s: float = 0.5, timeout: float = 30.0) -> float:
        """The receive time of the agent's last voiced frame before a silence of ``quiet_s``, after ``after``
        (silence here: frames that arrive quiet, or no frames at all)."""
        seen, last_voiced = bisect.bisect_right(self.heard, (after, math.inf)), after

        def found() -> float | None:
            nonlocal seen, last_voiced
            for at, level in self.heard[seen:]:
                seen += 1
                if level > VOICE_RMS:
                    last_voiced = at
                elif at - last_voiced >= quiet_s:
                    return last_voiced
            return last_voiced if time.perf_counter() - last_voiced >= quiet_s else None
        return await self._until(found, timeout, f"the agent not quiet for {quiet_s} s")

    async def ask(self, pcm: bytes, rate: int, agent: str | None = None, timeout: float = 30.0) -> tuple[float, str]:
        """Says a clip and waits for the agent's whole reply: (seconds from the clip's last voiced frame to the first
        frame of the agent's voice, the reply's transcript). ``agent``: whose transcript (default: any agent's, the
        one that answers)."""
        def replies() -> list[str]:
            if agent is not None:
                return self.texts(agent)
            return [t.text for t in self.transcripts if t.final and t.identity in self.agents]
        before = len(replies())
        said = await self.say(pcm, rate)
        first = await self.agent_voice_after(said.end, timeout)
        await self.agent_quiet_after(first, quiet_s=1.0, timeout=timeout)
        deadline = time.perf_counter() + 10
        while len(replies()) <= before:
            if time.perf_counter() > deadline:
                raise TimeoutError("no transcript of the agent's reply within 10 s")
            await asyncio.sleep(0.05)
        return first - said.end, " ".join(replies()[before:])

    def voiced_seconds(self, start: float, end: float) -> float:
        """How much of the agent's audio between ``start`` and ``end`` was voice."""
        return sum(self.frame_ms / 1000 for at, level in self.heard if start < at <= end and level > VOICE_RMS)

    def texts(self, identity: str) -> list[str]:
        """The final transcripts of one participant, in the order they ended."""
        return [t.text for t in self.transcripts if t.identity == identity and t.final]


BACKEND = Path(__file__).resolve().parents[1]


def worker_env(**livekit: str) -> dict[str, str]:
    """This environment without LiveKit settings; blank values also override any .env file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": "", "PYTHONUNBUFFERED": "1"})
    env.update(livekit)
    return env


class WorkerProcess:
    """``python -m app.agents.worker start`` in its own process group; its log goes to a file that
    ``wait_for`` reads with a deadline (a pipe's readline would block past it)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._log = tempfile.NamedTemporaryFile("w+", prefix="gemmavoice-worker-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.proc = subprocess.Popen([sys.executable, "-m", "app.agents.worker", "start", "--log-level", "INFO"],
                                     cwd=BACKEND, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        port = env.get("LIVEKIT_WORKER_PORT")
        self.health_url = f"http://127.0.0.1:{port}/worker" if port else None

    def info(self) -> dict:
        """What the worker's health endpoint says (JSON leaves out zeros: no active_jobs, no worker_load)."""
        return httpx.get(self.health_url, timeout=5).json()

    def idle(self) -> bool:
        """No job, and its models ready (its load is full until they are)."""
        info = self.info()
        return info.get("worker_load", 0.0) == 0.0 and info.get("active_jobs", 0) == 0

    @property
    def messages(self) -> list[str]:
        """The log's messages (the framework logs JSON lines; anything else is kept as it is)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line)["message"])
            except (json.JSONDecodeError, KeyError, TypeError):
                found.append(line.strip())
        return found

    def wait_for(self, pattern: str, timeout: float = 120, *, after: int = 0) -> re.Match:
        """The first message (from the ``after``-th on) that matches ``pattern``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages[after:]:
                if found := re.search(pattern, message):
                    return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else "still running"
                if self.proc.poll() is None:  # where it is stuck: every thread's stack, into its log
                    self.proc.send_signal(signal.SIGABRT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(5)
                tail = self.log_path.read_text(errors="replace")[-4000:]
                raise AssertionError(f"no {pattern!r} in the worker's log ({state}); its log ends:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> str:
        """SIGTERM, up to 60 s to finish; returns the whole log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)
