"""The running services, created once per process and shared by every adapter (REST, WebSocket, LiveKit).

Each is the embedded model by default, or a client of a model server of its own when its ``*_BASE_URL`` is set
(``app.services.remote``). Engines are imported only when chosen: a process with every model remote loads none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from app.config.settings import Settings
from app.services.base import ModelService
from app.services.llm import LLMService
from app.services.tts import TTSEngine


def tts_engine_name(settings: Settings) -> str:
    """``TTS_ENGINE=auto``: the OpenAudio server when ``OPENAUDIO_URL`` is set, else an OpenAI-compatible speech
    server when ``TTS_BASE_URL`` is, else the embedded voice."""
    if settings.tts_engine != "auto":
        return settings.tts_engine
    return "openaudio" if settings.openaudio_url else "remote" if settings.tts_base_url else "local"


def create_tts_engine(settings: Settings) -> TTSEngine:
    engine = tts_engine_name(settings)
    if engine == "openaudio":
        from app.services.openaudio import OpenAudioService

        return OpenAudioService(settings)
    if engine == "remote":
        from app.services.remote_speech import RemoteTTSService

        return RemoteTTSService(settings)
    from app.services.local_tts import LocalTTSService

    return LocalTTSService(settings)


def create_stt(settings: Settings) -> ModelService:
    """Whisper here, or an OpenAI-compatible transcription server when ``STT_BASE_URL`` is set."""
    if settings.stt_base_url:
        from app.services.remote_speech import RemoteSTTService

        return RemoteSTTService(settings)
    from app.services.whisper import WhisperService

    return WhisperService(settings)


@dataclass
class Services:
    settings: Settings
    llm: LLMService
    stt: Any  # WhisperService | RemoteSTTService: ``transcribe()`` alike
    tts: TTSEngine

    @classmethod
    def create(cls, settings: Settings) -> "Services":
        return cls(settings=settings, llm=LLMService(settings), stt=create_stt(settings),
                   tts=create_tts_engine(settings))

    @property
    def components(self) -> dict[str, object]:
        return {"llm": self.llm, "stt": self.stt, "tts": self.tts}

    async def start(self) -> None:
        """Load every model concurrently; failures are recorded per component, never raised."""
        await asyncio.gather(self.llm.start(), self.stt.start(), self.tts.start())

    @property
    def ready(self) -> bool:
        return all(s.state == "ready" for s in (self.llm, self.stt, self.tts))

    async def close(self) -> None:
        await asyncio.gather(self.llm.close(), self.stt.close(), self.tts.close())
