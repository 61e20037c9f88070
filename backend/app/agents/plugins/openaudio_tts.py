"""OpenAudioTTS: LiveKit Agents' TTS interface over the project's TTS engine.

The engine is whichever ``create_tts_engine`` picked: the OpenAudio / fish-speech server when
``OPENAUDIO_URL`` is set, else the embedded piper voice. Both stream PCM s16le mono as they
synthesize, so audio is pushed on as it arrives. Non-streaming: the agent feeds it one sentence at a
time (see ``voice_agent.py``).
"""

from __future__ import annotations

import logging
import time

from livekit.agents import APIConnectOptions, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from app.agents.plugins._errors import api_error
from app.agents.plugins._loading import ModelLoadWait
from app.agents.runtime import LOAD_WAIT_S, shared_services
from app.services.base import ServiceError
from app.services.container import Services
from app.services.llm import LLMGate
from app.services.tts import TTSEngine

log = logging.getLogger("app.agents.tts")


class OpenAudioTTS(tts.TTS):
    def __init__(self, *, services: Services | None = None, voice: str | None = None,
                 llm_gate: LLMGate | None = None, load_timeout: float = LOAD_WAIT_S) -> None:
        """``voice``: a voice / OpenAudio reference id; default ``TTS_DEFAULT_VOICE``, and the
        engine's own default (``OPENAUDIO_REFERENCE_ID``) when that is unset too.
        ``llm_gate``: cleared from the start of each piece until its first audio, so that the session's
        model (``GemmaLLM(llm_gate=...)``) pauses meanwhile: on a small CPU the two slow each other
        down, and the first audio is what the listener waits for.
        ``load_timeout``: how long requests wait for a model that is still loading (``ModelLoadWait``)."""
        self._services = services or shared_services()
        self.llm_gate = llm_gate
        self._loaded = ModelLoadWait("the speech synthesis model", load_timeout)
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=self.engine.sample_rate, num_channels=1)
        self._voice = voice or self._services.settings.tts_default_voice

    @property
    def engine(self) -> TTSEngine:
        return self._services.tts

    async def wait_loaded(self) -> None:
        """Until the model has loaded; a non-retryable ``APIStatusError`` if it failed to, or took too long."""
        await self._loaded(self.engine)

    @property
    def sample_rate(self) -> int:
        # The engine knows its rate for sure only once its model has loaded.
        return self.engine.sample_rate

    @property
    def voice(self) -> str | None:
        return self._voice

    @property
    def model(self) -> str:
        return self.engine.engine

    @property
    def provider(self) -> str:
        return "openaudio" if self.engine.engine == "openaudio" else "local"

    def update_options(self, *, voice: str | None = None) -> None:
        if voice is not None:
            self._voice = voice

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> OpenAudioChunkedStream:
        return OpenAudioChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class OpenAudioChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: OpenAudioTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._openaudio = tts
        self._voice = tts.voice  # fixed per request, even if options change meanwhile

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        await self._openaudio.wait_loaded()  # (its sample rate is sure only then)
        engine = self._openaudio.engine
        output_emitter.initialize(request_id=utils.shortuuid("tts_"), sample_rate=engine.sample_rate,
                                  num_channels=1, mime_type="audio/pcm")
        chunks = engine.stream(self.input_text, voice=self._voice)
        gate = self._openaudio.llm_gate
        if gate is not None:
            gate.clear()
        pushed = False
        started = time.perf_counter()
        try:
            async for pcm in chunks:
                output_emitter.push(pcm)
                if not pushed:
                    log.debug("piece of %d characters: first audio after %.0f ms", len(self.input_text),
                              (time.perf_counter() - started) * 1000)
                pushed = True
                if gate is not None:
                    gate.set()
        except ServiceError as exc:
            raise api_error(exc, output_sent=pushed) from exc
        finally:
            if gate is not None:
                gate.set()
            await chunks.aclose()  # stops synthesis when the reply is interrupted
        output_emitter.flush()
