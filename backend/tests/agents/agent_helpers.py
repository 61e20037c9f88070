"""Helpers shared by the agent tests (a module of its own: two conftest.py files share one name)."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.services.container import Services


async def transcribe(services: Services, audio: rtc.AudioFrame) -> str:
    pcm = resample_pcm(bytes(audio.data), audio.sample_rate, WHISPER_RATE)
    return (await services.stt.transcribe(pcm16_to_float(pcm), language="en")).text


def rms(audio: rtc.AudioFrame) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(audio.data, dtype="<i2").astype(np.float32) ** 2)))

