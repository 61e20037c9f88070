"""The OpenAI-compatible routes, driven with the official openai SDK."""

from __future__ import annotations

import openai
import pytest

from app.audio.codec import decode_audio
from helpers import QUESTION_WORDS, words


@pytest.fixture(scope="module")
def sdk(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list_names_what_runs_behind_each_plugin(sdk):
    """By default the LiveKit plugins' names are not what runs: GemmaLLM runs SmolLM2 and OpenAudioTTS piper."""
    served = {m.kind: m for m in sdk.models.list().data}
    assert set(served) == {"llm", "stt", "tts"}
    assert served["llm"].id == "smollm2-135m-instruct-q8_0"
    assert (served["llm"].engine, served["llm"].livekit_plugin) == ("llama.cpp", "GemmaLLM")
    assert {m.backend for m in served.values()} == {"embedded"} and all(m.ready for m in served.values())
    assert (served["stt"].engine, served["stt"].livekit_plugin) == ("faster-whisper", "WhisperSTT")
    assert served["tts"].id == "piper/en_US-joe-medium"
    assert (served["tts"].engine, served["tts"].livekit_plugin) == ("local-piper", "OpenAudioTTS")


def test_chat_completion(sdk):
    result = sdk.chat.completions.create(model="gemma", max_tokens=16, messages=[
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}])
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content.strip()
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.usage.completion_tokens >= 1


def test_chat_completion_stream(sdk):
    stream = sdk.chat.completions.create(model="gemma", max_tokens=16, stream=True,
                                         messages=[{"role": "user", "content": "Count: one, two,"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_chat_completion_stream_with_usage(sdk):
    """What a light worker asks of a GemmaVoice backend: the usage in a last chunk with no choices."""
    stream = sdk.chat.completions.create(model="gemma", max_tokens=8, stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "Count: one, two,"}])
    chunks = list(stream)
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and 1 <= chunks[-1].usage.completion_tokens <= 8, chunks[-1].usage
    assert chunks[-1].usage.prompt_tokens > 0


def test_transcription(sdk, question_wav):
    result = sdk.audio.transcriptions.create(model="whisper-1", file=("q.wav", question_wav))
    assert QUESTION_WORDS <= words(result.text)


def test_transcription_verbose(sdk, question_wav):
    result = sdk.audio.transcriptions.create(model="whisper-1", file=("q.wav", question_wav),
                                             response_format="verbose_json")
    assert result.language == "en" and result.duration > 1


def test_speech_mp3_and_wav(sdk):
    mp3 = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Good morning.").read()
    assert decode_audio(mp3).size > 16000 * 0.3
    wav = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Good morning.", response_format="wav").read()
    assert wav[:4] == b"RIFF"


def test_speech_speed_is_how_fast_it_is_spoken(sdk):
    def seconds(speed: float) -> float:
        pcm = sdk.audio.speech.create(model="tts-1", voice="alloy", input="The quick brown fox jumps over the lazy dog.",
                                      response_format="pcm", speed=speed).read()
        return len(pcm) / 2 / 22050

    normal, fast, slow = seconds(1.0), seconds(2.0), seconds(0.5)
    assert fast < 0.7 * normal and slow > 1.5 * normal, (normal, fast, slow)


def test_speech_unsupported_format_is_a_clear_error(sdk):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="aac")
    assert "not supported" in str(err.value)


def test_chat_completion_errors_are_sdk_errors(sdk):
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="gemma", messages=[])
