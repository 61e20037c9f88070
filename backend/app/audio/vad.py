"""Voice activity detection: silero (the model shipped in livekit-plugins-silero), the one VAD of the project.

The voice engine (every transport) loads it from here, with the thresholds of the settings.
"""

from __future__ import annotations

from functools import lru_cache

# Imported at module load: LiveKit plugins must register on the main thread.
from livekit.plugins import silero

from app.config.settings import Settings


def _vad(min_silence_ms: int, min_speech_ms: int, threshold: float, padding_ms: int):
    return silero.VAD.load(min_silence_duration=min_silence_ms / 1000, min_speech_duration=min_speech_ms / 1000,
                           activation_threshold=threshold, prefix_padding_duration=padding_ms / 1000,
                           sample_rate=16000, force_cpu=True)


_load = lru_cache(maxsize=4)(_vad)


def load_vad(settings: Settings, *, padding_ms: int = 300):
    """A silero ``VAD``; each caller opens its own ``.stream()`` (the ONNX session is shared)."""
    return _load(settings.vad_min_silence_ms, settings.vad_min_speech_ms, settings.vad_activation_threshold,
                 padding_ms)


def tunable_vad(settings: Settings, *, padding_ms: int = 300):
    """A silero ``VAD`` of one session's own, whose thresholds that session may change (``update_options``)
    without changing anyone else's. Its own ONNX session too (~0.1 s to load, a few MB): the plugin's public
    API has no way to share one between VADs of different options."""
    return _vad(settings.vad_min_silence_ms, settings.vad_min_speech_ms, settings.vad_activation_threshold,
                padding_ms)
