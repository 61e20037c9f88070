"""WhisperService: faster-whisper transcription, one utterance at a time, served first come first served."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.audio.codec import WHISPER_RATE
from app.config.settings import Settings
from app.models import resolve_whisper
from app.services.base import BadRequest, ModelService


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass
class Transcription:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: list[Segment] = field(default_factory=list)
    processing_s: float = 0.0

    @property
    def confidence(self) -> float:
        """Mean token probability over the segments, in [0, 1]."""
        if not self.segments:
            return 0.0
        return float(np.mean([np.exp(s.avg_logprob) for s in self.segments]))


class WhisperService(ModelService):
    component = "stt"

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings
        self.model = None
        self.model_name = settings.whisper_model
        # One model, one thread: CTranslate2 already uses every core we give it per call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._lock = asyncio.Lock()

    async def _load(self) -> None:
        from faster_whisper import WhisperModel

        where = await asyncio.to_thread(resolve_whisper, self.settings)
        self.model = await asyncio.to_thread(
            WhisperModel, where, device=self.settings.whisper_device,
            compute_type=self.settings.whisper_compute_type, cpu_threads=self.settings.whisper_threads,
            download_root=str(self.settings.models_dir / "whisper"),
        )
        # The first call on real-length audio is slow; pay for it before the first user does.
        rng = np.random.default_rng(0)
        warm = (0.05 * rng.standard_normal(WHISPER_RATE * 3)).astype(np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._run, warm, "en", None, 0.0, False)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "model": self.model_name}

    def _run(self, audio: np.ndarray, language: str | None, prompt: str | None, temperature: float,
             timestamps: bool) -> Transcription:
        import time

        started = time.perf_counter()
        segments_iter, info = self.model.transcribe(
            audio, language=language, initial_prompt=prompt, temperature=temperature,
            beam_size=self.settings.whisper_beam_size, condition_on_previous_text=False,
            without_timestamps=not timestamps, vad_filter=False,
        )
        segments = [Segment(id=i, start=round(s.start, 3), end=round(s.end, 3), text=s.text.strip(),
                            avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob)
                    for i, s in enumerate(segments_iter)]
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcription(text=text, language=info.language, language_probability=info.language_probability,
                             duration=round(len(audio) / WHISPER_RATE, 3), segments=segments,
                             processing_s=time.perf_counter() - started)

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                         temperature: float = 0.0, timestamps: bool = True) -> Transcription:
        """``audio``: float32 mono at 16 kHz."""
        if audio.size == 0:
            raise BadRequest("no audio to transcribe")
        if audio.size > self.settings.max_audio_seconds * WHISPER_RATE:
            raise BadRequest(f"audio is longer than the {self.settings.max_audio_seconds:.0f} s limit")
        await self.wait_ready(self.settings.ready_wait_seconds)
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, audio, language or None, prompt or None, temperature, timestamps)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
