"""The worker: its CLI as the user runs it, the load it reports, and what it does in a real room (its name,
its jobs as threads, pre-connect audio)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from agent_helpers import until, until_worker_free, worker_in
from helpers import QUESTION_WORDS, free_port, words
from livekit import rtc

from app.agents.worker import FULL, job_options, worker_load
from app.config.settings import Settings
from app.services.livekit_tokens import user_token
from bench.livekit_room import BACKEND, RoomUser, WorkerProcess, worker_env

UNREACHABLE = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "APIunreachable", "LIVEKIT_API_SECRET": "s" * 40}


def run_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.agents.worker", *args], cwd=BACKEND, env=env,
                          capture_output=True, text=True, timeout=60)


class JobSlots:
    """A TEST DOUBLE of the AgentServer for the load function: only the running jobs it reads."""

    def __init__(self, busy: int = 0) -> None:
        self.active_jobs = [object()] * busy


def test_help_lists_the_commands():
    result = run_worker("--help", env=worker_env())
    assert result.returncode == 0, result.stderr
    for command in ("dev", "start", "console", "download-files"):
        assert command in result.stdout


def test_start_without_livekit_settings_fails_clearly():
    result = run_worker("start", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" in result.stderr and "LIVEKIT_API_SECRET" in result.stderr


def test_start_with_settings_on_the_command_line_is_not_refused_for_them():
    result = run_worker("start", "--url", "ws://127.0.0.1:9", env=worker_env())
    assert result.returncode != 0
    assert "LIVEKIT_URL" not in result.stderr and "LIVEKIT_API_KEY" in result.stderr


def listening_ports(pid: int, timeout: float = 60) -> set[int]:
    """The IPv4 TCP ports a process listens on, once it listens on any."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp4") if c.status == psutil.CONN_LISTEN}
        if ports:
            return ports
        time.sleep(0.1)
    raise AssertionError(f"process {pid} listens on no port after {timeout} s")


def test_two_workers_on_one_host_load_their_models_once_and_stop():
    """The second worker finds the health port taken and uses a free one; the load a worker reports
    is full while its models load and empty once they are ready; SIGTERM ends each cleanly."""
    port = free_port()
    first = WorkerProcess(worker_env(**UNREACHABLE, LIVEKIT_WORKER_PORT=str(port)))
    second = None
    try:
        assert listening_ports(first.proc.pid) == {port}
        loads = []  # what the first worker's own /worker endpoint says, until its models are ready
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (FULL in loads and loads[-1] == 0.0):
            info = httpx.get(f"http://127.0.0.1:{port}/worker", timeout=5).json()
            loads.append(info.get("worker_load", 0.0))  # (JSON leaves out a zero)
            time.sleep(0.1)
        assert FULL in loads and loads[-1] == 0.0, loads
        first.wait_for(r"models ready in")
        # Job threads, not processes: no child process holds another copy of the models.
        assert psutil.Process(first.proc.pid).children(recursive=True) == []

        second = WorkerProcess(worker_env(**UNREACHABLE, LIVEKIT_WORKER_PORT=str(port)))
        second.wait_for(r"health port \d+ is taken")
        (second_port,) = listening_ports(second.proc.pid)
        assert second_port != port
        assert httpx.get(f"http://127.0.0.1:{second_port}/", timeout=5).status_code == 200

        for worker in (first, second):
            worker.stop()
            assert worker.proc.returncode == 0
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.kill()


# --- A worker as users run it, in a real room. The room path itself (speech, replies, barge-in, two rooms
# answered at once) is test_livekit_room.py's.

AGENT = "worker-test-agent"  # not the default name: the worker must take it from its settings
JOIN_S = 10.0


@pytest.fixture(scope="module")
def room_worker(livekit_server):
    """``python -m app.agents.worker start`` against the real livekit-server, under AGENT, two slots."""
    with worker_in(livekit_server, LIVEKIT_AGENT_NAME=AGENT, LIVEKIT_WORKER_MAX_JOBS="2") as worker:
        yield worker


@pytest.fixture
async def free_worker(room_worker):
    return await until_worker_free(room_worker)


def dispatching(settings: Settings, agent_name: str = AGENT) -> Settings:
    """``settings`` whose user tokens dispatch ``agent_name``."""
    return settings.model_copy(update={"livekit_agent_name": agent_name})


@contextlib.asynccontextmanager
async def room_user(settings: Settings):
    user = RoomUser(settings.livekit_url, user_token(settings).token)
    await user.connect()
    try:
        yield user
    finally:
        await user.close()


async def test_the_settings_agent_name_is_the_one_dispatched(free_worker, livekit_settings):
    """A user whose token dispatches the configured name gets the worker's agent; while that worker still
    has a free slot, a room that dispatches another name gets none."""
    async with room_user(dispatching(livekit_settings)) as user:
        await user.wait_for_agent(JOIN_S)
        assert user.agent_identity.startswith(f"agent-{AGENT}-")
        async with room_user(dispatching(livekit_settings, "someone-else")) as stranger:
            with pytest.raises(asyncio.TimeoutError):
                await stranger.wait_for_agent(5.0)
        assert free_worker.info().get("active_jobs") == 1  # it had a free slot for the stranger all along


async def test_jobs_run_as_threads_of_the_worker_on_its_one_set_of_models(free_worker, livekit_settings):
    """Two rooms, each with an agent of this worker: both jobs run in the worker's own process (no child
    process), on the models it loaded as it started: no job loads any."""
    logged = len(free_worker.messages)
    async with room_user(dispatching(livekit_settings)) as first, room_user(dispatching(livekit_settings)) as second:
        await asyncio.gather(first.wait_for_agent(JOIN_S), second.wait_for_agent(JOIN_S))
        assert first.agent_identity != second.agent_identity
        # Both jobs are this process's, and each agent's audio reaches its user.
        await until(lambda: asyncio.to_thread(lambda: free_worker.info().get("active_jobs") == 2), 10,
                    "the worker counting both jobs")
        await until(lambda: first.heard and second.heard, 10, "the agents' audio")
        children = psutil.Process(free_worker.proc.pid).children(recursive=True)
    assert children == []
    # (A model service logs "<component>: loading" as it starts loading.)
    assert [m for m in free_worker.messages[logged:] if re.fullmatch(r"(llm|stt|tts): loading", m)] == []


class PreConnectUser:
    """A livekit SDK user who speaks before the agent is there, as livekit-client's pre-connect buffer has
    it: the microphone track is published with the pre-connect feature, what it recorded goes to the agent
    on the pre-connect byte stream once the agent is in the room, and from then on the microphone hears
    only silence. It keeps the room's transcriptions."""

    TOPIC = "lk.agent.pre-connect-audio-buffer"
    RATE = 48000

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.room = rtc.Room()
        self.source = rtc.AudioSource(self.RATE, 1)
        self.transcripts: list[tuple[str, str]] = []  # (identity, text), final ones
        self._tasks: list[asyncio.Task] = []

    async def connect(self) -> None:
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        await asyncio.wait_for(self.room.connect(self.url, self.token), 10)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, preconnect_buffer=True)
        self.publication = await self.room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.create_task(self._silence()))

    async def _silence(self) -> None:
        frame = rtc.AudioFrame(bytes(self.RATE // 100 * 2), self.RATE, 1, self.RATE // 100)
        while True:
            await self.source.capture_frame(frame)  # paced by WebRTC once the source's queue is full

    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            if (reader.info.attributes or {}).get("lk.transcription_final") != "false":
                self.transcripts.append((identity, text))

        self._tasks.append(asyncio.create_task(read()))

    def agent(self) -> rtc.RemoteParticipant | None:
        """The agent, once its session is up (it has published its state)."""
        return next((p for p in self.room.remote_participants.values()
                     if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and "lk.agent.state" in p.attributes),
                    None)

    async def send_recording(self, pcm: bytes, rate: int, agent: rtc.RemoteParticipant) -> None:
        writer = await self.room.local_participant.stream_bytes(
            "pre-connect-audio", topic=self.TOPIC, mime_type="audio/pcm", destination_identities=[agent.identity],
            attributes={"trackId": self.publication.sid, "sampleRate": str(rate), "channels": "1"})
        await writer.write(pcm)
        await writer.aclose()

    def texts(self, identity: str) -> list[str]:
        return [text for who, text in self.transcripts if who == identity]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        await self.source.aclose()


async def test_what_the_user_said_before_the_agent_joined_is_answered(free_worker, livekit_settings, question_pcm):
    """The question exists only in the pre-connect recording (the live microphone is silent): the agent
    hears it, and answers. The browser's side of it (livekit-client's buffer) is in the e2e tests."""
    user = PreConnectUser(livekit_settings.livekit_url, user_token(dispatching(livekit_settings)).token)
    await user.connect()
    try:
        agent = await until(user.agent, JOIN_S, "the agent's session in the room")
        await user.send_recording(*question_pcm, agent)
        await until(lambda: user.texts(agent.identity), 60, "the agent's answer")
        heard = " ".join(user.texts(user.room.local_participant.identity))
        answer = " ".join(user.texts(agent.identity))
    finally:
        await user.close()
    assert QUESTION_WORDS <= words(heard), heard
    assert answer.strip(), answer


def test_load_counts_job_slots_not_the_cpu_the_models_use(monkeypatch):
    """The load is LIVEKIT_WORKER_LOAD_THRESHOLD x busy slots / LIVEKIT_WORKER_MAX_JOBS, whatever the CPU:
    here the CPU reads fully busy, as the models keep it whenever they answer anyone. (The framework's
    default load is the machine's CPU: on a machine with as many cores as the model has threads, a worker
    would read full and get no job.) FULL while a model is not ready, or memory for one more is missing."""
    from app.agents import runtime, worker

    ready: list[str | None] = [None]
    free_mb = [10_000.0]
    monkeypatch.setattr(runtime, "models_not_ready", lambda: ready[0])
    monkeypatch.setattr(worker, "available_memory_mb", lambda: free_mb[0])
    monkeypatch.setattr(psutil, "cpu_percent", lambda *args, **kwargs: 100.0)  # every core busy
    monkeypatch.setattr(psutil, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    settings = Settings(app_env="test", _env_file=None, livekit_worker_max_jobs=4,
                        livekit_worker_load_threshold=0.8, livekit_job_memory_mb=500)

    def loads() -> list[float]:
        return [worker_load(JobSlots(busy=busy), settings=settings) for busy in range(6)]

    # Below the threshold while a slot is free, at it when none is (more jobs than slots: still at it).
    assert loads() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    free_mb[0] = 499.0  # too little for one more conversation: full while a slot is free
    assert loads() == [FULL, FULL, FULL, FULL, 0.8, 0.8]
    free_mb[0] = 10_000.0
    ready[0] = "llm loading"  # a model not ready: no room at all
    assert loads() == [FULL] * 6
    ready[0] = None
    two = settings.model_copy(update={"livekit_worker_max_jobs": 2, "livekit_worker_load_threshold": 0.7})
    assert [worker_load(JobSlots(busy=busy), settings=two) for busy in range(3)] == pytest.approx([0.0, 0.35, 0.7])


async def test_load_is_full_when_memory_for_one_more_conversation_is_missing(services):
    settings = Settings(app_env="test", _env_file=None, livekit_job_memory_mb=10**9)
    assert worker_load(JobSlots(busy=0), settings=settings) == FULL


def test_job_metadata_is_parsed_safely():
    settings = Settings(app_env="test", _env_file=None, max_text_chars=100)
    assert job_options('{"instructions": " Be a pirate. ", "voice": "alice", "x": 1}', settings) == {
        "instructions": "Be a pirate.", "voice": "alice"}
    assert job_options("", settings) == {}
    assert job_options(None, settings) == {}
    assert job_options("not json", settings) == {}
    assert job_options('["a list"]', settings) == {}
    assert job_options('{"instructions": 42, "voice": ""}', settings) == {}
    assert len(job_options(json.dumps({"instructions": "y" * 500}), settings)["instructions"]) == 100
