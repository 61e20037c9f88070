"""WhisperService's speed-ups over stock faster-whisper, and its guard against the short window's decoding
loops, checked on real speech with the embedded model."""

from __future__ import annotations

import pytest
from helpers import QUESTION, QUESTION_WORDS, words

from app.audio.codec import decode_audio
from app.config.settings import Settings
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
