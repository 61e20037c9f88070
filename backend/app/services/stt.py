"""What a transcription is, whichever engine made it (Whisper here, or an OpenAI-compatible server)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.audio.codec import WHISPER_RATE
from app.config.settings import Settings
from app.services.base import BadRequest


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


def check_audio(audio: np.ndarray, settings: Settings) -> None:
    """``audio`` (float32 mono at 16 kHz) is something to transcribe, within the limits."""
    if audio.size == 0:
        raise BadRequest("no audio to transcribe")
    if audio.size > settings.max_audio_seconds * WHISPER_RATE:
        raise BadRequest(f"audio is longer than the {settings.max_audio_seconds:.0f} s limit")
