"""The streaming routes' one way to start a stream, and their Server-Sent Events (sse-starlette)."""

from __future__ import annotations

from typing import Any, AsyncIterator, TypeVar

from sse_starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

T = TypeVar("T")
_NOTHING: Any = object()


async def started(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Pull the first item of ``stream`` before the response starts.

    A refusal or failure that comes before any output (the queue is full, a model is not loaded, the
    TTS engine failed) then raises here and becomes a plain JSON error with its status code, not a
    200 stream cut short. Returns an iterator over every item, first included, that closes ``stream``
    when it ends or is closed itself (a client that went away stops the work behind it).
    """
    try:
        first = await anext(stream, _NOTHING)
    except BaseException:
        await stream.aclose()
        raise

    async def every_item() -> AsyncIterator[T]:
        try:
            if first is not _NOTHING:
                yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return every_item()


def sse_event(data: Any) -> ServerSentEvent:
    """One event whose data is ``data`` as JSON (a string is sent as it is, like OpenAI's ``[DONE]``)."""
    return ServerSentEvent(data) if isinstance(data, str) else JSONServerSentEvent(data)


def sse_response(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """A ``text/event-stream`` response; sse-starlette sends keep-alive comments and stops ``events``
    when the client disconnects."""
    return EventSourceResponse(events)
