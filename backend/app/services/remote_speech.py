"""Speech on servers of their own: transcription from ``STT_BASE_URL`` (``POST /audio/transcriptions``) and
speech from ``TTS_BASE_URL`` (``POST /audio/speech``), both OpenAI-compatible (speaches, another GemmaVoice
API, a GPU host). The same services as the embedded Whisper and voice, to every caller.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import httpx
import numpy as np

from app.audio.codec import WHISPER_RATE, Resampler, float_to_pcm16, pcm_to_wav
from app.config.settings import Settings
from app.services.base import ModelService
from app.services.remote import ModelServer, ServerFailed
from app.services.stt import Segment, Transcription, check_audio
from app.services.tts import TTSEngine

# OpenAI's `pcm` speech: 24 kHz s16le mono. A GemmaVoice API says its own rate in X-Sample-Rate.
OPENAI_PCM_RATE = 24000


class RemoteSTTService(ModelService):
    component = "stt"
    engine = "openai-compatible"

    def __init__(self, settings: Settings):
        super().__init__()
        assert settings.stt_base_url
        self.settings = settings
        self.model_name = settings.stt_model
        self.server = ModelServer(self, "STT server", settings.stt_base_url, settings.stt_api_key, settings)
        self.client = self.server.openai()

    async def _load(self) -> None:
        await self.server.wait_answering()

    def status(self) -> dict[str, Any]:
        return {**super().status(), **self.server.status(), "model": self.model_name}

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                         temperature: float = 0.0, min_window_s: float | None = None) -> Transcription:
        """As ``WhisperService.transcribe``; ``min_window_s`` is the local encoder's and does not apply."""
        check_audio(audio, self.settings)
        await self.wait_usable(self.settings.ready_wait_seconds)
        wav = pcm_to_wav(float_to_pcm16(audio), WHISPER_RATE)
        options: dict[str, Any] = {"model": self.model_name, "file": ("speech.wav", wav, "audio/wav"),
                                   "response_format": "verbose_json", "temperature": temperature}
        if language:
            options["language"] = language
        if prompt:
            options["prompt"] = prompt
        started = time.perf_counter()
        result = await self.server.first_try(lambda: self.client.audio.transcriptions.create(**options))
        try:
            return _transcription(result, len(audio) / WHISPER_RATE, time.perf_counter() - started)
        except (AttributeError, TypeError, ValueError) as exc:
            raise self.server.failure(exc) from exc

    async def close(self) -> None:
        await self.server.close()
        self.closed()


def _transcription(result: Any, duration: float, seconds: float) -> Transcription:
    """A verbose_json answer as ours. A server that gives no segments (only text) gets one, taken as sure."""
    text = (getattr(result, "text", None) or "").strip()
    raw = getattr(result, "segments", None) or []
    segments = [Segment(id=i, start=float(_field(s, "start", 0.0)), end=float(_field(s, "end", duration)),
                        text=str(_field(s, "text", "")).strip(), avg_logprob=float(_field(s, "avg_logprob", 0.0)),
                        no_speech_prob=float(_field(s, "no_speech_prob", 0.0)))
                for i, s in enumerate(raw)]
    if not segments and text:
        segments = [Segment(id=0, start=0.0, end=duration, text=text, avg_logprob=0.0, no_speech_prob=0.0)]
    extra = getattr(result, "model_extra", None) or {}
    return Transcription(text=text, language=getattr(result, "language", None) or "",
                         language_probability=float(extra.get("language_probability", 1.0)),
                         duration=round(float(getattr(result, "duration", None) or duration), 3),
                         segments=segments, processing_s=seconds)


def _field(segment: Any, name: str, default: Any) -> Any:
    value = segment.get(name) if isinstance(segment, dict) else getattr(segment, name, None)
    return default if value is None else value


class RemoteTTSService(TTSEngine):
    engine = "openai-compatible"
    sample_rate = OPENAI_PCM_RATE
    speaks_at_speeds = True  # OpenAI's `speed`, passed on

    def __init__(self, settings: Settings):
        super().__init__(settings)
        assert settings.tts_base_url
        self.server = ModelServer(self, "TTS server", settings.tts_base_url, settings.tts_api_key, settings)

    async def _load(self) -> None:
        await self.server.wait_answering()

    @property
    def model_name(self) -> str:
        return self.settings.tts_model

    def status(self) -> dict[str, Any]:
        return {**super().status(), **self.server.status(), "model": self.model_name}

    async def stream(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[bytes]:
        """PCM at ``sample_rate`` as the server sends it; the first audio before the whole text is spoken when
        the server streams (a GemmaVoice API does)."""
        text = self.check_text(text)
        await self.wait_usable(self.settings.ready_wait_seconds)
        body = {"model": self.settings.tts_model, "input": text, "response_format": "pcm"}
        if speed != 1.0:
            body["speed"] = speed
        if voice or self.settings.tts_voice:
            body["voice"] = voice or self.settings.tts_voice
        response, body_pieces, first = await self.server.first_try(lambda: self._first_audio(body))
        try:
            resampler = Resampler(int(response.headers.get("x-sample-rate") or OPENAI_PCM_RATE), self.sample_rate)
            try:
                out = resampler.push(first)  # (it keeps samples whole across network chunks)
                if out:
                    yield out
                async for piece in body_pieces:
                    out = resampler.push(piece)
                    if out:
                        yield out
            except httpx.HTTPError as exc:  # audio has flowed: no retry, it would repeat speech
                raise self.server.failure(exc) from exc
            tail = resampler.flush()
            if tail:
                yield tail
        finally:
            await response.aclose()

    async def _first_audio(self, body: dict[str, Any]) -> tuple[httpx.Response, AsyncIterator[bytes], bytes]:
        """Send the request and read its first bytes of audio: the response, the rest of its body, those bytes."""
        request = self.server.client.build_request("POST", "/audio/speech", json=body)
        response = await self.server.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                detail = self.server.scrub((await response.aread())[:300].decode("utf-8", "replace"))
                raise ServerFailed(f"{self.server.describe()} answered {response.status_code}: {detail}",
                                   status_code=response.status_code)
            kind = response.headers.get("content-type", "")
            if kind and not kind.startswith(("audio/", "application/octet-stream")):
                raise ServerFailed(f"{self.server.describe()} sent {kind!r}, not PCM audio")
            pieces = response.aiter_bytes()
            first = await anext(pieces, b"")
            if not first:
                raise ServerFailed(f"{self.server.describe()} sent no audio")
            return response, pieces, first
        except BaseException:
            await response.aclose()
            raise

    async def close(self) -> None:
        await self.server.close()
        self.closed()

