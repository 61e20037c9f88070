"""WhisperService's speed-ups over stock faster-whisper, and its guard against the short window's decoding
loops, checked on real speech with the embedded model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import QUESTION, QUESTION_WORDS, TEST_VOICE, words

from app.audio.codec import WHISPER_RATE, decode_audio, pcm16_to_float, resample_pcm
from app.config.settings import Settings
from app.services.local_tts import LocalTTSService
from app.services.whisper import STOCK_WINDOW_FRAMES, WhisperService, encoder_window_frames, looks_repeated


def test_encoder_window_covers_the_clip_within_whisper_limits():
    assert encoder_window_frames(3 * 16000, 10) == 1000  # short clip: the minimum window
    assert encoder_window_frames(12 * 16000, 10) == 1300  # longer clip: the clip plus 1 s
    assert encoder_window_frames(45 * 16000, 10) == STOCK_WINDOW_FRAMES  # never past Whisper's 30 s
    assert encoder_window_frames(3 * 16000, 30) == STOCK_WINDOW_FRAMES  # 30 = stock behaviour


class CountingEncoder:
    """Wraps the CTranslate2 model to record each encoder input's shape; everything else passes through."""

    def __init__(self, inner):
        self.inner = inner
        self.shapes: list[list[int]] = []

    def encode(self, features, *args, **kwargs):
        self.shapes.append(list(features.shape))
        return self.inner.encode(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
async def whisper():
    service = WhisperService(Settings(app_env="test", _env_file=None))
    await service.start()
    await service.wait_ready(60)
    yield service
    await service.close()


@pytest.mark.parametrize("language", [None, "en"])
async def test_one_short_encoder_pass_per_utterance(whisper, question_wav, language):
    counting = whisper.model.model = CountingEncoder(whisper.model.model)
    try:
        heard = await whisper.transcribe(decode_audio(question_wav), language=language)
    finally:
        whisper.model.model = counting.inner
    assert QUESTION_WORDS <= words(heard.text), heard.text
    assert heard.language == "en"
    # Language detection and decoding share one pass over a 7.5 s window, not two over 30 s.
    assert [shape[-1] for shape in counting.shapes] == [750], counting.shapes
    assert words(QUESTION) == words(heard.text)


def test_a_loop_is_told_from_speech():
    assert looks_repeated("Yes. Yes. Yes.")
    assert looks_repeated("What is 2 plus 2? What is 2 plus 2? What is 2 plus")  # the last copy cut short
    assert not looks_repeated("Yes.")
    assert not looks_repeated("")
    assert not looks_repeated("I think that that is fine.")
    assert not looks_repeated(QUESTION)


class LoopingFirstDecode:
    """TEST DOUBLE around WhisperService._decode: the first result comes back as a decoding loop (the words
    said three times), as a too-short window makes Whisper write; later calls pass through untouched."""

    def __init__(self, real):
        self.real = real
        self.windows: list[int] = []

    def __call__(self, audio, window, *args):
        self.windows.append(window)
        result, capped = self.real(audio, window, *args)
        if len(self.windows) == 1:
            result.text = " ".join([result.text] * 3)
        return result, capped


async def test_a_looping_transcript_is_redone_with_the_full_window(whisper, question_wav):
    whisper._decode = looping = LoopingFirstDecode(whisper._decode)
    try:
        heard = await whisper.transcribe(decode_audio(question_wav), language="en")
    finally:
        del whisper._decode
    assert looping.windows == [750, STOCK_WINDOW_FRAMES]
    assert words(heard.text) == words(QUESTION) and not looks_repeated(heard.text), heard.text


async def test_without_the_loop_guard_a_loop_stands(whisper, question_wav):
    """What bench.whisper_windows measures a window by: its transcript as the decoder wrote it."""
    whisper._decode = looping = LoopingFirstDecode(whisper._decode)
    try:
        heard = await whisper.transcribe(decode_audio(question_wav), language="en", loop_guard=False)
    finally:
        del whisper._decode
    assert looping.windows == [750]
    assert looks_repeated(heard.text), heard.text


# --- two calls on the one model at once: a dropped run goes on beside the live one ----------------------------

OTHER_SENTENCE = "The weather is sunny and warm today."


@pytest.fixture(scope="module")
async def two_clips() -> tuple[np.ndarray, np.ndarray]:
    """QUESTION and OTHER_SENTENCE spoken by the embedded TTS (no sampling noise), float32 at 16 kHz."""
    tts = LocalTTSService(Settings(app_env="test", _env_file=None, **TEST_VOICE))
    await tts.start()
    await tts.wait_ready(60)
    pad = b"\0\0" * (WHISPER_RATE // 4)
    try:
        spoken = [await tts.synthesize(text) for text in (QUESTION, OTHER_SENTENCE)]
        return tuple(pcm16_to_float(pad + resample_pcm(pcm, tts.sample_rate, WHISPER_RATE) + pad) for pcm in spoken)
    finally:
        await tts.close()


class Interleaving:
    """TEST DOUBLE around the CTranslate2 Whisper model: lets the test order two concurrent calls step by step.
    The first thread to encode is call A, the next call B. A is held inside its first encoder pass ("A encode")
    and inside its language detection ("A detect"), B inside its language detection ("B detect"), each until the
    test lets it go. Records each call's encoder windows (frames). Everything else passes through."""

    STEPS = ("A encode", "A detect", "B detect")

    def __init__(self, inner):
        self.inner = inner
        self.calls: dict[int, str] = {}
        self.windows: dict[str, list[int]] = {"A": [], "B": []}
        self.arrived = {step: threading.Event() for step in self.STEPS}
        self.go = {step: threading.Event() for step in self.STEPS}

    def _call(self) -> str:
        me = threading.get_ident()
        if me not in self.calls:
            self.calls[me] = "AB"[len(self.calls)]
        return self.calls[me]

    def _hold(self, step: str) -> None:
        if step in self.arrived and not self.arrived[step].is_set():
            self.arrived[step].set()
            assert self.go[step].wait(60), f"never let go at {step}"

    def reached(self, step: str) -> None:
        assert self.arrived[step].wait(60), f"no call reached {step}"

    def release(self, step: str | None = None) -> None:
        for name in [step] if step else self.STEPS:
            self.go[name].set()

    def encode(self, features, *args, **kwargs):
        call = self._call()
        self.windows[call].append(features.shape[-1])
        self._hold(f"{call} encode")
        return self.inner.encode(features, *args, **kwargs)

    def detect_language(self, *args, **kwargs):
        self._hold(f"{self._call()} detect")
        return self.inner.detect_language(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_two_calls_at_once_each_detect_and_decode_their_own_audio(whisper, two_clips):
    """A run whose caller gave up goes on in the service's second thread while the next one runs: both detect
    the language (language=None) on the one model. Call A (QUESTION, a 30 s window) encodes its first window for
    detection while B (OTHER_SENTENCE, the short window) is between detecting and decoding: each must decode its
    own encoder output, over its own window."""
    spider, weather = two_clips
    gated = whisper.model.model = Interleaving(whisper.model.model)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(whisper._run, spider, None, None, 0.0, None, 30.0)
            gated.reached("A encode")  # A has set its window and is encoding for detection
            second = pool.submit(whisper._run, weather, None, None, 0.0, None)
            gated.reached("B detect")  # B has encoded its window and is detecting its language
            gated.release("A encode")
            gated.reached("A detect")  # A's encoder output is in hand, for its decoding to reuse
            gated.release("B detect")  # B goes on to decode
            b = second.result(timeout=120)
            gated.release()
            a = first.result(timeout=120)
    finally:
        gated.release()
        whisper.model.model = gated.inner
    assert (a.language, b.language) == ("en", "en")
    assert words(a.text) == words(QUESTION), a.text
    assert words(b.text) == words(OTHER_SENTENCE), b.text
    # One encoder pass each (detection's output reused for decoding), over the call's own window.
    assert gated.windows == {"A": [STOCK_WINDOW_FRAMES], "B": [750]}, gated.windows
