"""The running services, created once per process and shared by every adapter (REST, WebSocket, LiveKit)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.config.settings import Settings
from app.services.llm import LLMService
from app.services.local_tts import LocalTTSService
from app.services.openaudio import OpenAudioService
from app.services.tts import TTSEngine
from app.services.whisper import WhisperService


def create_tts_engine(settings: Settings) -> TTSEngine:
    """``TTS_ENGINE=auto``: the OpenAudio server when ``OPENAUDIO_URL`` is set, else the embedded engine."""
    use_openaudio = settings.tts_engine == "openaudio" or (settings.tts_engine == "auto" and settings.openaudio_url)
    return OpenAudioService(settings) if use_openaudio else LocalTTSService(settings)


@dataclass
class Services:
    settings: Settings
    llm: LLMService
    stt: WhisperService
    tts: TTSEngine

    @classmethod
    def create(cls, settings: Settings) -> "Services":
        return cls(settings=settings, llm=LLMService(settings), stt=WhisperService(settings),
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
