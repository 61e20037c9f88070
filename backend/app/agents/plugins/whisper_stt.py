"""WhisperSTT: LiveKit Agents' STT interface over the project's ``WhisperService`` (faster-whisper).

Whisper transcribes whole utterances, so this STT is non-streaming: the session's VAD cuts the
microphone audio into utterances and each one is recognized here. Room audio arrives at the room's
rate (24-48 kHz) and is resampled to Whisper's 16 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from livekit.agents import APIConnectOptions, NotGivenOr, stt, utils
from livekit.agents.types import NOT_GIVEN
from livekit.agents.utils import is_given

from app.agents.plugins._errors import api_error
from app.agents.plugins._loading import ModelLoadWait
from app.agents.runtime import LOAD_WAIT_S, shared_services
from app.audio.codec import WHISPER_RATE, pcm16_to_float, resample_pcm
from app.services.base import ServiceError
from app.services.container import Services
from app.services.whisper import WhisperService


@dataclass
class _Options:
    """What a ``WhisperSTT`` and its short-window views share: set on one, it holds for all."""

    language: str | None  # forced by the client or settings; None: detect
    prompt: str | None
    heard_language: str | None = None  # detected on the user's last transcribed utterance


class WhisperSTT(stt.STT):
    def __init__(self, *, services: Services | None = None, language: str | None = None,
                 prompt: str | None = None, load_timeout: float = LOAD_WAIT_S) -> None:
        """``language``: an ISO code to skip detection (faster, surer on short turns); default: detect.
        ``prompt``: words to bias recognition towards (names, jargon).
        ``load_timeout``: how long a request waits for a model that is still loading (``ModelLoadWait``)."""
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._services = services or shared_services()
        self._loaded = ModelLoadWait("the speech recognition model", load_timeout)
        self._options = _Options(language=language, prompt=prompt)
        self._short_window_s: float | None = None  # set only on a ``short_window`` view

    def short_window(self, min_window_s: float) -> WhisperSTT:
        """This recognizer on a shorter encoder window (faster), for passes over the start of an utterance.

        It shares this one's options, and where no language is set it takes the one the user spoke last
        instead of detecting it: on half a second of audio Whisper's detection flips between languages
        ('en', 'sa', 'ja' on one English clip), and so do the words it writes."""
        view = WhisperSTT(services=self._services, load_timeout=self._loaded.timeout)
        view._options, view._short_window_s = self._options, min_window_s
        return view

    @property
    def service(self) -> WhisperService:
        return self._services.stt

    async def wait_loaded(self) -> None:
        """Until the model has loaded; a non-retryable ``APIStatusError`` if it failed to, or took too long."""
        await self._loaded(self.service)

    @property
    def model(self) -> str:
        return self.service.model_name

    @property
    def provider(self) -> str:
        return self.service.engine  # faster-whisper, or an OpenAI-compatible server

    def update_options(self, *, language: str | None = None, prompt: str | None = None) -> None:
        if language is not None:
            self._options.language = language or None
        if prompt is not None:
            self._options.prompt = prompt or None

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        await self.wait_loaded()
        frame = utils.merge_frames(buffer)
        pcm = bytes(frame.data)
        if frame.num_channels > 1:
            pcm = np.frombuffer(pcm, "<i2").reshape(-1, frame.num_channels).mean(axis=1).astype("<i2").tobytes()
        audio = pcm16_to_float(resample_pcm(pcm, frame.sample_rate, WHISPER_RATE))
        options, short_view = self._options, self._short_window_s is not None
        if not is_given(language):
            language = options.language or (options.heard_language if short_view else None)
        try:
            result = await self.service.transcribe(audio, language=language, prompt=options.prompt,
                                                   min_window_s=self._short_window_s)
        except ServiceError as exc:
            raise api_error(exc) from exc
        # Whisper writes words for a cough or a hiss too, but unsurely: those segments are noise, not a turn.
        sure = [s for s in result.segments if s.avg_logprob >= self._services.settings.voice_min_log_prob]
        text = " ".join(s.text for s in sure if s.text).strip()
        if text and language is None and not short_view:
            options.heard_language = result.language
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("stt_"),
            alternatives=[stt.SpeechData(language=result.language, text=text, start_time=0.0,
                                         end_time=result.duration, confidence=result.confidence)],
        )
