"""Helpers shared by the agent tests (a module of its own: two conftest.py files share one name)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import numpy as np
from livekit import rtc

from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.services.container import Services


async def transcribe(services: Services, audio: rtc.AudioFrame) -> str:
    pcm = resample_pcm(bytes(audio.data), audio.sample_rate, WHISPER_RATE)
    return (await services.stt.transcribe(pcm16_to_float(pcm), language="en")).text


def rms(audio: rtc.AudioFrame) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(audio.data, dtype="<i2").astype(np.float32) ** 2)))



async def until(condition: Callable[[], object], timeout: float, what: str):
    """Polls ``condition`` (a function, or one that returns an awaitable) until it gives something true,
    and returns that; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
