"""What every socket transport of the voice engine shares: the socket's one writer, its frames, the checks
they all make and the count of open voice sessions.

Used by ``WS /v1/conversation/ws`` (``app.voice.websocket``) and ``WS /v1/realtime`` (``app.voice.realtime``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.metrics import VOICE_SESSIONS


class FrameError(ValueError):
    """A client frame the transport refuses; the session goes on."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def require_unicode(text: str, field: str) -> None:
    """JSON may carry lone surrogates ("\\ud800"), which are no text: the model could not read them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("bad_text", f"\"{field}\" holds characters that are not valid Unicode") from None


class SocketOutbox:
    """The one writer of a voice socket: events and audio leave in the order they were made. A client
    that went away ends it quietly; ``close()`` stops it and closes the socket if still open."""

    def __init__(self, ws: WebSocket, *, name: str) -> None:
        self.ws = ws
        self.closed = False
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._write(), name=name)

    def put(self, message: str | bytes) -> None:
        if not self.closed:
            self._queue.put_nowait(message)

    async def _write(self) -> None:
        try:
            while (message := await self._queue.get()) is not None:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_text(message)
        except (WebSocketDisconnect, RuntimeError):
            self.closed = True

    async def close(self) -> None:
        self.closed = True
        self._queue.put_nowait(None)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close()
            except (RuntimeError, WebSocketDisconnect):
                pass


async def client_frames(ws: WebSocket, closed: Callable[[], bool]) -> AsyncIterator[tuple[str | None, bytes | None]]:
    """The client's frames as (text, bytes), one of them set, until it disconnects or ``closed()``."""
    try:
        while not closed():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            yield message.get("text"), message.get("bytes")
    except WebSocketDisconnect:
        return


def voice_sessions_full(app_state) -> bool:
    """Whether the server holds ``MAX_VOICE_SESSIONS`` voice sessions already, whatever their transports."""
    return len(app_state.voice_conversations) >= app_state.services.settings.max_voice_sessions


async def run_counted(app_state, conversation) -> None:
    """Run a conversation (anything with ``id`` and ``run()``) while it counts as an open voice session."""
    app_state.voice_conversations[conversation.id] = conversation
    VOICE_SESSIONS.inc()
    try:
        await conversation.run()
    finally:
        del app_state.voice_conversations[conversation.id]
        VOICE_SESSIONS.dec()
