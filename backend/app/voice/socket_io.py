"""What every socket transport of the voice engine shares: the microphone a socket feeds, the text output
that hands the reply's words to the transport, and the checks and waits they all make.

Used by ``WS /v1/conversation/ws`` (``app.voice.websocket``) and ``WS /v1/realtime`` (``app.voice.realtime``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.agents.plugins import OpenAudioTTS, SpeculativeSTT, WhisperSTT
from app.agents.voice_agent import PieceByPieceTTS
from app.metrics import VOICE_SESSIONS

log = logging.getLogger("app.voice")

# Microphone audio the session has not read yet, in frames; past it (a client sending far faster than
# real time) frames are dropped rather than held without bound.
MAX_QUEUED_FRAMES = 3000
# How long a new turn waits for the reply it cuts off to be filed in the history.
INTERRUPT_WAIT_S = 5.0


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


class SocketMicrophone(io.AudioInput):
    """Audio from the client, as audio frames for the session."""

    def __init__(self, label: str = "websocket-microphone") -> None:
        super().__init__(label=label)
        self._frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._dropping = False

    def push(self, pcm: bytes, sample_rate: int) -> None:
        frame = rtc.AudioFrame(pcm, sample_rate, 1, len(pcm) // 2)
        try:
            self._frames.put_nowait(frame)
            self._dropping = False
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning("%s: the client sends audio faster than the session hears it; dropping frames",
                            self.label)
            self._dropping = True

    def close(self) -> None:
        while True:
            try:
                self._frames.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._frames.get_nowait()

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)  # stays ended for whoever reads next
            raise StopAsyncIteration
        return frame


class ReplyTextSink(Protocol):
    def reply_text(self, text: str) -> None: ...


class SocketTranscript(io.TextOutput):
    """The reply's words, as the client hears them (behind the framework's ``TranscriptSynchronizer``)."""

    def __init__(self, conversation: ReplyTextSink, label: str = "websocket-transcript") -> None:
        super().__init__(label=label, next_in_chain=None)
        self._conversation = conversation

    async def capture_text(self, text: str) -> None:
        self._conversation.reply_text(text)

    def flush(self) -> None:
        pass


def session_stt(session: AgentSession) -> WhisperSTT:
    """The session's Whisper, under the speculative wrapper (for its options)."""
    model = session.stt
    return model.wrapped_stt if isinstance(model, SpeculativeSTT) else model


def session_tts(session: AgentSession) -> OpenAudioTTS:
    """The session's TTS, under the piece-by-piece adapter (for its options)."""
    model = session.tts
    return model.piece_tts if isinstance(model, PieceByPieceTTS) else model


async def interrupt_session(session: AgentSession) -> None:
    """Stop the reply now and wait (a bounded while) until it is filed in the history."""
    try:
        await asyncio.wait_for(session.interrupt(force=True), INTERRUPT_WAIT_S)
    except (RuntimeError, asyncio.TimeoutError):  # closing, or slow to settle: the next turn goes on anyway
        pass


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
