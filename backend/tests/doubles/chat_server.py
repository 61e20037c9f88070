"""MisbehavingChatServer: a TEST DOUBLE of an OpenAI-compatible chat server (``/v1/chat/completions``).

Real servers (``tests/model_servers.py``: llama.cpp's, another GemmaVoice API) cover the normal paths and
crashes (kill, restart). What a real server can't be made to do on cue is misbehave: answer 500, send a
broken event stream, stall before its first token, or stop halfway through a reply. This double does,
as chosen by ``mode``:

- ``"ok"``: streams the last user message back, one word per chunk, then ``finish_reason: "stop"`` and
  ``data: [DONE]`` (non-streaming: the same text as one ``chat.completion``);
- ``"error_status"``: 500 with an OpenAI-style error body;
- ``"malformed"``: 200 ``text/event-stream`` whose first event is ``data: {not json``;
- ``"slow"``: requests whose last user message has the word "slow" wait ``slow_seconds`` before the first
  chunk (headers go at once, as a server that queued the request); others answer at once, as ``"ok"``;
- ``"hang_after_first"``: one chunk, then nothing until the client goes away.

It records each request body in ``requests`` and counts in ``disconnects`` the clients that went away
before the end of their reply (streaming, or waiting on a slow or hung non-streaming one).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MODEL_ID = "double-chat"
MODES = ("ok", "error_status", "malformed", "slow", "hang_after_first")
ERROR_BODY = {"error": {"message": "model crashed", "type": "server_error"}}


def last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content") or ""
            if isinstance(content, list):  # content parts
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


class _EventStream(Response):
    """An SSE response that notices the client going away even while the body waits (slow, hang).

    Explicit rather than StreamingResponse, whose disconnect handling depends on the ASGI spec version.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_disconnect):
        super().__init__(status_code=200, headers={"Cache-Control": "no-cache"})
        # Response sets content-length: 0 for its empty body; this body is streamed (chunked) instead.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.events, self.on_disconnect = events, on_disconnect

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def body() -> None:
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        sending, watching = asyncio.ensure_future(body()), asyncio.ensure_future(gone())
        try:
            done, _ = await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
            if sending in done:
                sending.result()
            else:
                self.on_disconnect()
        finally:
            for task in (sending, watching):
                task.cancel()
            await asyncio.gather(sending, watching, return_exceptions=True)


class MisbehavingChatServer:
    def __init__(self, mode: str = "ok", *, slow_seconds: float = 10.0):
        self.mode = mode
        self.slow_seconds = slow_seconds
        self.requests: list[dict] = []
        self.disconnects = 0
        self.app = self._build()
        self.url = ""  # the OpenAI base URL, http://127.0.0.1:PORT/v1, once started
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    def reset(self, mode: str = "ok") -> None:
        self.mode, self.requests, self.disconnects = mode, [], 0

    def wait_for_disconnects(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.disconnects < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.disconnects} disconnects after {timeout} s, expected {count}")
            time.sleep(0.05)

    # --- the app -----------------------------------------------------------------------------
    def _chunk(self, cid: str, model: str, delta: dict, finish_reason: str | None = None) -> bytes:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _disconnected(self) -> None:
        self.disconnects += 1

    @staticmethod
    async def _until_gone(request: Request, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as the client goes away (a plain handler is not cancelled then)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            mode = self.mode
            if mode not in MODES:
                return JSONResponse({"error": {"message": f"unknown test mode {mode!r}", "type": "test_error"}}, 500)
            if mode == "error_status":
                return JSONResponse(ERROR_BODY, status_code=500)
            text = last_user_text(body)
            words = text.split() or ["(empty)"]
            model = body.get("model") or MODEL_ID
            self._ids += 1
            cid = f"chatcmpl-double-{self._ids}"
            delay = self.slow_seconds if mode == "slow" and "slow" in {w.strip(".,?!'\"").lower() for w in words} \
                else 0.0

            if not body.get("stream"):
                if mode == "malformed":
                    return Response("{not json", media_type="application/json")
                if await self._until_gone(request, float("inf") if mode == "hang_after_first" else delay):
                    self._disconnected()
                    return Response(status_code=499)  # nobody reads it
                return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(words),
                                  "total_tokens": len(text.split()) + len(words)}}

            async def events() -> AsyncIterator[bytes]:
                if mode == "malformed":
                    yield b"data: {not json\n\n"
                    return
                await asyncio.sleep(delay)
                for i, word in enumerate(words):
                    delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
                    yield self._chunk(cid, model, delta)
                    if mode == "hang_after_first":
                        await asyncio.Event().wait()
                yield self._chunk(cid, model, {}, "stop")
                yield b"data: [DONE]\n\n"

            return _EventStream(events(), self._disconnected)

        return app

    # --- life ---------------------------------------------------------------------------------
    def start(self, port: int | None = None) -> "MisbehavingChatServer":
        if port is None:
            from helpers import free_port

            port = free_port()
        # A hanging reply must not hold the shutdown up.
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=f"chat-double-{port}")
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the chat server double did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
