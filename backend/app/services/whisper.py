"""WhisperService: faster-whisper transcription, one utterance at a time, served first come first served."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from app.audio.codec import WHISPER_RATE
from app.config.settings import Settings
from app.models import resolve_whisper
from app.services.base import ModelService
from app.services.stt import Segment, Transcription, check_audio

log = logging.getLogger(__name__)


FRAMES_PER_SECOND = 100  # Whisper's mel frames (10 ms hop)
STOCK_WINDOW_FRAMES = 30 * FRAMES_PER_SECOND
# Speech rarely passes 6 words (~8 tokens) a second: more than this means the decoder is looping.
MAX_TOKENS_PER_SECOND = 8


def lean_whisper_call(model, window_frames: int):
    """One transcription on the shared faster-whisper ``model``, with two changes that matter for short
    utterances on a CPU.

    1. The encoder, most of a short clip's cost, runs over a window just long enough for the clip
       (``window_frames``) rather than over the clip padded to 30 s. CTranslate2 takes the shorter input as
       it is. Much shorter windows make the decoder repeat itself; 7.5 s gives the same words as 30 s on the
       24 benchmark clips (docs/benchmarks.md) at a quarter of the cost, and the service checks each result
       for a loop (``looks_repeated``) and redoes it with 30 s.
    2. With ``language=None``, faster-whisper encodes the first window once to detect the language and
       again to decode it; here the detection's encoder output is reused (the two inputs differ only
       in the clip's last 10 ms frame).

    The returned object is a ``WhisperModel`` that shares the loaded parts (the CTranslate2 model, tokenizer,
    feature extractor) with ``model`` but holds this call's state (the window, the detection's output) itself:
    two calls run on the model at once (a dropped run goes on beside the live one), and neither may see the
    other's window or encoder output. It overrides faster-whisper's public ``detect_language`` and ``encode``,
    relying on ``transcribe`` calling them in that order (faster-whisper 1.2, pinned in pyproject.toml;
    tests/test_whisper_service.py checks it).
    """
    return _lean_call_class()(model, window_frames)


@functools.cache
def _lean_call_class():
    from faster_whisper import WhisperModel  # imported when a model loads, not with this module

    class LeanWhisperCall(WhisperModel):
        def __init__(self, shared: WhisperModel, window: int):  # no loading: the shared model's parts
            self.__dict__.update(shared.__dict__)
            self.window_frames = window
            self._detecting = False
            self._from_detection = None

        def detect_language(self, *args, **kwargs):
            self._detecting, self._from_detection = True, None
            try:
                return super().detect_language(*args, **kwargs)
            finally:
                self._detecting = False

        def encode(self, features):
            if self._from_detection is not None:  # the first window, already encoded for detection
                output, self._from_detection = self._from_detection, None
                return output
            if features.shape[-1] > self.window_frames:
                features = features[..., :self.window_frames]
            output = super().encode(features)
            if self._detecting:
                self._from_detection = output
            return output

    return LeanWhisperCall


def looks_repeated(text: str) -> bool:
    """Whether the words are one phrase over and over, the last copy maybe cut short ("Yes. Yes. Yes.",
    "What is 2? What is 2? What is"): what Whisper writes when its encoder window is too short. A person
    can say that too; then the retry agrees, at the cost of a slower turn."""
    found = re.findall(r"[\w']+", text.lower())
    return any(found[unit:] == found[:-unit] for unit in range(1, len(found) // 2 + 1))


def encoder_window_frames(samples: int, min_window_s: float) -> int:
    """The encoder window for a clip: at least ``min_window_s``, at least the clip plus 1 s, at most 30 s."""
    clip_frames = samples * FRAMES_PER_SECOND // WHISPER_RATE
    return min(STOCK_WINDOW_FRAMES, max(clip_frames + FRAMES_PER_SECOND, round(min_window_s * FRAMES_PER_SECOND)))


class WhisperService(ModelService):
    component = "stt"
    engine = "faster-whisper"

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings
        self.model = None
        self.model_name = settings.whisper_model
        # One live transcription at a time: CTranslate2 already uses every core we give it per call. A run
        # whose caller gave up (a speculative transcription the user talked past) can't be stopped inside
        # the encoder; it finishes on the second thread, so the next run never waits behind it.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="whisper")
        self._lock = asyncio.Lock()

    async def _load(self) -> None:
        where = await asyncio.to_thread(resolve_whisper, self.settings)
        from faster_whisper import WhisperModel

        self.model = await asyncio.to_thread(
            WhisperModel, where, device=self.settings.whisper_device,
            compute_type=self.settings.whisper_compute_type, cpu_threads=self.settings.whisper_threads,
            num_workers=2, download_root=str(self.settings.models_dir / "whisper"),
        )
        # The first call on real-length audio is slow; pay for it before the first user does.
        rng = np.random.default_rng(0)
        warm = (0.05 * rng.standard_normal(WHISPER_RATE * 3)).astype(np.float32)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._run, warm, "en", None, 0.0, None)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "model": self.model_name}

    def _run(self, audio: np.ndarray, language: str | None, prompt: str | None, temperature: float,
             abandoned: threading.Event | None, min_window_s: float | None = None,
             loop_guard: bool = True) -> Transcription:
        started = time.perf_counter()
        window = encoder_window_frames(len(audio), min_window_s or self.settings.whisper_min_window_s)
        result, capped = self._decode(audio, window, language, prompt, temperature, abandoned)
        if abandoned is not None and abandoned.is_set():
            return result
        if loop_guard and window < STOCK_WINDOW_FRAMES and (capped or looks_repeated(result.text)):
            log.info("stt: %r looks like a decoding loop with a %d s window; again with 30 s",
                     result.text[:80], window // FRAMES_PER_SECOND)
            result, _ = self._decode(audio, STOCK_WINDOW_FRAMES, language, prompt, temperature, abandoned)
        result.processing_s = time.perf_counter() - started
        return result

    def _decode(self, audio: np.ndarray, window: int, language: str | None, prompt: str | None,
                temperature: float, abandoned: threading.Event | None) -> tuple[Transcription, bool]:
        """The transcription, and whether it ran into the token cap that stops a decoding loop."""
        # Always with timestamp tokens: they cost ~30 ms a clip, and with them the short window stopped
        # making the decoder loop ("Yes. Yes.") on the benchmark clips (bench.whisper_windows).
        duration = len(audio) / WHISPER_RATE
        cap = int(duration * MAX_TOKENS_PER_SECOND) + 16
        segments_iter, info = lean_whisper_call(self.model, window).transcribe(
            audio, language=language, initial_prompt=prompt, temperature=temperature,
            beam_size=self.settings.whisper_beam_size, condition_on_previous_text=False,
            without_timestamps=False, vad_filter=False, max_new_tokens=cap,
            no_speech_threshold=self.settings.whisper_no_speech_threshold,
            log_prob_threshold=self.settings.whisper_log_prob_threshold,
        )
        segments, text_tokens = [], 0
        for i, s in enumerate(segments_iter):
            if abandoned is not None and abandoned.is_set():
                break  # nobody waits for the rest
            segments.append(Segment(id=i, start=round(s.start, 3), end=round(s.end, 3), text=s.text.strip(),
                                    avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob))
            text_tokens += len(s.tokens)
        text = " ".join(s.text for s in segments if s.text).strip()
        return Transcription(text=text, language=info.language, language_probability=info.language_probability,
                             duration=round(duration, 3), segments=segments), text_tokens >= cap

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                         temperature: float = 0.0, min_window_s: float | None = None,
                         loop_guard: bool = True) -> Transcription:
        """``audio``: float32 mono at 16 kHz. ``min_window_s``: the shortest encoder window for this call
        (default ``WHISPER_MIN_WINDOW_S``); shorter is faster and less sure of the words. ``loop_guard``: redo a
        transcript that looks like a decoding loop with the full 30 s window (off only to measure how often
        a window makes loops: bench.whisper_windows)."""
        check_audio(audio, self.settings)
        await self.wait_ready(self.settings.ready_wait_seconds)
        abandoned = threading.Event()
        async with self._lock:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run, audio, language or None, prompt or None, temperature, abandoned,
                    min_window_s, loop_guard)
            except asyncio.CancelledError:
                abandoned.set()  # the lock is released now; the thread stops at its next segment
                raise

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
