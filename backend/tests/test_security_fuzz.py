"""Fuzzing (issue 10): the whole HTTP API from its OpenAPI schema (schemathesis), and the voice WebSocket.

One real server on loopback with the real models, its own so that its rate limits and state touch no other test.
Costly work is kept small by the server's own caps (a reply of at most a few tokens, short texts), not by
leaving operations out. Zero server errors (5xx) allowed: LiveKit is configured (with a made-up server), so
its routes answer rather than report 503. Bounded in time: a fixed number of examples per operation, derandomized
so that a run is repeatable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random

import httpx
import pytest
import schemathesis
import websockets
from helpers import start_server, stop_server
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from app.config.settings import Settings
from app.main import create_app

MAX_EXAMPLES = 12
WS_MAX_SIZE = 16 * 1024 * 1024  # what the test servers accept per WebSocket message (helpers.start_server)


FUZZ_SETTINGS = dict(
    _env_file=None, app_env="test", local_tts_variation=0.0,
    rate_limit_enabled=False,
    max_tokens_cap=16, llm_default_max_tokens=8, voice_max_reply_tokens=8,
    max_text_chars=80, max_prompt_chars=2000, max_upload_bytes=256 * 1024, max_audio_seconds=10,
    livekit_url="ws://127.0.0.1:9", livekit_api_key="fuzzkey", livekit_api_secret="f" * 40,
)


@pytest.fixture(scope="module")
def fuzz_server():
    running = start_server(Settings(**FUZZ_SETTINGS))
    yield running
    stop_server(running)


# The schema of an app with the same settings as the server (building it loads no model); requests go to the
# server over HTTP. (schemathesis' lazy `from_fixture` loader does not work with pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Settings(**FUZZ_SETTINGS)).openapi())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=MAX_EXAMPLES, deterministic=True, database="none")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_http_api_has_no_server_errors(case, fuzz_server):
    response = case.call(base_url=fuzz_server.url, timeout=60)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
        f"body: {str(case.body)[:300]} query: {case.query}")


# --- the voice WebSocket ------------------------------------------------------------------------------------------

CLEAN_CLOSE = {1000, 1001, 1003, 1007, 1008, 1009}
PROBE = json.dumps({"type": "fuzz-probe"})  # an unknown type: the contract answers it with an error event


def malformed_text_frames() -> list[str]:
    rng = random.Random(10)
    frames = ["", "not json", "{", "}", "[]", "42", "null", "true", '"a string"', "[1, 2, 3]", '{"type": 5}',
              '{"type": null}', '{"no": "type"}', '{"type": ""}', '{"type": "CONFIG"}', "\u0000\u0001",
              '{"type": "config", "input_sample_rate": 12345}', '{"type": "config", "input_sample_rate": "16000"}',
              '{"type": "config", "input_sample_rate": -1}', '{"type": "config", "vad": "yes"}',
              json.dumps({"type": "config", "instructions": "x" * 5000}), '{"type": "config", "instructions": 7}',
              '{"type": "text"}', '{"type": "text", "text": ""}', '{"type": "text", "text": 123}',
              '{"type": "text", "text": ["a"]}', json.dumps({"type": "text", "text": "word " * 2000}),
              '{"type": "audio"}', '{"type": "audio", "data": "!!!not base64"}', '{"type": "audio", "data": 5}',
              json.dumps({"type": "audio", "data": base64.b64encode(rng.randbytes(3000)).decode()}),
              json.dumps({"type": "audio", "data": base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode()}),
              '{"type": "end_turn"}', "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
              "\ufeff{}", json.dumps({"type": "text", "text": "y" * 1024 * 1024})]
    for _ in range(25):  # random printable and not-so-printable text
        frames.append("".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFF)]))
                              for _ in range(rng.randint(1, 200))))
    for _ in range(15):  # random JSON objects with a random type
        frames.append(json.dumps({"type": rng.choice(["", "x", "configure", "audio ", "texts", "Interrupt"]),
                                  rng.choice(["data", "text", "vad"]): rng.choice([None, 1, "x", [], {}])}))
    return frames


async def next_error(ws, timeout: float = 30) -> dict | None:
    """The next error event, skipping other events and audio; None when the server closed the socket cleanly."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                message = await ws.recv()
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 1006
                assert code in CLEAN_CLOSE, f"closed with {code} ({closed.rcvd.reason if closed.rcvd else ''})"
                return None
            if isinstance(message, str):
                event = json.loads(message)  # every text frame from the server is JSON
                if event.get("type") == "error":
                    assert event.get("code") and event.get("message"), event
                    return event


async def open_session(server) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{server.ws_url}/v1/conversation/ws", max_size=None)
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def bystander_turns(server, stop: asyncio.Event) -> int:
    """Another user, talking by text the whole time: every turn must get its full reply."""
    served = 0
    async with websockets.connect(f"{server.ws_url}/v1/conversation/ws", max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        while not stop.is_set() or served == 0:
            await ws.send(json.dumps({"type": "text", "text": "Say hello."}))
            async with asyncio.timeout(60):
                while True:
                    message = await ws.recv()
                    if isinstance(message, str):
                        event = json.loads(message)
                        assert event["type"] != "error", event
                        if event["type"] == "response_end":
                            break
            served += 1
    return served


async def test_websocket_fuzz_gets_errors_or_clean_closes_while_others_are_served(fuzz_server):
    stop = asyncio.Event()
    bystander = asyncio.create_task(bystander_turns(fuzz_server, stop))
    try:
        # 1. binary frames before any config: random, odd-sized, empty; the session must go on
        ws = await open_session(fuzz_server)
        rng = random.Random(7)
        for size in (0, 1, 3, 7, 101, 999):
            await ws.send(rng.randbytes(size))
        await ws.send(PROBE)
        assert await next_error(ws) is not None, "the session died on binary frames before config"

        # 2. malformed text frames: each gets an error event, and the session stays open
        closes = 0
        for frame in malformed_text_frames():
            await ws.send(frame)
            try:
                event = await next_error(ws)
            except (TimeoutError, AssertionError) as exc:
                raise AssertionError(f"frame {frame[:80]!r}: no error event and no clean close ({exc!r})") from exc
            if event is None:
                closes += 1
                ws = await open_session(fuzz_server)
        await ws.send(PROBE)
        assert await next_error(ws) is not None
        assert closes == 0, f"{closes} sessions closed on malformed frames; the contract keeps them open"

        # 3. oversized frames, text and binary: a clean close (1009), never a crash
        for oversized in ("x" * (WS_MAX_SIZE + 1), b"\0" * (WS_MAX_SIZE + 1)):
            ws = await open_session(fuzz_server)
            await ws.send(oversized)
            async with asyncio.timeout(30):
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # 4. closing abruptly in the middle of a turn, many times
        for _ in range(5):
            ws = await open_session(fuzz_server)
            await ws.send(json.dumps({"type": "text", "text": "Count to three."}))
            ws.transport.abort() if hasattr(ws, "transport") else await ws.close()
    finally:
        stop.set()
        served = await bystander
    assert served >= 1
    # the server still serves everyone: a new session, a health check
    ws = await open_session(fuzz_server)
    await ws.close()
    assert httpx.get(f"{fuzz_server.url}/health/ready").status_code == 200


async def test_websocket_text_with_a_lone_surrogate_gets_an_error(fuzz_server):
    ws = await open_session(fuzz_server)
    try:
        await ws.send('{"type": "text", "text": "\\ud800"}')
        assert await next_error(ws, timeout=10) is not None
    finally:
        await ws.close()
