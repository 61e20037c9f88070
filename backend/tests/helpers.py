"""Helpers shared by the backend tests: real uvicorn servers on loopback and small utilities.

A module of its own because each test folder has a conftest.py and both share that module name.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import uvicorn

from app.audio.codec import decode_audio, encode_with_av, float_to_pcm16
from app.config.settings import Settings
from app.main import create_app

STRICT_KEY = "test-key-0123456789"
# The question the tests speak. Whisper (base and tiny.en) heard these words in 96 of 96 tries: varied voices,
# padding, resampling. "What is the capital of France?" came out as "... of friends" about 1 time in 10.
QUESTION = "How many legs does a spider have?"
QUESTION_WORDS = {"spider", "legs"}
# The embedded voice samples noise; the tests speak with none, so a spoken question sounds the same every run.
# Their microphones hear no echo of the agent, so nothing is checked for it (voice_aec_warmup_s: the tests of
# that set it); replies are greedy (the same words every run).
TEST_VOICE = {"local_tts_variation": 0.0, "voice_aec_warmup_s": 0.0, "voice_temperature": 0.0}


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
        # What outlives the server on its loop (sse-starlette's shutdown watcher, which looks for the
        # signal handlers of a server in the main thread) is cancelled, not left pending.
        loop.run_until_complete(_cancel_leftovers())

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


async def _cancel_leftovers() -> None:
    leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)


def stop_server(running: RunningServer) -> None:
    running.server.should_exit = True
    running.thread.join(timeout=15)


def encode_as(wav: bytes, container: str, codec: str, rate: int = 48000) -> bytes:
    """Re-encode a WAV into another container/codec (for the format tests)."""
    samples = decode_audio(wav, target_rate=rate)
    return encode_with_av(float_to_pcm16(samples), rate, container, codec)


def words(text: str) -> set[str]:
    return {w.strip(".,?!'\"").lower() for w in text.split()}


async def until(condition: Callable[[], object], timeout: float, what: str | Callable[[], str]):
    """The one wait of the tests: polls ``condition`` (a function, or one that returns an awaitable) until it
    gives something true, and returns that; fails after ``timeout`` seconds, saying ``what`` (or what
    ``what()`` says then) was waited for. Tests wait for an event with it, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.02)
