"""Helpers shared by the agent tests (a module of its own: two conftest.py files share one name)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import numpy as np
from helpers import TEST_VOICE, free_port, until  # noqa: F401 - until: the agent tests import it from here too
from livekit import rtc

from app.agents.local_livekit import LocalLiveKit
from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.services.container import Services
from bench.livekit_room import WorkerProcess, worker_env


async def transcribe(services: Services, audio: rtc.AudioFrame) -> str:
    pcm = resample_pcm(bytes(audio.data), audio.sample_rate, WHISPER_RATE)
    return (await services.stt.transcribe(pcm16_to_float(pcm), language="en")).text


def rms(audio: rtc.AudioFrame) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(audio.data, dtype="<i2").astype(np.float32) ** 2)))


def voice_env() -> dict[str, str]:
    """TEST_VOICE as environment variables for a process of its own."""
    return {name.upper(): str(value) for name, value in TEST_VOICE.items()}


@contextlib.contextmanager
def worker_in(server: LocalLiveKit, *, ready_log: str = "marking as available", **env: str) -> Iterator[WorkerProcess]:
    """``python -m app.agents.worker start`` against ``server`` (TEST_VOICE, its health endpoint on a free
    port), yielded once its log says ``ready_log`` (by default: it told the server it takes jobs, which a
    worker whose models loaded while it registered never says: it is available from the start); it must then
    stop cleanly on SIGTERM."""
    worker = WorkerProcess(worker_env(
        LIVEKIT_URL=server.url, LIVEKIT_API_KEY=server.api_key, LIVEKIT_API_SECRET=server.api_secret,
        LIVEKIT_WORKER_PORT=str(free_port()), APP_ENV="test", **voice_env(), **env))
    try:
        worker.wait_for(ready_log, timeout=180)
        yield worker
        assert worker.stop() and worker.proc.returncode == 0
    finally:
        worker.kill()


async def until_worker_free(worker: WorkerProcess) -> WorkerProcess:
    """The worker idle, and the server told so: it tells the server its load every 2.5 s, and a room
    opened while the server still thinks it full (or loading) gets no agent."""
    await until(lambda: asyncio.to_thread(worker.idle), 180, "the worker idle with its models ready")
    messages = worker.messages
    full = max((i for i, m in enumerate(messages) if "marking as unavailable" in m), default=-1)
    free = max((i for i, m in enumerate(messages) if "marking as available" in m), default=-1)
    if full > free:
        await asyncio.to_thread(worker.wait_for, "marking as available", 10, after=full)
    return worker
