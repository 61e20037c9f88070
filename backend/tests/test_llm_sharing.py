"""The one model is time-sliced: a long reply does not hold back the next request's first words."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

LONG = {"prompt": "Write a very long story about a dragon who learns to cook.", "max_tokens": 200,
        "temperature": 0.0}


async def stream(c: httpx.AsyncClient, body: dict, on_token=None) -> tuple[dict, float]:
    """Streams /v1/generate_stream; returns the done event and when its first token arrived."""
    first = None
    async with c.stream("POST", "/v1/generate_stream", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "token" and first is None:
                first = time.monotonic()
                if on_token:
                    on_token()
            if event["type"] in ("done", "error"):
                return {**event, "ended": time.monotonic()}, first
    raise AssertionError("the stream ended without a done event")


async def test_a_long_reply_shares_the_model(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
        alone = (await c.post("/v1/generate", json=LONG)).json()
        long_started = asyncio.Event()

        async def short_request():
            await long_started.wait()
            return await stream(c, {"prompt": "Say hello.", "max_tokens": 8})

        (long_reply, _), (short_reply, short_first) = await asyncio.gather(
            stream(c, LONG, on_token=long_started.set), short_request())

    assert long_reply["type"] == short_reply["type"] == "done", (long_reply, short_reply)
    assert long_reply["usage"]["completion_tokens"] > 3 * server.services.settings.llm_slice_tokens
    # The short request spoke while the long one was still being written, and finished first.
    assert short_first < long_reply["ended"] and short_reply["ended"] < long_reply["ended"]
    # The long reply resumed from its saved state: greedy decoding wrote the same words as alone.
    assert long_reply["text"] == alone["text"]
