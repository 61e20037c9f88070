"""One voice session over one socket, whatever the protocol: the lifecycle every socket transport shares.

``VoiceSocketSession`` wires a ``VoiceEngine`` (``app.engine``: ``GemmaVoiceAgent`` in an ``AgentSession``) to
the socket (the client's audio in, the reply's audio and words out on the client's playback clock), runs it
until the client goes, closes everything it started, dispatches the client's text frames to the
transport's handlers, turns refused frames and failed turns into the transport's error events, and offers
the one-shot transcription and base64 audio decoding that turns closed by the client need.

A transport (``app.voice.websocket``, ``app.voice.realtime``) keeps only its protocol: how frames parse,
which handler each gets, how events and errors are written, and what the session's events mean to its client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

from app.engine import CloseEvent, ErrorEvent, ListenerPlayout, VoiceEngine
from app.services.container import Services
from app.voice.socket_io import FrameError, SocketOutbox, client_frames

log = logging.getLogger("app.voice")

Handler = Callable[[Any], Awaitable[None]]


class VoiceSocketSession:
    """The engine behind one socket. Subclasses set ``kind`` and implement the protocol hooks below."""

    kind = "voice"  # names the microphone, the transcript output and the writer task

    def __init__(self, ws: WebSocket, services: Services, *, session_id: str, speaker: ListenerPlayout,
                 own_vad: bool = False) -> None:
        self.ws = ws
        self.services = services
        self.settings = services.settings
        self.id = session_id
        self._closed = False
        self._tasks: set[asyncio.Task] = set()
        self.speaker = speaker
        self.engine = VoiceEngine(services, name=self.kind, speaker=speaker, on_text=self.reply_text,
                                  own_vad=own_vad)
        for event, handler in {**self.session_handlers(), "error": self._on_error, "close": self._on_close}.items():
            self.engine.on(event, handler)

    # --- the protocol: what a transport implements --------------------------------------------------
    def session_handlers(self) -> dict[str, Callable[[Any], None]]:
        """The session's events this transport listens to, by name."""
        return {}

    async def started(self) -> None:
        """The session runs: greet the client."""

    def parse(self, raw: str) -> tuple[Any, Handler]:
        """A text frame -> (the frame, its handler); raises one of ``refusals`` when the frame is refused."""
        raise NotImplementedError

    refusals: tuple[type[Exception], ...] = (FrameError,)

    def refuse(self, exc: Exception, raw: str | None = None, *, server: bool = False) -> None:
        """Tell the client a frame (``raw``) was refused or a turn failed (``server``); the session goes on."""
        raise NotImplementedError

    def on_binary(self, data: bytes) -> None:
        """A binary frame."""

    def reply_text(self, text: str) -> None:
        """The reply's words, as the client hears them."""

    def turn_failed(self, code: str, cause: BaseException) -> None:
        self.refuse(FrameError(code, f"the turn failed: {cause}"), server=True)

    # --- the socket ---------------------------------------------------------------------------------
    def send_json(self, payload: dict, *, ascii_only: bool = False) -> None:
        if not self._closed:
            self.outbox.put(json.dumps(payload, ensure_ascii=ascii_only))

    def send_bytes(self, data: bytes) -> None:
        if not self._closed:
            self.outbox.put(data)

    async def run(self) -> None:
        self.outbox = SocketOutbox(self.ws, name=f"{self.kind}-writer-{self.id}")
        try:
            await self.engine.start()
            await self.started()
            async for text, data in client_frames(self.ws, lambda: self._closed):
                if text is not None:
                    await self._on_text(text)
                elif data is not None:
                    self.on_binary(data)
        finally:
            await self._close()

    async def _close(self) -> None:
        """Stop everything this conversation started: no generation or task outlives it."""
        self._closed = True
        await self.engine.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.outbox.close()

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_text(self, raw: str) -> None:
        try:
            frame, handler = self.parse(raw)
            await handler(frame)
        except self.refusals as exc:
            self.refuse(exc, raw)
        except Exception as exc:  # noqa: BLE001 - a failed frame must not end the session
            log.exception("%s frame failed", self.kind)
            self.refuse(FrameError("server_error", f"the event failed: {exc}"), raw, server=True)

    # --- what turns closed by the client need --------------------------------------------------------
    def decode_base64(self, data: Any) -> bytes:
        """Base64 audio of at most ``MAX_UPLOAD_BYTES``; ``FrameError`` otherwise."""
        if not isinstance(data, str) or not data:
            raise FrameError("bad_frame", "audio must be base64 text")
        if len(data) > self.settings.max_upload_bytes * 4 // 3 + 4:
            raise FrameError("audio_too_large", "the audio is too large")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise FrameError("bad_frame", "audio is not valid base64") from None

    async def transcribe(self, pcm: bytes, rate: int, language: str | None) -> tuple[str, str | None]:
        """The session's own STT over one whole utterance: (text, language)."""
        return await self.engine.transcribe(pcm, rate, language)

    # --- the session's failures -------------------------------------------------------------------------
    def _on_error(self, ev: ErrorEvent) -> None:
        if getattr(ev.error, "recoverable", True):
            return  # the framework retries it
        cause = getattr(ev.error, "error", ev.error)
        body = getattr(cause, "body", None)
        self.turn_failed(body.get("code", "turn_failed") if isinstance(body, dict) else "turn_failed", cause)

    def _on_close(self, ev: CloseEvent) -> None:
        if not self._closed and ev.error is not None:
            self.refuse(FrameError("session_failed", f"the voice session failed: {ev.error}"), server=True)
            asyncio.get_running_loop().create_task(self.ws.close(code=1011))
