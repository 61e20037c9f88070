"""The embedded TTS engine: piper with the packaged en_US "joe" voice, for machines with no OpenAudio server."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

from app.audio.codec import trim_leading_silence
from app.config.settings import Settings
from app.models import embedded_piper_voice
from app.services.tts import TTSEngine

_DONE = object()


class LocalTTSService(TTSEngine):
    engine = "local-piper"
    speaks_at_speeds = True

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.voice = None
        self.voice_name = "en_US-joe-medium"
        self._synthesis = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")

    async def _load(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        model, config = embedded_piper_voice()
        self.voice = await asyncio.to_thread(PiperVoice.load, model, config)
        self.sample_rate = self.voice.config.sample_rate
        variation = self.settings.local_tts_variation
        self._synthesis = SynthesisConfig(noise_scale=self.voice.config.noise_scale * variation,
                                          noise_w_scale=self.voice.config.noise_w_scale * variation)
        async for _ in self._sentences("Ready."):  # first inference allocates; keep that off the first request
            pass

    @property
    def model_name(self) -> str:
        return f"piper/{self.voice_name}"

    def voices(self) -> list[str]:
        return [self.voice_name]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "voice": self.voice_name}

    async def stream(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[bytes]:
        text = self.check_text(text)
        await self.wait_ready(self.settings.ready_wait_seconds)
        synthesis = self._synthesis
        if speed != 1.0:  # piper's length scale: how long each phoneme lasts
            synthesis = dataclasses.replace(synthesis, length_scale=self.voice.config.length_scale / speed)
        first = True
        async for pcm in self._sentences(text, synthesis):
            if first:  # piper opens with 20-60 ms of silence: a listener would wait that much longer for the voice
                pcm, first = trim_leading_silence(pcm, self.sample_rate), False
            yield pcm

    async def _sentences(self, text: str, synthesis=None) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        sentences = iter(self.voice.synthesize(text, synthesis or self._synthesis))
        # Piper yields one chunk per sentence: step it one sentence per executor call, so a long
        # text interleaves with other requests and stops as soon as the caller stops reading.
        while True:
            chunk = await loop.run_in_executor(self._executor, next, sentences, _DONE)
            if chunk is _DONE:
                return
            yield chunk.audio_int16_bytes

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
