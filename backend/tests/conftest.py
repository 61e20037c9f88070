"""Shared fixtures: real uvicorn servers on loopback with the real embedded models.

``server`` is the default configuration; ``strict_server`` has an API key, a small upload limit and
a one-slot LLM queue, for the limit and auth tests. Both run in this process (in their own threads
and event loops) so tests can look at the services' state.
"""

from __future__ import annotations

import httpx
import pytest
from helpers import QUESTION, TEST_VOICE, STRICT_KEY, start_server, stop_server

from app.audio.codec import decode_audio, float_to_pcm16, pcm_to_wav
from app.config.settings import Settings


@pytest.fixture(scope="session")
def server():
    running = start_server(Settings(app_env="test", **TEST_VOICE, cors_origins="http://allowed.example"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def strict_server():
    running = start_server(Settings(app_env="test", **TEST_VOICE, api_key=STRICT_KEY, max_upload_bytes=1024 * 1024,
                                    llm_queue_size=1, max_text_chars=200))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def question_wav(client) -> bytes:
    """The test question spoken by the embedded TTS, with a little silence around it (WAV, 22.05 kHz)."""
    response = client.post("/v1/text-to-speech", json={"text": QUESTION, "format": "pcm"},
                           headers={"Accept": "audio/pcm"})
    response.raise_for_status()
    rate = int(response.headers["x-sample-rate"])
    silence = b"\0\0" * (rate // 4)
    return pcm_to_wav(silence + response.content + silence, rate)


@pytest.fixture(scope="session")
def question_pcm16k(question_wav) -> bytes:
    """The question as PCM s16le mono at 16 kHz: what a microphone client sends."""
    return float_to_pcm16(decode_audio(question_wav))
