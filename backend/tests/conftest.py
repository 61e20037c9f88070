"""Shared fixtures: real uvicorn servers on loopback with the real embedded models.

``server`` is the default configuration; ``strict_server`` has an API key, a small upload limit and
a one-slot LLM queue, for the limit and auth tests. Both run in this process (in their own threads
and event loops) so tests can look at the services' state.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.audio.codec import decode_audio, encode_with_av, float_to_pcm16, pcm_to_wav
from app.config.settings import Settings
from app.main import create_app

QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def services(self):
        return self.app.state.services

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the server's own loop (services belong to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def start_server(settings: Settings) -> RunningServer:
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=16 * 1024 * 1024)
    server = uvicorn.Server(config)
    running = RunningServer(url=f"http://127.0.0.1:{port}", app=app, server=server, thread=None)  # type: ignore[arg-type]

    def serve():
        loop = asyncio.new_event_loop()
        running.loop = loop
        loop.run_until_complete(server.serve())

    running.thread = threading.Thread(target=serve, daemon=True, name=f"uvicorn-{port}")
    running.thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{running.url}/health/ready", timeout=2).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {running.url} did not become ready: {httpx.get(running.url + '/health').text}")


def stop_server(running: RunningServer) -> None:
    running.server.should_exit = True
    running.thread.join(timeout=15)


@pytest.fixture(scope="session")
def server():
    running = start_server(Settings(app_env="test", cors_origins="http://allowed.example"))
    yield running
    stop_server(running)


STRICT_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def strict_server():
    running = start_server(Settings(app_env="test", api_key=STRICT_KEY, max_upload_bytes=1024 * 1024,
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


def encode_as(wav: bytes, container: str, codec: str, rate: int = 48000) -> bytes:
    """Re-encode a WAV into another container/codec (for the format tests)."""
    samples = decode_audio(wav, target_rate=rate)
    return encode_with_av(float_to_pcm16(samples), rate, container, codec)


def words(text: str) -> set[str]:
    return {w.strip(".,?!'\"").lower() for w in text.split()}


FIXTURES = Path(__file__).parent
