"""Smoke tests of the model-server test infrastructure: real servers as subprocesses, and the chat double."""

from __future__ import annotations

import openai
import pytest

from doubles.chat_server import MisbehavingChatServer
from helpers import QUESTION, QUESTION_WORDS, words
from bench.model_servers import GemmaVoiceAPIProcess, LlamaCppServer


@pytest.fixture(scope="module")
def llama_server():
    with LlamaCppServer() as server:
        yield server


@pytest.fixture(scope="module")
def llama_sdk(llama_server):
    return openai.OpenAI(base_url=llama_server.url, api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def api_process():
    with GemmaVoiceAPIProcess() as api:
        yield api


@pytest.fixture(scope="module")
def chat_double():
    with MisbehavingChatServer() as double:
        yield double


def test_llama_cpp_server_streams_a_chat_completion(llama_sdk, llama_server):
    stream = llama_sdk.chat.completions.create(model=llama_server.model, stream=True, max_tokens=24, temperature=0,
                                               messages=[{"role": "user", "content": "Say hello."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_llama_cpp_server_logs_a_client_that_goes_away(llama_sdk, llama_server):
    before = llama_server.disconnects()
    # min_tokens (a llama.cpp extension) keeps the reply going, so it can't end before the client leaves.
    stream = llama_sdk.chat.completions.create(model=llama_server.model, stream=True, max_tokens=512,
                                               extra_body={"min_tokens": 400},
                                               messages=[{"role": "user", "content": "Tell me a long story."}])
    next(iter(stream))
    stream.close()
    line = llama_server.wait_for_log(LlamaCppServer.DISCONNECT_TEXT, timeout=20, count=before + 1)
    assert "127.0.0.1" in line
    assert llama_server.disconnects() == before + 1


def test_gemmavoice_api_process_hears_its_own_speech(api_process):
    sdk = openai.OpenAI(base_url=api_process.url, api_key="none", max_retries=0, timeout=120)
    wav = sdk.audio.speech.create(model="tts-1", voice="alloy", input=QUESTION, response_format="wav").read()
    assert wav[:4] == b"RIFF"
    heard = sdk.audio.transcriptions.create(model="whisper-1", file=("question.wav", wav))
    assert QUESTION_WORDS <= words(heard.text), heard.text


def test_chat_double_echoes_then_hangs_on_cue(chat_double):
    chat_double.reset("ok")
    sdk = openai.OpenAI(base_url=chat_double.url, api_key="none", max_retries=0, timeout=2)
    chunks = list(sdk.chat.completions.create(model="double-chat", stream=True,
                                              messages=[{"role": "user", "content": "one two three"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"

    chat_double.mode = "hang_after_first"
    stream = sdk.chat.completions.create(model="double-chat", stream=True,
                                         messages=[{"role": "user", "content": "one two three"}])
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.content == "one"
    with pytest.raises(openai.APITimeoutError):
        next(chunks)
    stream.close()
    chat_double.wait_for_disconnects(1, timeout=10)
    assert len(chat_double.requests) == 2
